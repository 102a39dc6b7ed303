"""Every numeric field of every config schema is bounded and finite, and takes no booleans.

The walk starts at the two roots a user writes (a recipe, a cluster file), reaches every model
under them, and tries each numeric field with the values that mean nothing there: ``true``,
``false``, ``inf``, ``-inf``, ``nan`` and an integer beyond 64 bits. A new field is covered the
moment it is added; one where infinity means something, or that has no natural lower bound, is
listed below with the reason (the rule: :mod:`sweeper.config.base`).
"""

from __future__ import annotations

import math
from typing import Any, get_args, get_origin

import pytest
from annotated_types import Ge, Gt
from pydantic import BaseModel, ValidationError

from sweeper.config.base import _alternatives, is_numeric
from sweeper.config.cluster import ClusterConfig
from sweeper.config.recipe import Recipe

INF_MEANS_SOMETHING = {"eps_high"}
"""Fields where ``inf`` is a setting: no clip-high (every loss kind's ``eps_high``)."""

NO_LOWER_BOUND = {
    ("ClipCovLoss", "cov_lb"): "a covariance threshold: any real number",
    ("ClipCovLoss", "cov_ub"): "a covariance threshold: any real number",
    ("ConstraintConfig", "min"): "a threshold on any metric's scale",
    ("ConstraintConfig", "max"): "a threshold on any metric's scale",
    ("UniformParam", "low"): "the range of the field it samples, which bounds it",
    ("UniformParam", "high"): "the range of the field it samples, which bounds it",
    ("LogUniformParam", "high"): "above low, which is > 0",
    ("IntParam", "low"): "the range of the field it samples, which bounds it",
    ("IntParam", "high"): "the range of the field it samples, which bounds it",
}

# The smallest valid data of each model that has required fields.
REQUIRED: dict[str, dict[str, Any]] = {
    "Recipe": {"name": "t"},
    "ClusterConfig": {"name": "c", "kind": "local"},
    "FileTask": {"path": "x.jsonl"},
    "UserTask": {"fn": "m:f"},
    "UniformParam": {"low": 0.0, "high": 1.0},
    "LogUniformParam": {"low": 0.1, "high": 1.0},
    "IntParam": {"low": 1, "high": 5},
    "GridParam": {"values": [1]},
    "ChoiceParam": {"values": [1]},
    "ConstraintConfig": {"metric": "entropy", "min_ratio": 0.5},
}

BAD = [True, False, math.inf, -math.inf, math.nan, 2**70]


def _models(tp: Any, seen: dict[str, type[BaseModel]]) -> None:
    for alt in _alternatives(tp):
        if isinstance(alt, type) and issubclass(alt, BaseModel):
            if alt.__name__ in seen:
                continue
            seen[alt.__name__] = alt
            for field in alt.model_fields.values():
                _models(field.annotation, seen)
        elif get_origin(alt) in (list, tuple, dict):
            for arg in get_args(alt):
                _models(arg, seen)


def all_models() -> dict[str, type[BaseModel]]:
    seen: dict[str, type[BaseModel]] = {}
    _models(Recipe, seen)
    _models(ClusterConfig, seen)
    return seen


def numeric_fields() -> list[tuple[type[BaseModel], str]]:
    return [
        (model, name)
        for model in all_models().values()
        for name, field in model.model_fields.items()
        if is_numeric(field.annotation)
    ]


def _refused_at(model: type[BaseModel], data: dict[str, Any], field: str) -> bool:
    try:
        model.model_validate(data)
    except ValidationError as err:
        return any(field in e["loc"] for e in err.errors())
    return False


def test_the_walk_reaches_every_schema() -> None:
    names = set(all_models())
    for expected in ("Recipe", "RLVRJob", "SyntheticJob", "EvalConfig", "TinyPolicyConfig",
                     "PPOClipLoss", "GSPOLoss", "SearchConfig", "PrunerConfig", "ResourcesConfig",
                     "ClusterConfig", "IntParam", "ConstraintConfig", "RandomRewardTask"):  # fmt: skip
        assert expected in names
    assert len(numeric_fields()) > 40


@pytest.mark.parametrize(
    ("model", "field"), numeric_fields(), ids=lambda x: x if isinstance(x, str) else x.__name__
)
def test_numeric_field_is_bounded_finite_and_no_boolean(model: type[BaseModel], field: str) -> None:
    base = REQUIRED.get(model.__name__, {})
    for bad in BAD:
        if bad == math.inf and field in INF_MEANS_SOMETHING:
            assert not _refused_at(model, {**base, field: bad}, field)  # inf is a setting here
            continue
        assert _refused_at(model, {**base, field: bad}, field), f"{field}={bad!r} accepted"
    info = model.model_fields[field]
    bounded = any(isinstance(m, Ge | Gt) for m in info.metadata)
    assert bounded or (model.__name__, field) in NO_LOWER_BOUND, f"{field} has no lower bound"


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        ("SearchConfig", "seeds", [True]),
        ("SearchConfig", "seeds", [2**70]),
        ("EvalConfig", "ks", [True]),
        ("ResourcesConfig", "custom", {"x": True}),
        ("ResourcesConfig", "custom", {"x": math.inf}),
        ("ResourcesConfig", "custom", {"x": -1.0}),
    ],
)
def test_numbers_inside_lists_and_mappings(model: str, field: str, value: Any) -> None:
    assert _refused_at(all_models()[model], {field: value}, field)


def test_good_numbers_still_pass() -> None:
    recipe = Recipe.model_validate(
        {
            "name": "t",
            "job": {
                "kind": "synthetic",
                "steps": 3,
                "step_seconds": 0,
                "loss": {"eps_high": "inf"},
            },
            "search": {"seeds": [0, 2**62]},
            "run": {"resources": {"num_cpus": 1, "custom": {"accel": 0.5}}},
        }
    )
    assert math.isinf(recipe.job.loss.eps_high) and recipe.search.seeds == [0, 2**62]
