"""The rollout-engine contract: the batch layout, the engine protocol and the registry.

The job talks to an engine through :class:`RolloutEngine` only, so the sampling backend can be
swapped without touching the training loop. Each implementation registers itself under the name
that ``job.engine`` uses (``@register_engine("hf")``); :func:`make_engine` looks it up, and a miss
lists the valid names. One contract test suite (``tests/integration/test_engines.py``) runs over
every registered engine.

Layout of a batch: prompt ``i``'s ``n`` samples are rows ``i*n .. i*n+n-1`` (contiguous groups,
as :func:`sweeper.rl.advantages.group_advantages` expects).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from sweeper.errors import InputError

__all__ = [
    "ENGINES",
    "RolloutBatch",
    "RolloutEngine",
    "Weights",
    "left_pad",
    "make_engine",
    "positions",
    "register_engine",
    "response_logits",
]

Weights = Iterable[tuple[str, torch.Tensor]]
"""Weights to push into an engine: (name, tensor) pairs in the HF model's own parameter naming,
what ``model.state_dict().items()`` gives for a plain ``transformers`` causal LM (tied weights
may appear under both names)."""


@dataclass
class RolloutBatch:
    """Prompts and sampled responses, padded into rectangles.

    Attributes:
        prompt_ids: [B, P] prompt token ids, left-padded with the pad id.
        prompt_mask: [B, P] 1 on real prompt tokens.
        response_ids: [B, T] sampled ids, right-padded after EOS (T <= max_new_tokens: the
            longest response of the batch).
        response_mask: [B, T] 1 on generated tokens, the EOS included.
        engine_logp: [B, T] float32, the engine's own log-probability of each sampled token under
            its temperature-scaled distribution (0 on padding); None for an engine that samples
            from the trainer's module itself (``hf``), where it would equal the trainer's.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    engine_logp: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.response_ids.shape[0])

    def rows(self, index: torch.Tensor) -> RolloutBatch:
        """The sub-batch of the rows in ``index`` [b] (for mini-batches)."""
        return RolloutBatch(
            self.prompt_ids[index],
            self.prompt_mask[index],
            self.response_ids[index],
            self.response_mask[index],
            None if self.engine_logp is None else self.engine_logp[index],
        )

    def response_lengths(self) -> torch.Tensor:
        """[B] number of generated tokens per row (EOS included)."""
        return self.response_mask.sum(dim=1)


class RolloutEngine(Protocol):
    """Samples ``n`` responses per prompt from the current policy."""

    holds_weights: bool
    """True when the engine keeps its own copy of the weights (then the job pushes them with
    :meth:`sync_weights`); False when it samples from the trainer's own module."""

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        n: int,
        temperature: float,
        max_new_tokens: int,
        generator: torch.Generator | None = None,
    ) -> RolloutBatch:
        """Sample ``n`` responses for each prompt (token ids, BOS included when the tokenizer
        uses one), each stopping at EOS or after ``max_new_tokens``. ``temperature == 0`` means
        greedy. Rows are grouped per prompt. The same ``generator`` state gives the same
        samples on the same machine."""
        ...

    def sync_weights(self, weights: Weights) -> None:
        """Make the engine sample from ``weights`` (see :data:`Weights`) from now on. Called at
        the start of every job (the base weights) and after every step's updates. An engine
        that shares the trainer's module ignores the argument."""
        ...

    def close(self) -> None:
        """Release what the engine holds (processes, device memory); it is unusable after."""
        ...


EngineFactory = Callable[..., RolloutEngine]
ENGINES: dict[str, EngineFactory] = {}
"""Engine kind -> its factory ``(model, eos_id, pad_id, **options) -> RolloutEngine``."""


def register_engine(kind: str) -> Callable[[EngineFactory], EngineFactory]:
    """Decorator registering a factory (usually the engine class) as engine ``kind``.

    Registering a kind twice is an error (a silent overwrite would hide a bug).
    """

    def decorator(factory: EngineFactory) -> EngineFactory:
        if kind in ENGINES:
            raise ValueError(f"engine {kind!r} is already registered (by {ENGINES[kind]!r})")
        ENGINES[kind] = factory
        return factory

    return decorator


def make_engine(
    kind: str, model: torch.nn.Module, eos_id: int, pad_id: int, **options: Any
) -> RolloutEngine:
    """The rollout engine ``kind`` for ``model`` (a plain ``transformers`` causal LM).

    ``options`` go to the engine's factory (``vllm``: ``options=VLLMConfig``, ``gpu_fraction``).

    Raises:
        InputError: an unknown kind (the message lists the valid ones), or an engine that
            cannot run here (e.g. ``vllm`` not installed).
    """
    try:
        factory = ENGINES[kind]
    except KeyError:
        raise InputError(
            f"engine: unknown engine {kind!r}; valid: {', '.join(sorted(ENGINES))}"
        ) from None
    return factory(model, eos_id, pad_id, **options)


# --------------------------------------------------------------------------- shared helpers


def left_pad(
    prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, P] ids, [N, P] mask) of ``prompts`` left-padded to the longest one."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p):
            ids[i, width - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
            mask[i, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


def positions(mask: torch.Tensor) -> torch.Tensor:
    """[B, L] position ids that start at 0 on each row's first real token (left padding)."""
    return (mask.cumsum(dim=1) - 1).clamp(min=0)


def response_logits(model: torch.nn.Module, batch: RolloutBatch) -> torch.Tensor:
    """[B, T, V] logits of the trainer's ``model`` that predict each response token (one full
    forward, no cache).

    Position ``P - 1 + t`` of the concatenated sequence predicts response token ``t``.
    Gradients flow when called outside ``no_grad``.
    """
    ids = torch.cat([batch.prompt_ids, batch.response_ids], dim=1)  # [B, P+T]
    mask = torch.cat([batch.prompt_mask, batch.response_mask], dim=1)
    resp_len = batch.response_ids.shape[1]
    # Only the last T+1 positions are needed (logits_to_keep saves the LM head on the prompt).
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions(mask),
        use_cache=False,
        logits_to_keep=resp_len + 1,
    )
    return out.logits[:, :resp_len, :]  # drop the last position (it predicts past the end)
