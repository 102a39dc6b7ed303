"""Recipe loading: overrides, schema errors (one line naming the field), semantic checks."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sweeper.config.files import validate_path
from sweeper.config.loader import load_recipe, parse_override
from sweeper.config.recipe import Recipe
from sweeper.errors import InputError

BASE = """\
name: t
job:
  steps: 20
  mini_batches: 4
  loss: {kind: ppo_clip}
space:
  loss.eps_low: [0.1, 0.2]
  loss.eps_high: [0.2, 0.28]
search: {kind: grid, seeds: 2}
"""


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def error_of(path: str, overrides: list[str] | None = None) -> str:
    with pytest.raises(InputError) as info:
        load_recipe(path, overrides or [])
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_loads_and_expands(tmp_path: Path) -> None:
    recipe, text = load_recipe(write(tmp_path, BASE))
    assert text == BASE
    assert recipe.param_keys() == ["loss.eps_low", "loss.eps_high"]
    assert recipe.grid_points() == [
        {"loss.eps_low": 0.1, "loss.eps_high": 0.2},
        {"loss.eps_low": 0.1, "loss.eps_high": 0.28},
        {"loss.eps_low": 0.2, "loss.eps_high": 0.2},
        {"loss.eps_low": 0.2, "loss.eps_high": 0.28},
    ]
    assert recipe.search.seeds == [0, 1]
    assert recipe.n_jobs() == 8
    job = recipe.job_for({"loss.eps_low": 0.1, "loss.eps_high": 0.28})
    assert (job.loss.eps_low, job.loss.eps_high, job.steps) == (0.1, 0.28, 20)
    assert "grid of 4 configs x 2 seeds = 8 jobs" in recipe.summary()


def test_job_without_kind_is_rlvr(tmp_path: Path) -> None:
    recipe, _ = load_recipe(write(tmp_path, "name: t\njob: {steps: 3}\n"))
    assert recipe.job.kind == "rlvr" and recipe.job.steps == 3
    assert recipe.grid_points() == [{}]


@pytest.mark.parametrize("word", ["inf", ".inf", "Infinity", "+inf"])
def test_overrides_accept_inf(tmp_path: Path, word: str) -> None:
    path = write(tmp_path, BASE)
    recipe, text = load_recipe(path, [f"job.loss.eps_high={word}", "space.loss.eps_high=null"])
    assert math.isinf(recipe.job.loss.eps_high)
    assert recipe.param_keys() == ["loss.eps_low"]
    assert text.endswith(f"# --set job.loss.eps_high={word}\n# --set space.loss.eps_high=null\n")


def test_overrides_lists_and_space_keys(tmp_path: Path) -> None:
    recipe, _ = load_recipe(
        write(tmp_path, BASE),
        ["search.seeds=[3, 5, 7]", "space.loss.eps_high=[0.2, inf]", "job.steps=7"],
    )
    assert recipe.search.seeds == [3, 5, 7]
    assert recipe.job.steps == 7
    assert recipe.space["loss.eps_high"].values == [0.2, math.inf]
    assert recipe.grid_points()[1] == {"loss.eps_low": 0.1, "loss.eps_high": math.inf}


def test_override_creates_missing_blocks(tmp_path: Path) -> None:
    recipe, _ = load_recipe(write(tmp_path, BASE), ["search.pruner.kind=median"])
    assert recipe.search.pruner is not None and recipe.search.pruner.kind == "median"


def test_override_distribution_needs_optuna(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    msg = error_of(path, ["space.loss.eps_low={type: uniform, low: 0.05, high: 0.3}"])
    assert "space.loss.eps_low" in msg and "search.kind: optuna" in msg
    recipe, _ = load_recipe(
        path,
        [
            "space.loss.eps_low={type: uniform, low: 0.05, high: 0.3}",
            "search.kind=optuna",
            "search.n_trials=5",
        ],
    )
    assert recipe.n_configs() == 5


def test_parse_override_space_rest_is_one_key() -> None:
    assert parse_override("space.loss.eps_low=[0.1,0.2]") == (
        ["space", "loss.eps_low"],
        [0.1, 0.2],
    )
    assert parse_override("job.loss.eps_high=inf") == (["job", "loss", "eps_high"], "inf")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["job.stepz=3"], "job.stepz: unknown key (valid keys: steps, loss, kind"),
        (["spcae={}"], "spcae: unknown key (valid keys: name, description, job, space"),
        (["job.loss.eps_low=1.5"], "job.loss.eps_low: Input should be less than or equal to 1"),
        (["search.seeds=[1, 1]"], "search.seeds"),
        (["space.loss.eps_low=[0.1, 1.5]"], "space.loss.eps_low: value 1.5"),
        (["space.loss.rescue_prob=[0.1]"], "loss kind 'ppo_clip' does not read 'rescue_prob'"),
        (["space.stepz=[1, 2]"], "space.stepz: value 1 does not give a valid job: job.stepz"),
        (["space.x={type: int, low: 3, high: 1}"], "space.x: low (3) must be <= high (1)"),
        (["space.x={type: uniform, lowz: 1}"], "space.x.lowz: unknown key (valid keys: type"),
        (["space.loss.eps_low=[0.1, 0.1]"], "duplicates"),
        (["search.kind=optuna"], "search.n_trials: required"),
        (["job.loss.kind=bogus"], "unknown loss kind 'bogus'; valid kinds:"),
        (["job.steps.x=1"], "--set job.steps.x=1: job.steps is not a mapping"),
        (["job.steps"], "--set 'job.steps': expected KEY=VALUE"),
        (["job..steps=1"], "empty segment"),
        (["job.steps=[1, 2"], "--set job.steps: YAML error"),
    ],
)
def test_bad_input_is_one_line_naming_the_field(
    tmp_path: Path, overrides: list[str], expected: str
) -> None:
    msg = error_of(write(tmp_path, BASE), overrides)
    assert expected in msg, msg


def test_irrelevant_key_message_lists_what_the_kind_reads(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, BASE), ["space.loss.rescue_prob=[0.1, 0.5]"])
    assert msg.startswith(str(tmp_path / "r.yaml") + ": space.loss.rescue_prob")
    assert "it reads: eps_low, eps_high, dual_clip_c, agg" in msg


def test_cross_key_constraint_checked_per_point(tmp_path: Path) -> None:
    text = """\
    name: c
    job: {loss: {kind: clip_cov}}
    space:
      loss.cov_lb: [0.5, 6.0]
      loss.cov_ub: [5.0, 10.0]
    """
    # cov_lb 6 alone (default cov_ub 5) is invalid, but valid next to cov_ub 10: the grid
    # point (6, 5) is what is refused.
    msg = error_of(write(tmp_path, text))
    assert "space: point {loss.cov_lb=6.0, loss.cov_ub=5.0}" in msg
    assert "cov_lb (6.0) must be < cov_ub (5.0)" in msg
    recipe, _ = load_recipe(write(tmp_path, text.replace("[5.0, 10.0]", "[7.0, 10.0]")))
    assert len(recipe.grid_points()) == 4
    # A value no other setting rescues is named by its key.
    msg = error_of(write(tmp_path, text.replace("[5.0, 10.0]", "[5.0, 5.5]")))
    assert "space.loss.cov_lb: value 6.0 does not give a valid job" in msg


def test_clip_params_refused_when_updates_are_on_policy(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    msg = error_of(path, ["job.mini_batches=1", "job.ppo_epochs=1"])
    assert "clip parameters (loss.eps_low, loss.eps_high)" in msg
    assert "job.mini_batches=1 and job.ppo_epochs=1" in msg
    # Two epochs over one mini-batch is off-policy from the second epoch on: fine.
    recipe, _ = load_recipe(path, ["job.mini_batches=1", "job.ppo_epochs=2"])
    assert recipe.job.clipping_can_act
    # Sweeping mini_batches itself: a grid point with 1 x 1 is refused.
    msg = error_of(path, ["job.mini_batches=2", "space.mini_batches=[1, 2]"])
    assert "clipping cannot act" in msg
    # Non-clip params may be swept on-policy.
    recipe, _ = load_recipe(
        path,
        [
            "job.mini_batches=1",
            "space.loss.eps_low=null",
            "space.loss.eps_high=null",
            "space.lr=[0.001, 0.0003]",
        ],
    )
    assert recipe.param_keys() == ["lr"]


@pytest.mark.parametrize(
    ("loss", "key", "refused"),
    [
        ("{kind: nsr}", "loss.rescue_prob=[0.2, 0.8]", True),
        ("{kind: nsr}", "loss.rescue_sides=[low, high]", True),
        ("{kind: gppo}", "loss.beta_high=[0.5, 1.0]", True),
        ("{kind: kl_cov}", "loss.kl_coef=[0.5, 1.0]", True),
        ("{kind: clip_cov}", "loss.cov_ratio=[0.001, 0.01]", False),  # detaching acts at r = 1
        ("{kind: ppo_clip}", "loss.agg=[token-mean, seq-mean-token-mean]", False),
    ],
)
def test_on_policy_check_reads_the_loss_kinds_declarations(
    tmp_path: Path, loss: str, key: str, refused: bool
) -> None:
    from sweeper.config.loss import LOSS_PARAMS

    overrides = [
        "job.mini_batches=1",
        f"job.loss={loss}",
        "space.loss.eps_low=null",
        "space.loss.eps_high=null",
        f"space.{key}",
    ]
    name = key.split("=")[0].removeprefix("loss.")
    kind = loss.strip("{}").split(": ")[1]
    assert (name in LOSS_PARAMS[kind].off_policy_params()) is refused
    if refused:
        assert "every update is on-policy" in error_of(write(tmp_path, BASE), overrides)
    else:
        recipe, _ = load_recipe(write(tmp_path, BASE), overrides)
        assert recipe.param_keys() == [key.split("=")[0]]


def test_pruner_with_grid_is_allowed(tmp_path: Path) -> None:
    recipe, _ = load_recipe(write(tmp_path, BASE), ["search.pruner={kind: median}"])
    assert recipe.search.kind == "grid" and recipe.search.pruner.kind == "median"


@pytest.mark.parametrize("key", ["loss.kind", "kind"])
def test_kinds_cannot_be_searched(tmp_path: Path, key: str) -> None:
    values = "[ppo_clip, nsr]" if key == "loss.kind" else "[rlvr, synthetic]"
    msg = error_of(write(tmp_path, BASE), [f"space.{key}={values}"])
    assert f"space.{key}: the " in msg and "one recipe per kind" in msg


def test_job_for_rejects_bad_params(tmp_path: Path) -> None:
    recipe, _ = load_recipe(write(tmp_path, BASE))
    with pytest.raises(InputError, match=r"job\.loss\.eps_low"):
        recipe.job_for({"loss.eps_low": 2.0})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [unclosed\n", "YAML error at line 2"),
        ("name: a\nname: b\n", "duplicate key 'name'"),
        ("- a\n- b\n", "expected a recipe (a YAML mapping), got list"),
        ("", "empty file"),
        ("name: 'bad name!'\n", "name: String should match pattern"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, expected: str) -> None:
    msg = error_of(write(tmp_path, text))
    assert expected in msg and str(tmp_path / "r.yaml") in msg, msg


def test_missing_file(tmp_path: Path) -> None:
    msg = error_of(str(tmp_path / "nope.yaml"))
    assert msg == f"{tmp_path / 'nope.yaml'}: no such file"


def test_resolved_round_trips_through_json_with_inf(tmp_path: Path) -> None:
    recipe, _ = load_recipe(
        write(tmp_path, BASE),
        ["job.loss.eps_high=inf", "space.loss.eps_high=null", "space.loss.dual_clip_c=[3.0, null]"],
    )
    resolved = recipe.resolved()
    text = json.dumps(resolved, allow_nan=False)  # standard JSON: no Infinity literal
    assert resolved["job"]["loss"]["eps_high"] == "inf"
    back = Recipe.model_validate(json.loads(text))
    assert back == recipe
    assert math.isinf(back.job.loss.eps_high)
    assert back.space["loss.dual_clip_c"].values == [3.0, None]
    # inf inside a grid axis too
    recipe2, _ = load_recipe(write(tmp_path, BASE), ["space.loss.eps_high=[0.2, inf]"])
    back2 = Recipe.model_validate(json.loads(json.dumps(recipe2.resolved(), allow_nan=False)))
    assert back2.space["loss.eps_high"].values == [0.2, math.inf]
    assert back2.grid_points() == recipe2.grid_points()


def test_validate_path_recipe_summary(tmp_path: Path) -> None:
    summary = validate_path(write(tmp_path, BASE))
    assert summary.startswith("recipe t: grid of 4 configs x 2 seeds = 8 jobs")


def test_validate_path_rejects_unknown_manifest(tmp_path: Path) -> None:
    path = write(tmp_path, "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n", "pod.yaml")
    with pytest.raises(InputError, match="kind 'Pod'"):
        validate_path(path)


def test_validate_path_plain_shell_script_is_not_ours(tmp_path: Path) -> None:
    path = write(tmp_path, "#!/bin/bash\necho hi\n", "x.sh")
    with pytest.raises(InputError, match="without #SBATCH"):
        validate_path(path)


def test_recipe_modules_do_not_import_torch() -> None:
    code = (
        "import sys; import sweeper.config, sweeper.search; "
        "bad = [m for m in ('torch', 'sweeper.rl', 'optuna', 'ray') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_validate_path_checks_ray_launcher_configs_with_rays_schema(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    text = (root / "clusters" / "ray-launcher-gpu.yaml").read_text()
    path = write(tmp_path, text.replace("idle_timeout_minutes", "idle_timeout_minutez"), "l.yaml")
    with pytest.raises(InputError, match="'idle_timeout_minutez' was unexpected"):
        validate_path(path)
