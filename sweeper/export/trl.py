"""Export target ``trl``: keyword arguments of TRL's ``GRPOConfig``.

Loss kinds map through :data:`LOSS_MAPPINGS` (ppo_clip and gspo); nsr, gppo, clip_cov and kl_cov
have no TRL counterpart. The policy's LoRA adapter becomes the keyword arguments of
``peft.LoraConfig`` for ``GRPOTrainer(peft_config=...)`` (in the header), gradient checkpointing
and the bfloat16 modes ``GRPOConfig`` arguments.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from sweeper.config.job import RLVRJob
from sweeper.config.recipe import Recipe
from sweeper.errors import InputError
from sweeper.export.base import comment, dump_yaml, python_literal, unsupported

# TRL loss_type by aggregation: "dapo" normalises by the active tokens of the (global) batch,
# "grpo" by each sequence's length then averages, "dr_grpo" by max_completion_length.
TRL_LOSS_TYPE = {
    "token-mean": "dapo",
    "seq-mean-token-mean": "grpo",
    "seq-mean-token-sum-norm": "dr_grpo",
}


def _ppo_clip(loss: Any) -> dict[str, Any]:
    loss_type = TRL_LOSS_TYPE.get(loss.agg)
    if loss_type is None:
        raise InputError(
            f"loss.agg {loss.agg!r} has no TRL loss_type; trl export supports agg: "
            + ", ".join(f"{a} (loss_type {t})" for a, t in TRL_LOSS_TYPE.items())
        )
    out: dict[str, Any] = {
        "epsilon": loss.eps_low,
        "epsilon_high": loss.eps_high,
        "loss_type": loss_type,
    }
    c = loss.dual_clip_c
    if c is not None:
        # TRL's delta caps the ratio for every token; that equals dual clip only when it lies
        # above the upper clip bound (A>0 tokens are capped at 1+eps_high first).
        if not (math.isfinite(loss.eps_high) and c > 1.0 + loss.eps_high):
            raise InputError(
                f"loss.dual_clip_c={c} with eps_high={loss.eps_high}: TRL's delta matches "
                "dual clip only for a finite eps_high and dual_clip_c > 1 + eps_high"
            )
        out["delta"] = c
    return out


def _gspo(loss: Any) -> dict[str, Any]:
    return {
        "epsilon": loss.eps_low,
        "epsilon_high": loss.eps_high,
        "importance_sampling_level": "sequence",
        "loss_type": "grpo",  # per-sequence mean, as in the GSPO paper and TRL's docs
    }


LOSS_MAPPINGS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "ppo_clip": _ppo_clip,
    "gspo": _gspo,
}
"""Loss kind -> its GRPOConfig loss arguments. A kind missing here has no TRL counterpart."""


def trl_kwargs(job: Any) -> dict[str, Any]:
    """Keyword arguments of ``trl.GRPOConfig`` for a validated job config.

    ``epsilon``/``epsilon_high`` from eps_low/eps_high, ``loss_type`` from the aggregation,
    ``delta`` (TRL's two-sided clip) from ``dual_clip_c``, ``importance_sampling_level:
    sequence`` for gspo; for an ``rlvr`` job also ``scale_rewards`` (grpo -> "group", dr_grpo ->
    "none"), learning rate, weight decay, grad norm, ``num_generations``, ``temperature``,
    ``max_completion_length``, ``num_iterations``, ``beta: 0.0`` (no reference KL),
    ``gradient_checkpointing`` and ``bf16`` (:func:`trl_policy_kwargs`).
    """
    mapping = LOSS_MAPPINGS.get(job.loss.kind)
    if mapping is None:
        raise unsupported(job.loss.kind, "trl", "TRL GRPOConfig", list(LOSS_MAPPINGS))
    out = mapping(job.loss)
    if isinstance(job, RLVRJob):
        out["scale_rewards"] = "group" if job.advantage == "grpo" else "none"
        out["learning_rate"] = job.lr
        out["weight_decay"] = job.weight_decay
        out["max_grad_norm"] = job.max_grad_norm
        out["num_generations"] = job.group_size
        out["temperature"] = job.temperature
        out["max_completion_length"] = job.max_new_tokens
        out["num_iterations"] = job.ppo_epochs
        out["beta"] = 0.0
        out.update(trl_policy_kwargs(job))
    return out


def trl_policy_kwargs(job: RLVRJob) -> dict[str, Any]:
    """``GRPOConfig`` keyword arguments: gradient checkpointing, and ``bf16`` for the bfloat16
    modes (TRL's bf16 is mixed precision: fp32 master weights, as sweeper's bf16-mixed)."""
    bf16 = job.precision in ("bf16-mixed", "bf16") or job.param_dtype == "bfloat16"
    return {"gradient_checkpointing": job.policy.gradient_checkpointing, "bf16": bf16}


def trl_peft_config(job: RLVRJob) -> dict[str, Any] | None:
    """Keyword arguments of ``peft.LoraConfig`` for ``GRPOTrainer(peft_config=LoraConfig(**kw))``
    (None without LoRA): the same adapter sweeper trained."""
    lora = job.policy.lora
    if lora is None:
        return None
    return {
        "r": lora.r,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": lora.target_modules,
        "task_type": "CAUSAL_LM",
    }


class TrlTarget:
    """``--format trl``: ``<sweep>-best<k>.trl.yaml``."""

    name = "trl"
    ext = ".trl.yaml"

    def render(self, recipe: Recipe, header: list[str]) -> str:
        job = recipe.job
        kwargs = trl_kwargs(job)
        args = ", ".join(f"{key}={python_literal(v)}" for key, v in kwargs.items())
        head = [*header, "", "trl.GRPOConfig keyword arguments:"]
        head.append(f"  from trl import GRPOConfig; config = GRPOConfig(output_dir='out', {args})")
        peft = trl_peft_config(job) if isinstance(job, RLVRJob) else None
        if peft is not None:
            lora = ", ".join(f"{key}={python_literal(v)}" for key, v in peft.items())
            head.append("LoRA adapter (as trained in the sweep):")
            head.append(f"  from peft import LoraConfig; peft_config = LoraConfig({lora})")
            head.append("  GRPOTrainer(..., args=config, peft_config=peft_config)")
        if isinstance(job, RLVRJob):
            head.append(
                f"Off-policy degree: the sweep took {job.mini_batches} optimizer step(s) per "
                "rollout batch; set steps_per_generation = "
                f"{job.mini_batches} x gradient_accumulation_steps to match."
            )
        return comment(head) + dump_yaml(kwargs)
