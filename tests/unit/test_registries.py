"""One contract suite per registry, run over every registered implementation (the Optuna way):
export targets, samplers and pruners. (Rollout engines have theirs beside the engines.)"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from sweeper.config.loss import LOSS_PARAMS
from sweeper.config.recipe import PrunerConfig, Recipe, SearchConfig
from sweeper.errors import InputError
from sweeper.export import TARGETS
from sweeper.export.base import best_recipe
from sweeper.search import PRUNERS, SAMPLERS, Search, default_storage_url, make_pruner
from sweeper.search.samplers import missing_packages

# --------------------------------------------------------------------------- export targets


def trial_recipe(kind: str) -> Recipe:
    resolved = Recipe.model_validate(
        {"name": "demo", "job": {"steps": 5, "loss": {"kind": kind}}, "search": {"seeds": 2}}
    ).resolved()
    return best_recipe(resolved, {}, "demo", 1)


HEADER = ["Best config #1 of sweep demo", "objective: mean_at_n = 0.5"]


@pytest.mark.parametrize("target", list(TARGETS.values()), ids=list(TARGETS))
def test_target_renders_or_refuses_every_loss_kind(target: Any) -> None:
    rendered = 0
    for kind in LOSS_PARAMS:
        recipe = trial_recipe(kind)
        try:
            text = target.render(recipe, HEADER)
        except InputError as err:
            # A refusal names the kind and what the target does support.
            assert repr(kind) in str(err) and "supports" in str(err), str(err)
            continue
        rendered += 1
        lines = text.splitlines()
        assert lines[: len(HEADER)] == [f"# {h}" for h in HEADER]  # header first, as comments
        body = yaml.safe_load(text)
        assert isinstance(body, dict) and body  # the content is a non-empty YAML mapping
    assert rendered >= 2  # every target supports more than one kind


def test_targets_are_named_by_their_format_with_distinct_suffixes() -> None:
    assert {name: t.name for name, t in TARGETS.items()} == {n: n for n in TARGETS}
    exts = [t.ext for t in TARGETS.values()]
    assert len(set(exts)) == len(exts) and all(e.endswith(".yaml") for e in exts)


def test_the_recipe_target_exports_every_kind_as_a_runnable_recipe() -> None:
    for kind in LOSS_PARAMS:
        text = TARGETS["yaml"].render(trial_recipe(kind), HEADER)
        again = Recipe.model_validate(yaml.safe_load(text))
        assert again.job.loss.kind == kind and again.space == {}


# --------------------------------------------------------------------------- samplers


def test_sampler_registry_matches_the_schema() -> None:
    names = get_args(SearchConfig.model_fields["sampler"].annotation)
    assert set(SAMPLERS) == set(names)


def optuna_recipe(sampler: str, n_trials: int = 3) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "s",
            "job": {"kind": "synthetic", "steps": 4},
            "space": {
                "loss.eps_low": {"type": "uniform", "low": 0.05, "high": 0.3},
                "loss.eps_high": {"type": "choice", "values": [0.2, 0.28]},
            },
            "search": {"kind": "optuna", "sampler": sampler, "n_trials": n_trials},
        }
    )


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_asks_within_the_space_until_n_trials(name: str, tmp_path: Path) -> None:
    recipe = optuna_recipe(name)
    missing = missing_packages(name)
    if missing:
        with pytest.raises(InputError, match=f"search.sampler: {name} needs"):
            Search.create_or_load(recipe, default_storage_url(str(tmp_path)), "s")
        return
    search = Search.create_or_load(recipe, default_storage_url(str(tmp_path)), "s")
    seen = []
    while (asked := search.ask()) is not None:
        number, params = asked
        assert 0.05 <= params["loss.eps_low"] <= 0.3
        assert params["loss.eps_high"] in (0.2, 0.28)
        search.tell(number, params["loss.eps_low"], "COMPLETE")
        seen.append(number)
    assert seen == [0, 1, 2]
    values = [t["value"] for t in search.trials()]
    assert all(math.isfinite(v) for v in values)
    search.close()


# --------------------------------------------------------------------------- pruners


def test_pruner_registry_matches_the_schema() -> None:
    names = get_args(PrunerConfig.model_fields["kind"].annotation)
    assert set(PRUNERS) == set(names)


GOOD, BAD = 12, 4


def run_trials(pruner_kind: str) -> list[bool]:
    """Twelve good trials, then four far worse at every step: which were pruned?"""
    import optuna
    from optuna.trial import TrialState

    pruner = make_pruner(PrunerConfig(kind=pruner_kind, n_startup_trials=2), max_steps=10)
    assert isinstance(pruner, optuna.pruners.BasePruner)
    study = optuna.create_study(direction="maximize", pruner=pruner, study_name="contract")
    pruned = []
    for i in range(GOOD + BAD):
        trial = study.ask()
        level = 0.0 if i >= GOOD else 1.0 + 0.01 * i
        stopped = False
        for step in range(1, 11):
            trial.report(level, step)
            if trial.should_prune():
                stopped = True
                break
        state = TrialState.PRUNED if stopped else TrialState.COMPLETE
        study.tell(trial, None if stopped else level, state=state)
        pruned.append(stopped)
    return pruned


@pytest.mark.parametrize("kind", list(PRUNERS))
def test_pruner_stops_only_the_bad_trials(kind: str) -> None:
    pruned = run_trials(kind)
    assert pruned[:GOOD] == [False] * GOOD  # a trial better than all before it is never pruned
    assert pruned[GOOD:] == [kind != "none"] * BAD


def test_no_pruner_means_never_prune() -> None:
    import optuna

    assert isinstance(make_pruner(None, 10), optuna.pruners.NopPruner)
