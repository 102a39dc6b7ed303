"""Where a sweep's Optuna study is mirrored: the URL, and an Optuna RDB storage for it.

The controller's study lives in memory and is rebuilt from the sweep dir on resume (see
:mod:`.rebuild`); an SQLAlchemy storage only mirrors it for people and tools (optuna-dashboard,
see :mod:`.mirror`): ``run.optuna_storage`` when set, else ``optuna.db`` in a local sweep dir,
none for a remote sweep dir without ``run.optuna_storage``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from sweeper.errors import InputError
from sweeper.store import SweepStore

if TYPE_CHECKING:
    import optuna

    from sweeper.config.recipe import Recipe


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
