"""Export of the job's training-side options (LoRA, gradient checkpointing, precision) to verl and
TRL -- kept apart from ``sweeper.export`` (the loss knobs) until the two are folded together.

- verl (flat dotted overrides): ``actor_rollout_ref.model.lora_rank`` / ``lora_alpha`` /
  ``target_modules`` (verl trains LoRA when ``lora_rank > 0``; ``target_modules`` takes
  ``all-linear`` or a list), ``actor_rollout_ref.model.enable_gradient_checkpointing``. verl has no
  LoRA dropout option: a nonzero ``policy.lora.dropout`` is an error for this target.
- TRL: ``GRPOConfig`` keyword arguments (``gradient_checkpointing``, ``bf16``) and, with LoRA,
  the keyword arguments of ``peft.LoraConfig`` given to ``GRPOTrainer(peft_config=...)``.

Torch-free: it reads the validated job config only.
"""

from __future__ import annotations

from typing import Any

from sweeper.config.job import RLVRJob
from sweeper.errors import InputError

__all__ = ["trl_peft_config", "trl_policy_kwargs", "verl_policy_overrides"]

_MODEL = "actor_rollout_ref.model"


def verl_policy_overrides(job: RLVRJob) -> dict[str, Any]:
    """verl overrides (dotted keys) for the job's LoRA adapter and gradient checkpointing.

    Raises:
        InputError: a LoRA dropout > 0 (verl has no such option).
    """
    out: dict[str, Any] = {
        f"{_MODEL}.enable_gradient_checkpointing": job.policy.gradient_checkpointing
    }
    lora = job.policy.lora
    if lora is None:
        return {**out, f"{_MODEL}.lora_rank": 0}  # 0 = full fine-tuning in verl
    if lora.dropout > 0:
        raise InputError(
            f"policy.lora.dropout={lora.dropout}: verl has no LoRA dropout option "
            "(it supports lora_rank, lora_alpha, target_modules); set it to 0 or export to trl"
        )
    out.update(
        {
            f"{_MODEL}.lora_rank": lora.r,
            f"{_MODEL}.lora_alpha": lora.alpha,
            f"{_MODEL}.target_modules": lora.target_modules,
        }
    )
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
