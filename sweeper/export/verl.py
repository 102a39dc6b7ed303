"""Export target ``verl``: config overrides for verl's PPO trainer (``verl.trainer.main_ppo``).

Nested YAML to merge into a verl config, and the same as Hydra command-line overrides in the
header. Loss kinds map to ``actor_rollout_ref.actor.policy_loss.loss_mode`` through
:data:`LOSS_MAPPINGS`; nsr and gppo have no verl counterpart. LoRA maps to
``actor_rollout_ref.model.lora_rank`` / ``lora_alpha`` / ``target_modules`` (verl trains LoRA
when ``lora_rank > 0``); verl has no LoRA dropout option, so a nonzero ``policy.lora.dropout`` is
an error for this target.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sweeper.config.job import RLVRJob
from sweeper.config.recipe import Recipe
from sweeper.errors import InputError
from sweeper.export.base import comment, dump_yaml, nest, override_literal, unsupported

VERL_NO_DUAL_CLIP = 1.0e9
"""verl's vanilla loss always applies dual clip (``clip_ratio_c``, default 3.0); a sweep without
dual clip exports this huge constant, which never binds."""

_ACTOR = "actor_rollout_ref.actor"
_PL = f"{_ACTOR}.policy_loss"
_MODEL = "actor_rollout_ref.model"


def _clip_bounds(loss: Any) -> dict[str, Any]:
    return {f"{_ACTOR}.clip_ratio_low": loss.eps_low, f"{_ACTOR}.clip_ratio_high": loss.eps_high}


def _ppo_clip(loss: Any) -> dict[str, Any]:
    c = loss.dual_clip_c
    return {
        f"{_PL}.loss_mode": "vanilla",
        **_clip_bounds(loss),
        f"{_ACTOR}.clip_ratio_c": VERL_NO_DUAL_CLIP if c is None else c,
    }


def _clip_cov(loss: Any) -> dict[str, Any]:
    return {
        f"{_PL}.loss_mode": "clip_cov",
        **_clip_bounds(loss),
        f"{_PL}.clip_cov_ratio": loss.cov_ratio,
        f"{_PL}.clip_cov_lb": loss.cov_lb,
        f"{_PL}.clip_cov_ub": loss.cov_ub,
    }


def _kl_cov(loss: Any) -> dict[str, Any]:
    return {
        f"{_PL}.loss_mode": "kl_cov",
        f"{_PL}.kl_cov_ratio": loss.cov_ratio,
        f"{_PL}.ppo_kl_coef": loss.kl_coef,
    }


def _gspo(loss: Any) -> dict[str, Any]:
    return {f"{_PL}.loss_mode": "gspo", **_clip_bounds(loss)}


LOSS_MAPPINGS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "ppo_clip": _ppo_clip,
    "clip_cov": _clip_cov,
    "kl_cov": _kl_cov,
    "gspo": _gspo,
}
"""Loss kind -> its verl loss overrides. A kind missing here has no verl counterpart."""


def verl_overrides(job: Any) -> dict[str, Any]:
    """Flat verl config overrides (dotted keys) for a validated job config.

    Loss keys: ``actor_rollout_ref.actor.{clip_ratio_low, clip_ratio_high, clip_ratio_c,
    loss_agg_mode}`` and ``actor_rollout_ref.actor.policy_loss.{loss_mode, clip_cov_ratio,
    clip_cov_lb, clip_cov_ub, kl_cov_ratio, ppo_kl_coef}``; for an ``rlvr`` job also learning
    rate, PPO epochs, group size (``rollout.n``), temperature, response length, the GRPO /
    Dr. GRPO advantage (``algorithm.norm_adv_by_std_in_grpo``) and the policy's LoRA adapter and
    gradient checkpointing (:func:`verl_policy_overrides`).
    """
    loss = job.loss
    mapping = LOSS_MAPPINGS.get(loss.kind)
    if mapping is None:
        raise unsupported(loss.kind, "verl", "verl", list(LOSS_MAPPINGS))
    out = mapping(loss)
    # GSPO is defined with seq-mean-token-mean (verl's gspo loss forces it too).
    out[f"{_ACTOR}.loss_agg_mode"] = loss.aggregation
    if isinstance(job, RLVRJob):
        out[f"{_ACTOR}.optim.lr"] = job.lr
        out[f"{_ACTOR}.optim.weight_decay"] = job.weight_decay
        out[f"{_ACTOR}.ppo_epochs"] = job.ppo_epochs
        # The sweep's job has no KL-to-reference term and no entropy bonus.
        out[f"{_ACTOR}.use_kl_loss"] = False
        out[f"{_ACTOR}.entropy_coeff"] = 0.0
        out["actor_rollout_ref.rollout.n"] = job.group_size
        out["actor_rollout_ref.rollout.temperature"] = job.temperature
        out["data.max_response_length"] = job.max_new_tokens
        out["algorithm.adv_estimator"] = "grpo"
        out["algorithm.norm_adv_by_std_in_grpo"] = job.advantage == "grpo"
        out.update(verl_policy_overrides(job))
    return out


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


class VerlTarget:
    """``--format verl``: ``<sweep>-best<k>.verl.yaml``."""

    name = "verl"
    ext = ".verl.yaml"

    def render(self, recipe: Recipe, header: list[str]) -> str:
        job = recipe.job
        flat = verl_overrides(job)
        head = [
            *header,
            "",
            "verl overrides; merge this file into your config, or on the command line:",
        ]
        head.append("  python -m verl.trainer.main_ppo \\")
        head += [f"    {key}={override_literal(v)} \\" for key, v in flat.items()]
        head[-1] = head[-1].removesuffix(" \\")
        if isinstance(job, RLVRJob):
            head.append(
                f"Off-policy degree: the sweep took {job.mini_batches} optimizer step(s) per "
                "rollout batch; set actor_rollout_ref.actor.ppo_mini_batch_size = "
                f"data.train_batch_size / {job.mini_batches} to match."
            )
        if flat.get(f"{_ACTOR}.clip_ratio_c") == VERL_NO_DUAL_CLIP:
            head.append(
                f"Dual clip was off in the sweep: clip_ratio_c={VERL_NO_DUAL_CLIP:g} never binds."
            )
        return comment(head) + dump_yaml(nest(flat))
