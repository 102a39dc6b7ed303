"""Export the best configs of a sweep for a full-scale trainer (DESIGN §6).

Formats, one file per exported trial (``<sweep>-best<k>.<ext>`` in ``<sweep>/export/`` unless
``out_dir`` is given):

- ``yaml`` (``.yaml``): a complete sweeper recipe -- the sweep's job with the trial's params set
  at their dotted keys, no search space, a grid over the sweep's seeds -- named
  ``<sweep>-best<k>``; ``sweeper run`` re-runs it.
- ``verl`` (``.verl.yaml``): verl overrides (nested YAML, and the same as Hydra command-line
  overrides in the header comment). Loss kinds map to ``policy_loss.loss_mode`` vanilla /
  clip_cov / kl_cov / gspo; nsr and gppo have no verl counterpart.
- ``trl`` (``.trl.yaml``): keyword arguments of TRL's ``GRPOConfig`` (and a one-line Python
  snippet in the header comment). ppo_clip and gspo map; nsr, gppo, clip_cov, kl_cov do not.

A variant a target cannot express raises :class:`~sweeper.errors.InputError` naming the variant,
the target and what the target supports -- before any file is written.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import ValidationError

from sweeper.config.job import RLVRJob
from sweeper.config.loss import LOSS_PARAMS
from sweeper.errors import InputError, describe_validation_error
from sweeper.rank import objective_of, param_keys_of, rank_sweep
from sweeper.recipe import Recipe
from sweeper.store import SweepStore, decode_param

Format = Literal["yaml", "verl", "trl"]
FORMATS: tuple[str, ...] = ("yaml", "verl", "trl")
_EXT = {"yaml": ".yaml", "verl": ".verl.yaml", "trl": ".trl.yaml"}

VERL_NO_DUAL_CLIP = 1.0e9
"""verl's vanilla loss always applies dual clip (``clip_ratio_c``, default 3.0); a sweep without
dual clip exports this huge constant, which never binds."""

# --------------------------------------------------------------------------- verl

_VERL_LOSS_MODE = {
    "ppo_clip": "vanilla",
    "clip_cov": "clip_cov",
    "kl_cov": "kl_cov",
    "gspo": "gspo",
}
_ACTOR = "actor_rollout_ref.actor"
_PL = f"{_ACTOR}.policy_loss"


def verl_overrides(job: Any) -> dict[str, Any]:
    """Flat verl config overrides (dotted keys) for a validated job config.

    Loss keys: ``actor_rollout_ref.actor.{clip_ratio_low, clip_ratio_high, clip_ratio_c,
    loss_agg_mode}`` and ``actor_rollout_ref.actor.policy_loss.{loss_mode, clip_cov_ratio,
    clip_cov_lb, clip_cov_ub, kl_cov_ratio, ppo_kl_coef}``; for an ``rlvr`` job also learning
    rate, PPO epochs, group size (``rollout.n``), temperature, response length and the GRPO /
    Dr. GRPO advantage (``algorithm.norm_adv_by_std_in_grpo``).
    """
    loss = job.loss
    mode = _VERL_LOSS_MODE.get(loss.kind)
    if mode is None:
        raise InputError(
            f"loss kind {loss.kind!r} has no verl counterpart; verl export supports: "
            f"{', '.join(sorted(_VERL_LOSS_MODE))} (policy_loss.loss_mode "
            f"{', '.join(sorted(set(_VERL_LOSS_MODE.values())))})"
        )
    out: dict[str, Any] = {f"{_PL}.loss_mode": mode}
    if loss.kind in ("ppo_clip", "clip_cov", "gspo"):
        out[f"{_ACTOR}.clip_ratio_low"] = loss.eps_low
        out[f"{_ACTOR}.clip_ratio_high"] = loss.eps_high
    if loss.kind == "ppo_clip":
        c = loss.dual_clip_c
        out[f"{_ACTOR}.clip_ratio_c"] = VERL_NO_DUAL_CLIP if c is None else c
    if loss.kind == "clip_cov":
        out[f"{_PL}.clip_cov_ratio"] = loss.cov_ratio
        out[f"{_PL}.clip_cov_lb"] = loss.cov_lb
        out[f"{_PL}.clip_cov_ub"] = loss.cov_ub
    if loss.kind == "kl_cov":
        out[f"{_PL}.kl_cov_ratio"] = loss.cov_ratio
        out[f"{_PL}.ppo_kl_coef"] = loss.kl_coef
    # GSPO is defined with seq-mean-token-mean (verl's gspo loss forces it too).
    out[f"{_ACTOR}.loss_agg_mode"] = "seq-mean-token-mean" if loss.kind == "gspo" else loss.agg
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
    return out


# --------------------------------------------------------------------------- TRL

# TRL loss_type by aggregation: "dapo" normalises by the active tokens of the (global) batch,
# "grpo" by each sequence's length then averages, "dr_grpo" by max_completion_length.
_TRL_LOSS_TYPE = {
    "token-mean": "dapo",
    "seq-mean-token-mean": "grpo",
    "seq-mean-token-sum-norm": "dr_grpo",
}
_TRL_KINDS = ("gspo", "ppo_clip")


def trl_kwargs(job: Any) -> dict[str, Any]:
    """Keyword arguments of ``trl.GRPOConfig`` for a validated job config.

    ``epsilon``/``epsilon_high`` from eps_low/eps_high, ``loss_type`` from the aggregation,
    ``delta`` (TRL's two-sided clip) from ``dual_clip_c``, ``importance_sampling_level:
    sequence`` for gspo; for an ``rlvr`` job also ``scale_rewards`` (grpo -> "group", dr_grpo ->
    "none"), learning rate, weight decay, grad norm, ``num_generations``, ``temperature``,
    ``max_completion_length``, ``num_iterations`` and ``beta: 0.0`` (no reference KL).
    """
    loss = job.loss
    if loss.kind not in _TRL_KINDS:
        raise InputError(
            f"loss kind {loss.kind!r} has no TRL GRPOConfig counterpart; "
            f"trl export supports: {', '.join(_TRL_KINDS)}"
        )
    out: dict[str, Any] = {"epsilon": loss.eps_low, "epsilon_high": loss.eps_high}
    if loss.kind == "gspo":
        out["importance_sampling_level"] = "sequence"
        out["loss_type"] = "grpo"  # per-sequence mean, as in the GSPO paper and TRL's docs
    else:
        loss_type = _TRL_LOSS_TYPE.get(loss.agg)
        if loss_type is None:
            raise InputError(
                f"loss.agg {loss.agg!r} has no TRL loss_type; trl export supports agg: "
                + ", ".join(f"{a} (loss_type {t})" for a, t in _TRL_LOSS_TYPE.items())
            )
        out["loss_type"] = loss_type
        c = loss.dual_clip_c
        if c is not None:
            # TRL's delta caps the ratio for every token; that equals dual clip only when it
            # lies above the upper clip bound (A>0 tokens are capped at 1+eps_high first).
            if not (math.isfinite(loss.eps_high) and c > 1.0 + loss.eps_high):
                raise InputError(
                    f"loss.dual_clip_c={c} with eps_high={loss.eps_high}: TRL's delta matches "
                    "dual clip only for a finite eps_high and dual_clip_c > 1 + eps_high"
                )
            out["delta"] = c
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
    return out


# --------------------------------------------------------------------------- recipe


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def apply_params(job: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A copy of the ``job`` dict with each dotted param set.

    The loss block then keeps only the fields its (possibly searched) ``kind`` reads: when
    ``loss.kind`` is searched, the base kind's other knobs and the parameters of other kinds
    (null in this trial's row) would otherwise be rejected.
    """
    out = copy.deepcopy(job)
    for key, value in params.items():
        _set_dotted(out, key, value)
    loss = out.get("loss")
    if isinstance(loss, dict):
        cls = LOSS_PARAMS.get(loss.get("kind", "ppo_clip"))
        if cls is not None:
            out["loss"] = {k: v for k, v in loss.items() if k in cls.model_fields}
    return out


def best_recipe(
    resolved: dict[str, Any], params: dict[str, Any], sweep_name: str, k: int
) -> Recipe:
    """The recipe re-running trial ``params`` of a sweep: same job with the params set, no
    space, a grid over the sweep's seeds, named ``<sweep>-best<k>``."""
    data = copy.deepcopy(resolved)
    data["job"] = apply_params(data.get("job") or {}, params)
    data["space"] = {}
    search = dict(data.get("search") or {})
    data["search"] = {
        "kind": "grid",
        "seeds": search.get("seeds", [0]),
        "max_concurrent": search.get("max_concurrent", 4),
    }
    suffix = f"-best{k}"
    data["name"] = sweep_name[: 100 - len(suffix)] + suffix
    data["description"] = f"Best config #{k} of sweep {sweep_name} (sweeper export)."
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise InputError(describe_validation_error(err, f"export of {sweep_name} #{k}")) from err


# --------------------------------------------------------------------------- files


def _fmt(v: Any) -> str:
    """A value as a Hydra override / Python literal."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(v) if isinstance(v, float) else str(v)


def _py(v: Any) -> str:
    if isinstance(v, float) and math.isinf(v):
        return 'float("inf")' if v > 0 else 'float("-inf")'
    return repr(v)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        _set_dotted(tree, key, value)
    return tree


def _header(store: SweepStore, row: pd.Series, k: int, params: dict[str, Any]) -> list[str]:
    obj = objective_of(store)
    std = row["value_std"]
    std_txt = "" if pd.isna(std) else f" ± {std:.4g}"
    lines = [
        f"Best config #{k} of sweep {store.name}, exported by `sweeper export`.",
        f"source: {store.uri} (trial {int(row['trial'])}, state {row['state']})",
        f"objective: {obj.metric} ({obj.mode}, scope {obj.scope}, {obj.seed_agg} over seeds) "
        f"= {row['value']:.6g}{std_txt} over {int(row['n_seeds'])} seed(s)",
    ]
    # issue 10: the seed interval of the value (sweeper.stats.seed_interval; none for one seed)
    if not pd.isna(row.get("ci_low", math.nan)):
        lines.append(
            f"95% interval over seeds (bootstrap): [{row['ci_low']:.6g}, {row['ci_high']:.6g}] "
            f"from n_seeds={int(row['n_seeds'])}"
        )
    if not pd.isna(row["final_entropy"]):
        lines.append(f"final entropy: {row['final_entropy']:.4g}")
    if params:
        lines.append("params: " + ", ".join(f"{key}={_fmt(v)}" for key, v in params.items()))
    return lines


def _comment(lines: list[str]) -> str:
    return "".join(f"# {line}\n" if line else "#\n" for line in lines)


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def _render(
    fmt: str, store: SweepStore, recipe: Recipe, row: pd.Series, k: int, params: dict[str, Any]
) -> str:
    head = _header(store, row, k, params)
    if fmt == "yaml":
        head += ["", f"Re-run: sweeper run {recipe.name}.yaml"]
        data = recipe.model_dump(mode="python")
        data["job"] = {"kind": data["job"].pop("kind"), **data["job"]}  # kind first, for readers
        return _comment(head) + _dump(data)
    job = recipe.job
    if fmt == "verl":
        flat = verl_overrides(job)
        head += ["", "verl overrides; merge this file into your config, or on the command line:"]
        head.append("  python -m verl.trainer.main_ppo \\")
        head += [f"    {key}={_fmt(v)} \\" for key, v in flat.items()]
        head[-1] = head[-1].removesuffix(" \\")
        if isinstance(job, RLVRJob):
            head.append(
                f"Off-policy degree: the sweep took {job.mini_batches} optimizer step(s) per "
                "rollout batch; set actor_rollout_ref.actor.ppo_mini_batch_size = "
                f"data.train_batch_size / {job.mini_batches} to match."
            )
        if job.loss.kind == "ppo_clip" and job.loss.dual_clip_c is None:
            head.append(
                f"Dual clip was off in the sweep: clip_ratio_c={VERL_NO_DUAL_CLIP:g} never binds."
            )
        return _comment(head) + _dump(_nest(flat))
    kwargs = trl_kwargs(job)
    args = ", ".join(f"{key}={_py(v)}" for key, v in kwargs.items())
    head += ["", "trl.GRPOConfig keyword arguments:"]
    head.append(f"  from trl import GRPOConfig; config = GRPOConfig(output_dir='out', {args})")
    if isinstance(job, RLVRJob):
        head.append(
            f"Off-policy degree: the sweep took {job.mini_batches} optimizer step(s) per rollout "
            f"batch; set steps_per_generation = {job.mini_batches} x gradient_accumulation_steps "
            "to match."
        )
    return _comment(head) + _dump(kwargs)


def export_best(
    store: SweepStore,
    top: int = 1,
    fmt: Format = "yaml",
    out_dir: str | None = None,
) -> list[str]:
    """Write the ``top`` best trials of a sweep in format ``fmt`` (yaml | verl | trl); returns
    the written paths.

    Only COMPLETE, feasible trials with a value are exported, in rank order. Every file is
    rendered (and every mapping checked) before the first one is written, so an unsupported
    variant writes nothing. Default ``out_dir``: ``<sweep>/export/``.
    """
    if fmt not in FORMATS:
        raise InputError(f"export format {fmt!r} is unknown; valid: {', '.join(FORMATS)}")
    if top < 1:
        raise InputError(f"--top must be >= 1 (got {top})")
    ranking = rank_sweep(store)
    ok = ranking[
        (ranking["state"] == "COMPLETE") & ranking["feasible"] & ranking["value"].notna()
    ].head(top)
    if ok.empty:
        raise InputError(f"{store.uri}: no COMPLETE feasible trial with a value to export")
    resolved = store.read_resolved()
    keys = param_keys_of(store)
    rendered: list[tuple[str, str]] = []
    for k, (_, row) in enumerate(ok.iterrows(), start=1):
        params = {key: decode_param(row[key]) for key in keys if key in row.index}
        recipe = best_recipe(resolved, params, store.name, k)
        try:
            text = _render(fmt, store, recipe, row, k, params)
        except InputError as err:
            raise InputError(f"export --format {fmt} of trial {int(row['trial'])}: {err}") from err
        rendered.append((f"{recipe.name}{_EXT[fmt]}", text))
    target = SweepStore(out_dir) if out_dir is not None else SweepStore(store.path("export"))
    return [target.write_text(name, text) for name, text in rendered]
