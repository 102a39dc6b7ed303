"""``engine: hf``: our own batched KV-cache sampler over the trainer's ``transformers`` module.

It shares the policy's module, so it always samples from the latest weights (``sync_weights``
is a no-op) and reports no separate engine log-probs. Works on CPU and CUDA.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sweeper.rl.engines.base import RolloutBatch, Weights, left_pad, positions, register_engine

__all__ = ["HFEngine"]


@register_engine("hf")
class HFEngine:
    """Batched sampling with a KV cache over a ``transformers`` causal LM.

    Every prompt is repeated ``n`` times and all rows decode together: one prefill forward,
    then one single-token forward per new token with ``past_key_values``. A row that emitted
    EOS keeps feeding pad tokens (masked out of the result) until all rows are done or
    ``max_new_tokens`` is reached. Sampling uses ``generator`` only, so a seeded generator
    gives the same tokens on the same machine.
    """

    holds_weights = False  # it samples from the trainer's own module

    def __init__(self, model: torch.nn.Module, eos_id: int, pad_id: int) -> None:
        self.model = model
        self.eos_id = eos_id
        self.pad_id = pad_id

    def sync_weights(self, weights: Weights | None = None) -> None:
        """The engine shares the policy's module: nothing to copy."""

    def close(self) -> None:
        """Nothing to release (the module belongs to the trainer)."""

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
        prompt_ids, prompt_mask = left_pad(prompts, self.pad_id, device)
        # [B, P] with B = len(prompts) * n, each prompt's samples contiguous.
        prompt_ids = prompt_ids.repeat_interleave(n, dim=0)
        prompt_mask = prompt_mask.repeat_interleave(n, dim=0)
        batch = prompt_ids.shape[0]

        attn = prompt_mask
        pos = positions(attn)
        out = self.model(
            input_ids=prompt_ids,
            attention_mask=attn,
            position_ids=pos,
            use_cache=True,
            logits_to_keep=1,
        )
        cache = out.past_key_values
        next_pos = pos[:, -1:] + 1  # [B, 1]

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
