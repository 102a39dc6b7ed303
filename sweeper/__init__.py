"""sweeper: Ray-based sweeps over the clipping knobs of RLVR (GRPO-style) policy losses."""

__version__ = "0.1.0"
