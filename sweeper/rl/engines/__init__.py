"""Rollout engines: sample responses from the current policy (``job.engine``).

- ``hf`` (:class:`HFEngine`): our batched KV-cache sampler over the trainer's own module.
- ``vllm`` (:class:`VLLMEngine`): vLLM's offline ``LLM`` beside the trainer, weights pushed in
  after every step (vLLM itself is imported only when one is built).

The contract (:class:`RolloutEngine`, :class:`RolloutBatch`) and the registry
(:func:`register_engine`, :func:`make_engine`) live in :mod:`sweeper.rl.engines.base`.
"""

from __future__ import annotations

from typing import get_args

from sweeper.config.job import RLVRJob
from sweeper.rl.engines.base import (
    ENGINES,
    RolloutBatch,
    RolloutEngine,
    Weights,
    make_engine,
    register_engine,
    response_logits,
)
from sweeper.rl.engines.hf import HFEngine
from sweeper.rl.engines.vllm import VLLMEngine

__all__ = [
    "ENGINES",
    "HFEngine",
    "RolloutBatch",
    "RolloutEngine",
    "VLLMEngine",
    "Weights",
    "make_engine",
    "register_engine",
    "response_logits",
]


def _check_registry() -> None:
    """Every ``job.engine`` value has exactly one implementation, and vice versa."""
    kinds = set(get_args(RLVRJob.model_fields["engine"].annotation))
    if set(ENGINES) != kinds:
        raise RuntimeError(f"engine registry {sorted(ENGINES)} != job.engine {sorted(kinds)}")


_check_registry()
