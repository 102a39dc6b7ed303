"""`python -m sweeper` runs the CLI."""

from sweeper.cli import main

main()
