"""Errors users cause: one line on stderr, exit code 2."""

from __future__ import annotations


class InputError(Exception):
    """Bad user input (recipe, cluster file, path, address): the CLI prints it on one line and
    exits with code 2."""
