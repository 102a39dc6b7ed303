"""Mixed into vLLM's worker class (vLLM's ``worker_extension_cls``): the weight push.

vLLM imports this module inside its worker by name, so it must stay importable without the
rest of sweeper's torch side.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["WeightPushExtension"]


class WeightPushExtension:
    """Worker methods reached through ``LLM.collective_rpc("sweeper_load_weights", ...)``."""

    # No other attributes: vLLM refuses an extension whose names clash with the worker's.
    # ``self`` is vLLM's worker, which provides ``reload_weights`` and ``model_runner``.

    @torch.no_grad()
    def sweeper_load_weights(self: Any, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load checkpoint-format ``weights`` into the running model in place (vLLM's own
        layerwise reload: renaming, stacking q/k/v and gate/up, re-packing for the backend)."""
        self.reload_weights(weights_iterator=weights, is_checkpoint_format=True)
        _refresh_tied_cpu_lm_head(self.model_runner.get_model())


def _refresh_tied_cpu_lm_head(model: torch.nn.Module) -> None:
    # vLLM's CPU backend packs each linear layer's weight for its GEMM kernel. A reload re-packs
    # every layer it loads, but a head tied to the input embedding loads nothing of its own
    # (the checkpoint's lm_head is skipped), so it would keep the weights packed at start-up:
    # re-pack it from the (reloaded, shared) embedding. No-op on GPU and for untied heads.
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if head is None or embed is None or not hasattr(head, "cpu_linear"):
        return
    if head.weight.data_ptr() != embed.weight.data_ptr():
        return
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    dispatch_cpu_unquantized_gemm(head, remove_weight=False)
