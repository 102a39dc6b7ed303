"""Rollout engines: sample responses from the current policy.

The job talks to an engine through :class:`RolloutEngine` only, so the sampling backend can be
swapped without touching the training loop:

- ``hf`` (:class:`HFEngine`): our own batched sampling loop over any ``transformers`` causal LM
  with a KV cache (``past_key_values``), left-padded prompts, per-row EOS stopping and a seeded
  ``torch.Generator``. It shares the policy's module, so it always samples from the latest
  weights and ``sync_weights`` is a no-op. Works on CPU and CUDA.
- ``vllm``: not shipped yet. The seam is :func:`make_engine` + :class:`RolloutEngine`: a vLLM
  engine would hold its own copy of the weights, load them from the policy in ``sync_weights``
  (called by the job after every optimizer step that precedes a rollout), and return the same
  :class:`RolloutBatch` layout. Asking for it raises ``InputError``.

Layout of a batch: prompt ``i``'s ``n`` samples are rows ``i*n .. i*n+n-1`` (contiguous groups,
as :func:`sweeper.rl.advantages.group_advantages` expects).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from sweeper.errors import InputError

__all__ = ["HFEngine", "RolloutBatch", "RolloutEngine", "make_engine", "response_logits"]


@dataclass
class RolloutBatch:
    """Prompts and sampled responses, padded into rectangles.

    Attributes:
        prompt_ids: [B, P] prompt token ids, left-padded with the pad id.
        prompt_mask: [B, P] 1 on real prompt tokens.
        response_ids: [B, T] sampled ids, right-padded after EOS (T <= max_new_tokens: the
            longest response of the batch).
        response_mask: [B, T] 1 on generated tokens, the EOS included.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor

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
        )

    def response_lengths(self) -> torch.Tensor:
        """[B] number of generated tokens per row (EOS included)."""
        return self.response_mask.sum(dim=1)


class RolloutEngine(Protocol):
    """Samples ``n`` responses per prompt from the current policy."""

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        n: int,
        temperature: float,
        max_new_tokens: int,
        generator: torch.Generator | None = None,
    ) -> RolloutBatch:
        """Sample ``n`` responses for each prompt (token ids, BOS included when the tokenizer
        uses one). ``temperature == 0`` means greedy. Rows are grouped per prompt."""
        ...

    def sync_weights(self) -> None:
        """Make the engine sample from the policy's current weights (no-op when shared)."""
        ...


def _left_pad(
    prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p):
            ids[i, width - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
            mask[i, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """[B, L] position ids that start at 0 on each row's first real token (left padding)."""
    return (mask.cumsum(dim=1) - 1).clamp(min=0)


class HFEngine:
    """Batched sampling with a KV cache over a ``transformers`` causal LM.

    Every prompt is repeated ``n`` times and all rows decode together: one prefill forward,
    then one single-token forward per new token with ``past_key_values``. A row that emitted
    EOS keeps feeding pad tokens (masked out of the result) until all rows are done or
    ``max_new_tokens`` is reached. Sampling uses ``generator`` only, so a seeded generator
    gives the same tokens on the same machine.
    """

    def __init__(self, model: torch.nn.Module, eos_id: int, pad_id: int) -> None:
        self.model = model
        self.eos_id = eos_id
        self.pad_id = pad_id

    def sync_weights(self) -> None:
        """The engine shares the policy's module: nothing to copy."""

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        n: int,
        temperature: float,
        max_new_tokens: int,
        generator: torch.Generator | None = None,
    ) -> RolloutBatch:
        if not prompts:
            raise ValueError("generate() needs at least one prompt")
        device = next(self.model.parameters()).device
        prompt_ids, prompt_mask = _left_pad(prompts, self.pad_id, device)
        # [B, P] with B = len(prompts) * n, each prompt's samples contiguous.
        prompt_ids = prompt_ids.repeat_interleave(n, dim=0)
        prompt_mask = prompt_mask.repeat_interleave(n, dim=0)
        batch = prompt_ids.shape[0]

        attn = prompt_mask
        positions = _positions(attn)
        out = self.model(
            input_ids=prompt_ids,
            attention_mask=attn,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        cache = out.past_key_values
        next_pos = positions[:, -1:] + 1  # [B, 1]

        tokens = torch.full((batch, max_new_tokens), self.pad_id, dtype=torch.long, device=device)
        alive_mask = torch.zeros((batch, max_new_tokens), dtype=torch.long, device=device)
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        length = 0
        for t in range(max_new_tokens):
            logits = out.logits[:, -1, :].float()  # [B, V]
            if temperature == 0.0:
                sampled = logits.argmax(dim=-1)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                sampled = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            sampled = torch.where(done, torch.full_like(sampled, self.pad_id), sampled)
            tokens[:, t] = sampled
            alive_mask[:, t] = (~done).long()
            done = done | (sampled == self.eos_id)
            length = t + 1
            if bool(done.all()) or t == max_new_tokens - 1:
                break
            attn = torch.cat([attn, torch.ones((batch, 1), dtype=attn.dtype, device=device)], 1)
            out = self.model(
                input_ids=sampled[:, None],
                attention_mask=attn,
                position_ids=next_pos,
                past_key_values=cache,
                use_cache=True,
            )
            cache = out.past_key_values
            next_pos = next_pos + 1
        return RolloutBatch(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            response_ids=tokens[:, :length].contiguous(),
            response_mask=alive_mask[:, :length].contiguous(),
        )


def response_logits(model: torch.nn.Module, batch: RolloutBatch) -> torch.Tensor:
    """[B, T, V] logits that predict each response token (one full forward, no cache).

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
        position_ids=_positions(mask),
        use_cache=False,
        logits_to_keep=resp_len + 1,
    )
    return out.logits[:, :resp_len, :]  # drop the last position (it predicts past the end)


def make_engine(kind: str, model: torch.nn.Module, eos_id: int, pad_id: int) -> RolloutEngine:
    """The rollout engine ``kind`` ('hf' | 'vllm') over ``model``.

    Raises:
        InputError: ``vllm`` (not installed, or not wired in this version) or an unknown kind.
    """
    if kind == "hf":
        return HFEngine(model, eos_id=eos_id, pad_id=pad_id)
    if kind == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError as err:
            raise InputError(
                "engine: 'vllm' is not installed on this worker (pip install vllm), "
                "or use engine: hf"
            ) from err
        raise InputError("engine: the vllm engine is not wired in this version; use engine: hf")
    raise InputError(f"engine: unknown engine {kind!r}; valid: hf, vllm")
