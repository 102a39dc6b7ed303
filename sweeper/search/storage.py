"""Where a sweep's Optuna study is mirrored: the URL, and an Optuna RDB storage for it.

The controller's study lives in memory and is rebuilt from the sweep dir on resume (see
:mod:`.rebuild`); an SQLAlchemy storage only mirrors it for people and tools (optuna-dashboard,
see :mod:`.mirror`): ``run.optuna_storage`` when set, else ``optuna.db`` in a local sweep dir,
none for a remote sweep dir without ``run.optuna_storage``.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Literal

from sweeper.errors import InputError
from sweeper.search.attrs import ATTR_PARAM_KEYS, ATTR_SEARCH
from sweeper.search.pruners import make_pruner
from sweeper.search.samplers import make_sampler
from sweeper.store import SweepStore

if TYPE_CHECKING:
    import optuna

    from sweeper.config.recipe import Recipe


def direction(recipe: Recipe) -> Literal["maximize", "minimize"]:
    """The study direction of ``objective.mode``."""
    return "maximize" if recipe.objective.mode == "max" else "minimize"


def memory_study(recipe: Recipe, trials: list[Any]) -> optuna.Study:
    """A new in-memory study holding ``trials`` (FrozenTrials numbered 0..n-1, e.g. rebuilt),
    its sampler seeded for that many trials, the sweeper study attrs set."""
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    study = optuna.create_study(
        study_name=recipe.name,
        direction=direction(recipe),
        sampler=make_sampler(recipe.search, len(trials)),
        pruner=make_pruner(recipe.search.pruner, recipe.job.steps),
    )
    for t in trials:
        study._storage.create_new_trial(study._study_id, template_trial=t)
    study.set_user_attr(ATTR_SEARCH, recipe.search.kind)
    study.set_user_attr(ATTR_PARAM_KEYS, recipe.param_keys())
    return study


def load_study(recipe: Recipe, url: str, name: str) -> optuna.Study:
    """The study ``name`` in the storage at ``url``, created if absent; one whose direction or
    searched keys differ from the recipe's is an ``InputError``."""
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    study = optuna.create_study(
        storage=make_storage(url),
        study_name=name,
        direction=direction(recipe),
        sampler=make_sampler(recipe.search),
        pruner=make_pruner(recipe.search.pruner, recipe.job.steps),
        load_if_exists=True,
    )
    if study.direction.name.lower() != direction(recipe):
        raise InputError(
            f"study {name!r} in {url} exists with direction "
            f"{study.direction.name.lower()}, but objective.mode is {recipe.objective.mode}"
        )
    keys = study.user_attrs.get(ATTR_PARAM_KEYS)
    if keys is not None and keys != recipe.param_keys():
        raise InputError(
            f"study {name!r} in {url} searches {keys}, but the recipe's space "
            f"is {recipe.param_keys()}: use a new sweep name"
        )
    if keys is None:
        study.set_user_attr(ATTR_SEARCH, recipe.search.kind)
        study.set_user_attr(ATTR_PARAM_KEYS, recipe.param_keys())
    return study


def storage_url(recipe: Recipe, store: SweepStore) -> str | None:
    """The SQLAlchemy URL of the study's mirror: ``run.optuna_storage`` when set, else the
    SQLite file of a local sweep dir, else None (a remote sweep dir needs no database: the study
    is rebuilt from the sweep dir). ``store`` need not exist yet."""
    if recipe.run.optuna_storage:
        return recipe.run.optuna_storage
    path = store.optuna_sqlite_path()
    return None if path is None else f"sqlite:///{path}"


def default_storage_url(sweep_dir: str) -> str:
    """``sqlite:///<sweep_dir>/optuna.db`` (absolute), for a local sweep dir."""
    return f"sqlite:///{SweepStore(sweep_dir).optuna_sqlite_path()}"


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna RDB storage for an SQLAlchemy URL (a bare path means an SQLite file there).

    SQLite gets a long busy timeout (the dashboard may read while the mirror writes); server
    databases get ``pool_pre_ping`` so a connection dropped overnight is replaced."""
    import optuna

    if "://" not in url:
        url = "sqlite:///" + os.path.abspath(url)
    engine_kwargs: dict[str, Any]
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as err:  # bad URL, missing driver, unreachable server
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"optuna storage {url!r}: {first}") from None
