"""Export: recipe yaml re-validates with the best params; verl / TRL mappings; unsupported
variants raise before anything is written."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter

from sweeper.config.job import JobConfig
from sweeper.config.recipe import Recipe
from sweeper.errors import InputError
from sweeper.export import VERL_NO_DUAL_CLIP, apply_params, export_best, trl_kwargs, verl_overrides
from sweeper.store import SweepStore
from tests.unit.test_store import RECIPE_TEXT, build_sweep

BASE_LOSS = "  loss: {kind: ppo_clip, eps_low: 0.2, eps_high: 0.2, agg: token-mean}\n"


def with_loss(loss: str) -> str:
    return RECIPE_TEXT.replace(BASE_LOSS, f"  loss: {loss}\n")


def job(loss: dict[str, Any], **kw: Any) -> Any:
    data = {"kind": "rlvr", "loss": loss, **kw}
    return TypeAdapter(JobConfig).validate_python(data)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


@pytest.fixture
def sweep(tmp_path: Path) -> SweepStore:
    return build_sweep(tmp_path)


# --------------------------------------------------------------------------- yaml


def test_yaml_export_is_a_recipe_with_the_best_params(sweep: SweepStore) -> None:
    paths = export_best(sweep, top=2, fmt="yaml")
    export_dir = Path(sweep.path("export"))
    assert paths == [str(export_dir / "demo-best1.yaml"), str(export_dir / "demo-best2.yaml")]
    text = Path(paths[0]).read_text()
    assert text.startswith("# Best config #1 of sweep demo")
    assert "trial 1" in text.split("\n", 3)[1] and "= 0.71" in text
    recipe = Recipe.model_validate(yaml.safe_load(text))
    assert recipe.name == "demo-best1"
    assert recipe.space == {}
    assert recipe.search.kind == "grid" and recipe.search.seeds == [0, 1]
    # trial 1 = eps_low 0.1, eps_high inf; the rest of the job unchanged
    assert recipe.job.loss.eps_low == 0.1 and math.isinf(recipe.job.loss.eps_high)
    assert recipe.job.advantage == "dr_grpo" and recipe.job.steps == 10
    second = Recipe.model_validate(yaml.safe_load(Path(paths[1]).read_text()))
    assert second.name == "demo-best2"
    assert (second.job.loss.eps_low, second.job.loss.eps_high) == (0.2, 0.28)  # trial 2


def test_export_to_custom_dir_and_errors(sweep: SweepStore, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere"
    (path,) = export_best(sweep, fmt="yaml", out_dir=str(out))
    assert path == str(out / "demo-best1.yaml") and Path(path).is_file()
    with pytest.raises(InputError, match="format"):
        export_best(sweep, fmt="json")
    with pytest.raises(InputError, match="top"):
        export_best(sweep, top=0)
    # top larger than the COMPLETE trials: only those are exported (3, not the FAILed one)
    assert len(export_best(sweep, top=10, fmt="yaml", out_dir=str(out))) == 3


def test_nothing_to_export(tmp_path: Path) -> None:
    store = SweepStore.create(str(tmp_path), "empty", RECIPE_TEXT, {"name": "empty"}, {})
    with pytest.raises(InputError, match="no COMPLETE feasible trial"):
        export_best(store)


def test_apply_params_with_searched_kind() -> None:
    base = {"kind": "rlvr", "loss": {"kind": "nsr", "eps_low": 0.2, "rescue_prob": 0.5}}
    out = apply_params(base, {"loss.kind": "ppo_clip", "loss.rescue_prob": None, "lr": 1e-4})
    assert out == {"kind": "rlvr", "lr": 1e-4, "loss": {"kind": "ppo_clip", "eps_low": 0.2}}
    assert base["loss"]["kind"] == "nsr"  # not mutated


# --------------------------------------------------------------------------- verl


def test_verl_export_file(sweep: SweepStore) -> None:
    (path,) = export_best(sweep, fmt="verl")
    text = Path(path).read_text()
    assert path.endswith("demo-best1.verl.yaml")
    assert "actor_rollout_ref.actor.clip_ratio_low=0.1 \\" in text  # the command-line form
    flat = flatten(yaml.safe_load(text))
    assert flat["actor_rollout_ref.actor.policy_loss.loss_mode"] == "vanilla"
    assert flat["actor_rollout_ref.actor.clip_ratio_low"] == 0.1
    assert math.isinf(flat["actor_rollout_ref.actor.clip_ratio_high"])
    assert flat["actor_rollout_ref.actor.clip_ratio_c"] == VERL_NO_DUAL_CLIP  # dual clip off
    assert flat["actor_rollout_ref.actor.loss_agg_mode"] == "token-mean"
    assert flat["algorithm.adv_estimator"] == "grpo"
    assert flat["algorithm.norm_adv_by_std_in_grpo"] is False  # dr_grpo advantages
    assert flat["actor_rollout_ref.rollout.n"] == 8
    assert flat["actor_rollout_ref.actor.optim.lr"] == 1e-4


def test_verl_mapping_per_kind() -> None:
    a = "actor_rollout_ref.actor."
    pl = a + "policy_loss."
    v = verl_overrides(
        job(
            {
                "kind": "ppo_clip",
                "eps_low": 0.1,
                "eps_high": 0.28,
                "dual_clip_c": 3.0,
                "agg": "seq-mean-token-sum-norm",
            },
            advantage="grpo",
        )
    )
    assert v[a + "clip_ratio_c"] == 3.0 and v[a + "clip_ratio_high"] == 0.28
    assert v[a + "loss_agg_mode"] == "seq-mean-token-sum-norm"
    assert v["algorithm.norm_adv_by_std_in_grpo"] is True
    v = verl_overrides(
        job(
            {
                "kind": "clip_cov",
                "eps_low": 0.2,
                "eps_high": 0.3,
                "cov_ratio": 2e-4,
                "cov_lb": 1.0,
                "cov_ub": 5.0,
            }
        )
    )
    assert v[pl + "loss_mode"] == "clip_cov" and v[pl + "clip_cov_ratio"] == 2e-4
    assert (v[pl + "clip_cov_lb"], v[pl + "clip_cov_ub"]) == (1.0, 5.0)
    assert a + "clip_ratio_c" not in v
    v = verl_overrides(job({"kind": "kl_cov", "cov_ratio": 2e-3, "kl_coef": 0.5}))
    assert v[pl + "loss_mode"] == "kl_cov" and v[pl + "kl_cov_ratio"] == 2e-3
    assert v[pl + "ppo_kl_coef"] == 0.5 and a + "clip_ratio_low" not in v
    v = verl_overrides(job({"kind": "gspo", "eps_low": 3e-4, "eps_high": 4e-4}))
    assert v[pl + "loss_mode"] == "gspo" and v[a + "clip_ratio_low"] == 3e-4
    assert v[a + "loss_agg_mode"] == "seq-mean-token-mean"
    synthetic = TypeAdapter(JobConfig).validate_python({"kind": "synthetic"})
    assert set(verl_overrides(synthetic)) == {
        pl + "loss_mode", a + "clip_ratio_low", a + "clip_ratio_high", a + "clip_ratio_c",
        a + "loss_agg_mode",
    }  # fmt: skip


@pytest.mark.parametrize("kind", ["nsr", "gppo"])
def test_verl_rejects_variants_it_lacks(kind: str) -> None:
    with pytest.raises(InputError, match=f"'{kind}' has no verl counterpart.*clip_cov"):
        verl_overrides(job({"kind": kind}))


# --------------------------------------------------------------------------- TRL


@pytest.mark.parametrize(
    ("agg", "loss_type"),
    [
        ("token-mean", "dapo"),
        ("seq-mean-token-mean", "grpo"),
        ("seq-mean-token-sum-norm", "dr_grpo"),
    ],
)
def test_trl_loss_type_by_agg(agg: str, loss_type: str) -> None:
    kw = trl_kwargs(job({"kind": "ppo_clip", "eps_low": 0.2, "eps_high": 0.28, "agg": agg}))
    assert kw["loss_type"] == loss_type
    assert (kw["epsilon"], kw["epsilon_high"]) == (0.2, 0.28)
    assert kw["scale_rewards"] == "group" and "delta" not in kw
    assert "importance_sampling_level" not in kw


def test_trl_export_file_and_mapping(sweep: SweepStore) -> None:
    (path,) = export_best(sweep, fmt="trl")
    text = Path(path).read_text()
    kw = yaml.safe_load(text)
    assert "config = GRPOConfig(" in text and 'epsilon_high=float("inf")' in text
    assert kw["epsilon"] == 0.1 and math.isinf(kw["epsilon_high"])
    assert kw["loss_type"] == "dapo" and kw["scale_rewards"] == "none"  # dr_grpo advantages
    assert kw["num_generations"] == 8 and kw["max_completion_length"] == 6
    assert kw["learning_rate"] == 1e-4 and kw["temperature"] == 1.0 and kw["beta"] == 0.0
    gspo = trl_kwargs(job({"kind": "gspo"}))
    assert gspo["importance_sampling_level"] == "sequence" and gspo["loss_type"] == "grpo"
    assert (gspo["epsilon"], gspo["epsilon_high"]) == (3e-4, 4e-4)
    dual = trl_kwargs(job({"kind": "ppo_clip", "eps_high": 0.28, "dual_clip_c": 3.0}))
    assert dual["delta"] == 3.0


def test_trl_kwargs_are_accepted_by_grpoconfig(tmp_path: Path) -> None:
    trl = pytest.importorskip("trl")
    for loss in ({"kind": "ppo_clip", "eps_high": math.inf}, {"kind": "gspo"},
                 {"kind": "ppo_clip", "dual_clip_c": 3.0, "agg": "seq-mean-token-sum-norm"}):  # fmt: skip
        kw = trl_kwargs(job(loss))
        cfg = trl.GRPOConfig(output_dir=str(tmp_path), use_cpu=True, **{**kw, "bf16": False})
        assert cfg.loss_type == kw["loss_type"] and cfg.epsilon_high == kw["epsilon_high"]


@pytest.mark.parametrize(
    ("loss", "match"),
    [
        ({"kind": "nsr"}, "'nsr' has no TRL GRPOConfig counterpart; trl export supports: gspo"),
        ({"kind": "clip_cov"}, "'clip_cov' has no TRL"),
        ({"kind": "kl_cov"}, "'kl_cov' has no TRL"),
        ({"kind": "gppo"}, "'gppo' has no TRL"),
        ({"kind": "ppo_clip", "agg": "seq-mean-token-sum"}, "no TRL loss_type.*token-mean"),
        ({"kind": "ppo_clip", "eps_high": math.inf, "dual_clip_c": 3.0}, "finite eps_high"),
        ({"kind": "ppo_clip", "eps_high": 0.28, "dual_clip_c": 1.2}, "dual_clip_c > 1"),
    ],
)
def test_trl_rejects_what_it_cannot_express(loss: dict[str, Any], match: str) -> None:
    with pytest.raises(InputError, match=match):
        trl_kwargs(job(loss))


@pytest.mark.parametrize(
    ("loss", "fmt"),
    [
        ("{kind: nsr, eps_low: 0.2, eps_high: 0.2, rescue_prob: 0.5}", "verl"),
        ("{kind: nsr, eps_low: 0.2, eps_high: 0.2, rescue_prob: 0.5}", "trl"),
        ("{kind: clip_cov, eps_low: 0.2, eps_high: 0.2}", "trl"),
        ("{kind: gppo, eps_low: 0.2, eps_high: 0.2}", "verl"),
    ],
)
def test_unsupported_variant_writes_nothing(tmp_path: Path, loss: str, fmt: str) -> None:
    store = build_sweep(tmp_path, recipe_text=with_loss(loss))
    with pytest.raises(InputError, match=f"export --format {fmt} of trial 1:"):
        export_best(store, top=3, fmt=fmt)
    assert not Path(store.path("export")).exists()
    assert len(export_best(store, top=3, fmt="yaml")) == 3  # the recipe format always works
