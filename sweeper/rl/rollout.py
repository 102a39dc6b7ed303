"""Moved to :mod:`sweeper.rl.engines`; this alias keeps old imports working."""

from sweeper.rl.engines import HFEngine, RolloutBatch, RolloutEngine, make_engine, response_logits

__all__ = ["HFEngine", "RolloutBatch", "RolloutEngine", "make_engine", "response_logits"]
