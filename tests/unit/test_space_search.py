"""Space helpers (grid expansion, Optuna distributions) and the Optuna-backed Search."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest

from sweeper.config.recipe import Recipe
from sweeper.config.space import (
    ChoiceParam,
    GridParam,
    IntParam,
    LogUniformParam,
    UniformParam,
    axis_values,
    expand_grid,
    grid_size,
    normalize_inf,
)
from sweeper.errors import InputError
from sweeper.search import Search, default_storage_url, make_storage
from sweeper.search.distributions import optuna_distribution

# --------------------------------------------------------------------------- space


def _random_axis(rng: random.Random) -> Any:
    kind = rng.choice(["grid", "choice", "int"])
    if kind == "int":
        low = rng.randint(-5, 5)
        return IntParam(low=low, high=low + rng.randint(0, 9), step=rng.randint(1, 4))
    values = rng.sample(range(100), rng.randint(1, 4))
    return (GridParam if kind == "grid" else ChoiceParam)(values=values)


@pytest.mark.parametrize("seed", range(40))
def test_grid_size_is_product_of_axes(seed: int) -> None:
    rng = random.Random(seed)
    space = {f"k{i}": _random_axis(rng) for i in range(rng.randint(0, 4))}
    points = expand_grid(space)
    lengths = [len(axis_values(spec)) for spec in space.values()]
    assert grid_size(space) == len(points) == math.prod(lengths)
    # every point distinct, every key present, every value on its axis
    assert len({tuple(p.items()) for p in points}) == len(points)
    for p in points:
        assert list(p) == list(space)
        assert all(p[k] in axis_values(space[k]) for k in space)
    # stable order: last key varies fastest
    if len(space) >= 1 and len(points) >= 2:
        last = list(space)[-1]
        assert (
            points[1][last] == axis_values(space[last])[min(1, len(axis_values(space[last])) - 1)]
        )


def test_int_axis_values_and_distribution() -> None:
    spec = IntParam(low=1, high=10, step=4)
    assert axis_values(spec) == [1, 5, 9]
    dist = optuna_distribution(spec)
    assert (dist.low, dist.high, dist.step) == (1, 9, 4)
    assert optuna_distribution(spec, grid=True).choices == (1, 5, 9)


def test_distributions() -> None:
    assert optuna_distribution(UniformParam(low=0, high=1)).log is False
    log = optuna_distribution(LogUniformParam(low=0.02, high=0.5))
    assert log.log is True and (log.low, log.high) == (0.02, 0.5)
    cat = optuna_distribution(GridParam(values=[0.2, math.inf, None, "x"]))
    assert cat.choices == (0.2, math.inf, None, "x")
    with pytest.raises(ValueError, match="continuous"):
        grid_size({"a": UniformParam(low=0, high=1)})


@pytest.mark.parametrize(
    ("word", "value"), [("inf", math.inf), ("-Infinity", -math.inf), (".inf", math.inf)]
)
def test_normalize_inf(word: str, value: float) -> None:
    assert normalize_inf(word) == value
    assert normalize_inf("token-mean") == "token-mean"


# --------------------------------------------------------------------------- search


def grid_recipe(**search: Any) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "g",
            "job": {"kind": "synthetic", "steps": 20},
            "space": {"loss.eps_low": [0.1, 0.2], "loss.eps_high": [0.2, 0.28, "inf"]},
            "search": {"kind": "grid", **search},
        }
    )


def optuna_recipe(n_trials: int = 5, **search: Any) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "o",
            "job": {"kind": "synthetic", "steps": 20, "loss": {"kind": "nsr"}},
            "space": {
                "loss.rescue_prob": {"type": "uniform", "low": 0.0, "high": 1.0},
                "loss.rescue_margin": {"type": "log_uniform", "low": 0.02, "high": 0.5},
                "loss.rescue_sides": ["both", "low"],
                "steps": {"type": "int", "low": 10, "high": 30, "step": 10},
            },
            "search": {"kind": "optuna", "n_trials": n_trials, **search},
        }
    )


def storage(tmp_path: Path) -> str:
    return default_storage_url(str(tmp_path / "sweep"))


def drain(search: Search, value: float = 1.0) -> list[tuple[int, dict[str, Any]]]:
    asked = []
    while (item := search.ask()) is not None:
        asked.append(item)
        search.tell(item[0], value)
    return asked


def test_grid_enqueued_once_across_resume(tmp_path: Path) -> None:
    recipe = grid_recipe()
    url = storage(tmp_path)
    s1 = Search.create_or_load(recipe, url, "g")
    first = [s1.ask(), s1.ask()]
    s1.tell(first[0][0], 0.5)
    s1.tell(first[1][0], 0.6)
    s1.close()
    # A resumed controller: the same study, nothing enqueued twice.
    s2 = Search.create_or_load(recipe, url, "g")
    assert len(s2.trials()) == 6
    rest = drain(s2)
    seen = [p for _, p in first] + [p for _, p in rest]
    assert seen == recipe.grid_points()  # every point exactly once, in grid order
    assert seen[2]["loss.eps_high"] == math.inf  # inf survives the SQLite round trip
    assert s2.ask() is None
    states = [t["state"] for t in s2.trials()]
    assert states == ["COMPLETE"] * 6
    s2.close()
    s3 = Search.create_or_load(recipe, url, "g")
    assert len(s3.trials()) == 6 and s3.ask() is None
    s3.close()


def test_grid_enqueue_finishes_after_a_crash_midway(tmp_path: Path) -> None:
    import optuna

    recipe = grid_recipe()
    url = storage(tmp_path)
    # Simulate a controller killed after enqueueing two points (no "enqueued" mark yet).
    study = optuna.create_study(storage=make_storage(url), study_name="g", direction="maximize")
    for point in recipe.grid_points()[:2]:
        study.enqueue_trial(point)
    search = Search.create_or_load(recipe, url, "g")
    assert [t["params"] for t in search.trials()] == recipe.grid_points()
    search.close()


def test_optuna_respects_n_trials_and_types(tmp_path: Path) -> None:
    recipe = optuna_recipe(n_trials=5)
    search = Search.create_or_load(recipe, storage(tmp_path), "o")
    running = [search.ask() for _ in range(3)]  # three in flight at once
    assert all(r is not None for r in running)
    search.tell(running[0][0], None, "FAIL", error="boom")
    search.tell(running[1][0], 0.3, "PRUNED")
    search.tell(running[2][0], 0.9)
    asked = drain(search)
    assert len(asked) == 2  # 5 counted: FAIL and PRUNED included
    assert search.ask() is None and search.remaining() == 0
    for _, params in [r for r in running if r] + asked:
        assert 0.0 <= params["loss.rescue_prob"] <= 1.0
        assert 0.02 <= params["loss.rescue_margin"] <= 0.5
        assert params["loss.rescue_sides"] in ("both", "low")
        assert params["steps"] in (10, 20, 30)
        recipe.job_for(params)  # every asked point is a valid job
    rows = {t["number"]: t for t in search.trials()}
    assert rows[running[0][0]]["user_attrs"]["error"] == "boom"
    assert rows[running[1][0]]["state"] == "PRUNED"
    assert rows[running[1][0]]["user_attrs"]["sweeper_value_at_prune"] == 0.3
    assert rows[running[2][0]]["value"] == 0.9
    search.close()


def test_complete_without_a_value_fails_the_trial(tmp_path: Path) -> None:
    search = Search.create_or_load(optuna_recipe(), storage(tmp_path), "o")
    number, _ = search.ask()
    search.tell(number, float("nan"))
    search.tell(number, 1.0)  # already finished: ignored
    (row,) = search.trials()
    assert row["state"] == "FAIL" and "not a number" in row["user_attrs"]["error"]
    search.close()


def test_median_pruner_prunes_a_clearly_worse_trial(tmp_path: Path) -> None:
    recipe = optuna_recipe(
        n_trials=10, pruner={"kind": "median", "n_startup_trials": 2, "n_warmup_steps": 0}
    )
    search = Search.create_or_load(recipe, storage(tmp_path), "o")
    for _ in range(3):  # three good trials finish
        number, _ = search.ask()
        for step in (0, 10, 20):
            assert search.report(number, step, 0.8 + step / 100) is False
        search.tell(number, 1.0)
    good, _ = search.ask()
    bad, _ = search.ask()
    assert search.report(good, 10, 0.95) is False
    assert search.report(bad, 10, 0.05) is True  # far below the median at step 10
    search.tell(bad, None, "PRUNED")
    assert search.report(bad, 20, 0.05) is True  # a late row for a pruned trial: stop
    rows = {t["number"]: t for t in search.trials()}
    assert rows[bad]["state"] == "PRUNED" and rows[bad]["value"] == 0.05
    assert rows[bad]["intermediate_values"] == {10: 0.05}
    search.close()


def test_recover_fails_running_trials_and_reruns_them(tmp_path: Path) -> None:
    recipe = optuna_recipe(n_trials=4)
    url = storage(tmp_path)
    s1 = Search.create_or_load(recipe, url, "o")
    done, _ = s1.ask()
    s1.tell(done, 0.5)
    lost = [s1.ask(), s1.ask()]  # running when the controller dies
    s1.close()

    s2 = Search.create_or_load(recipe, url, "o")
    assert sorted(s2.recover()) == sorted(n for n, _ in lost)
    assert s2.recover() == []  # nothing left running
    rows = {t["number"]: t for t in s2.trials()}
    for number, _ in lost:
        assert rows[number]["state"] == "FAIL"
        assert "sweeper_recovered" in rows[number]["user_attrs"]
    reruns = [s2.ask(), s2.ask()]
    assert [p for _, p in reruns] == [p for _, p in lost]  # same params, new numbers
    assert {n for n, _ in reruns}.isdisjoint({n for n, _ in lost})
    rows = {t["number"]: t for t in s2.trials()}
    assert [rows[n]["user_attrs"]["sweeper_rerun_of"] for n, _ in reruns] == [n for n, _ in lost]
    for number, _ in reruns:
        s2.tell(number, 0.7)
    # budget: 1 done + 2 reruns count; the recovered FAIL marks do not: one more to ask
    assert len(drain(s2)) == 1
    assert s2.ask() is None
    s2.close()


def test_recover_reruns_grid_points(tmp_path: Path) -> None:
    recipe = grid_recipe()
    url = storage(tmp_path)
    s1 = Search.create_or_load(recipe, url, "g")
    lost = s1.ask()
    s1.close()
    s2 = Search.create_or_load(recipe, url, "g")
    assert s2.recover() == [lost[0]]
    params = [p for _, p in drain(s2)]
    assert sorted(map(str, params)) == sorted(map(str, recipe.grid_points()))
    s2.close()


def test_direction_and_space_mismatch_on_load(tmp_path: Path) -> None:
    url = storage(tmp_path)
    Search.create_or_load(grid_recipe(), url, "g").close()
    flipped = grid_recipe().model_copy(
        update={"objective": grid_recipe().objective.model_copy(update={"mode": "min"})}
    )
    with pytest.raises(InputError, match="direction maximize"):
        Search.create_or_load(flipped, url, "g")
    with pytest.raises(InputError, match="use a new sweep name"):
        Search.create_or_load(optuna_recipe(), url, "g")


def test_samplers_and_pruners_build(tmp_path: Path) -> None:
    pruners = ("median", "percentile", "successive_halving", "hyperband", "none")
    for i, pruner in enumerate(pruners):
        sampler = ("tpe", "random")[i % 2]
        recipe = optuna_recipe(sampler=sampler, pruner={"kind": pruner})
        search = Search.create_or_load(recipe, storage(tmp_path), f"{sampler}-{pruner}")
        number, _ = search.ask()
        assert search.report(number, 0, 0.5) is False
        search.tell(number, 0.5)
        assert search.trials()[0]["value"] == 0.5
        search.close()


def test_missing_sampler_package_is_input_error() -> None:
    import importlib.util

    recipe = optuna_recipe(sampler="cmaes")
    if importlib.util.find_spec("cmaes") is not None:
        pytest.skip("cmaes is installed")
    with pytest.raises(InputError, match=r"search\.sampler: cmaes needs the `cmaes` package"):
        Search.create_or_load(recipe, "sqlite:///:memory:", "c")


def test_bad_storage_url_is_input_error() -> None:
    with pytest.raises(InputError, match="optuna storage"):
        Search.create_or_load(grid_recipe(), "nosuchdialect://x/y", "g")
