"""The sweep's Optuna study, driven by ask / report / tell by trial number (DESIGN §4).

Both search kinds go through the same study, so resume and ``optuna-dashboard <storage>`` work
for both:

- ``grid``: every grid point is enqueued once when the study is created (a study user attr
  records it, so a resumed controller does not enqueue again); ``ask`` hands them out in grid
  order and returns None when none is left;
- ``optuna``: the configured sampler proposes points until ``n_trials`` trials have been asked
  (COMPLETE, PRUNED, FAIL and RUNNING trials count; a trial failed by :meth:`Search.recover`
  does not, its rerun does).

Trial state lives in the study's storage (an SQLAlchemy URL; by default an SQLite file in the
sweep dir), so a controller killed at any moment resumes from it: :meth:`Search.recover` marks
trials it left RUNNING as FAIL and enqueues their params again.

Optuna is imported lazily: ``import sweeper.search`` stays cheap and torch-free. (The ``gp``
sampler makes Optuna import torch and scipy, ``qmc`` needs scipy, ``cmaes`` the ``cmaes``
package; a missing one is an ``InputError`` naming it.)
"""

from __future__ import annotations

import logging
import math
import os
from typing import TYPE_CHECKING, Any, Literal

from sweeper.config.space import expand_grid
from sweeper.errors import InputError
from sweeper.search.distributions import suggest
from sweeper.search.pruners import make_pruner
from sweeper.search.samplers import make_sampler
from sweeper.store import SweepStore

if TYPE_CHECKING:
    import optuna

    from sweeper.config.recipe import Recipe

TellState = Literal["COMPLETE", "PRUNED", "FAIL"]

# Study / trial user attributes sweeper writes (visible in optuna-dashboard).
ATTR_GRID_ENQUEUED = "sweeper_grid_enqueued"
ATTR_SEARCH = "sweeper_search"
ATTR_PARAM_KEYS = "sweeper_param_keys"
ATTR_RECOVERED = "sweeper_recovered"
ATTR_RERUN_OF = "sweeper_rerun_of"
ATTR_ERROR = "error"
ATTR_PRUNED_VALUE = "sweeper_value_at_prune"


def storage_url(recipe: Recipe, store: SweepStore) -> str:
    """The study's SQLAlchemy URL: ``run.optuna_storage`` when set, else the SQLite file of a
    local sweep dir. ``InputError`` for a remote sweep dir without ``run.optuna_storage``
    (SQLite needs a real file system). ``store`` need not exist yet."""
    if recipe.run.optuna_storage:
        return recipe.run.optuna_storage
    path = store.optuna_sqlite_path()
    if path is None:
        raise InputError(
            f"storage {store.uri}: a remote sweep dir needs run.optuna_storage (an SQLAlchemy "
            "URL, e.g. postgresql://... or sqlite:////shared/disk/optuna.db)"
        )
    return f"sqlite:///{path}"


def default_storage_url(sweep_dir: str) -> str:
    """``sqlite:///<sweep_dir>/optuna.db`` (absolute), for a local sweep dir."""
    return f"sqlite:///{SweepStore(sweep_dir).optuna_sqlite_path()}"


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna RDB storage for an SQLAlchemy URL (a bare path means an SQLite file there).

    SQLite gets a long busy timeout (the dashboard may read while the controller writes);
    server databases get ``pool_pre_ping`` so a connection dropped overnight is replaced."""
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


def _point_key(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


class Search:
    """One sweep's search state: an Optuna study with ask / report / tell by trial number.

    Only the controller touches it (one process at a time). Parameter names in the study are
    the recipe's dotted keys (``loss.eps_low``)."""

    def __init__(self, recipe: Recipe, study: optuna.Study) -> None:
        self.recipe = recipe
        self.study = study
        # Trial handles asked in this process (report needs one; others are rebuilt by id).
        self._asked: dict[int, optuna.trial.Trial] = {}

    # ------------------------------------------------------------------ set-up

    @classmethod
    def create_or_load(cls, recipe: Recipe, storage_url: str, study_name: str) -> Search:
        """Create the study ``study_name`` in ``storage_url`` or load it if it exists (resume).

        A grid's points are enqueued once per study: on creation, or on a load that finds the
        enqueue unfinished (a controller killed while enqueueing), only the missing points."""
        import optuna

        optuna.logging.set_verbosity(logging.WARNING)
        storage = make_storage(storage_url)
        direction: Literal["maximize", "minimize"] = (
            "maximize" if recipe.objective.mode == "max" else "minimize"
        )
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            direction=direction,
            sampler=make_sampler(recipe.search),
            pruner=make_pruner(recipe.search.pruner, recipe.job.steps),
            load_if_exists=True,
        )
        if study.direction.name.lower() != direction:
            raise InputError(
                f"study {study_name!r} in {storage_url} exists with direction "
                f"{study.direction.name.lower()}, but objective.mode is {recipe.objective.mode}"
            )
        keys = study.user_attrs.get(ATTR_PARAM_KEYS)
        if keys is not None and keys != recipe.param_keys():
            raise InputError(
                f"study {study_name!r} in {storage_url} searches {keys}, but the recipe's space "
                f"is {recipe.param_keys()}: use a new sweep name"
            )
        if keys is None:
            study.set_user_attr(ATTR_SEARCH, recipe.search.kind)
            study.set_user_attr(ATTR_PARAM_KEYS, recipe.param_keys())
        search = cls(recipe, study)
        if recipe.search.kind == "grid" and not study.user_attrs.get(ATTR_GRID_ENQUEUED):
            search._enqueue_grid()
        return search

    def _enqueue_grid(self) -> None:
        seen = set()
        for t in self.study.get_trials(deepcopy=False):
            fixed = t.system_attrs.get("fixed_params") or {}
            seen.add(_point_key({**fixed, **t.params}))
        for point in expand_grid(self.recipe.space):
            if _point_key(point) not in seen:
                self.study.enqueue_trial(point)
        self.study.set_user_attr(ATTR_GRID_ENQUEUED, True)

    def close(self) -> None:
        """Release the storage's database connections (the study stays on disk)."""
        engine = getattr(self.study._storage, "engine", None)
        if engine is not None:
            engine.dispose()

    # ------------------------------------------------------------------ ask / report / tell

    def _states(self, *names: str) -> list[optuna.trial.FrozenTrial]:
        from optuna.trial import TrialState

        return self.study.get_trials(deepcopy=False, states=tuple(TrialState[n] for n in names))

    def n_counted(self) -> int:
        """Trials that count towards ``n_trials``: COMPLETE, PRUNED, RUNNING and FAIL, except
        the FAIL marks :meth:`recover` leaves (their reruns count instead)."""
        counted = self._states("COMPLETE", "PRUNED", "RUNNING")
        failed = [t for t in self._states("FAIL") if ATTR_RECOVERED not in t.user_attrs]
        return len(counted) + len(failed)

    def ask(self) -> tuple[int, dict[str, Any]] | None:
        """The next trial: (trial number, params by dotted key), or None when the search is
        exhausted (grid: no enqueued point left; optuna: ``n_trials`` reached). Enqueued trials
        (grid points, reruns from :meth:`recover`) always come first."""
        if not self._states("WAITING"):
            if self.recipe.search.kind == "grid":
                return None
            if self.n_counted() >= int(self.recipe.search.n_trials or 0):
                return None
        trial = self.study.ask()
        grid = self.recipe.search.kind == "grid"
        params = {key: suggest(trial, key, spec, grid) for key, spec in self.recipe.space.items()}
        self._asked[trial.number] = trial
        return trial.number, params

    def _trial_id(self, number: int) -> int:
        # Optuna addresses trials by id internally; numbers are per study.
        return self.study._storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, number
        )

    def _trial(self, number: int) -> optuna.trial.Trial:
        import optuna

        if number not in self._asked:
            self._asked[number] = optuna.trial.Trial(self.study, self._trial_id(number))
        return self._asked[number]

    def report(self, trial_number: int, step: int, value: float) -> bool:
        """Report an intermediate objective value (aggregated over the trial's seeds) at a
        training step; returns True when the pruner says to stop the trial. Non-finite values
        are not reported (they would poison the median); a trial already finished returns True
        if it was pruned, else False."""
        from optuna.trial import TrialState

        frozen = self.study._storage.get_trial(self._trial_id(trial_number))
        if frozen.state.is_finished():
            return frozen.state == TrialState.PRUNED
        if value is None or not math.isfinite(value):
            return False
        trial = self._trial(trial_number)
        if step not in frozen.intermediate_values:
            trial.report(float(value), int(step))
        return bool(trial.should_prune())

    def tell(
        self,
        trial_number: int,
        value: float | None,
        state: TellState = "COMPLETE",
        error: str | None = None,
    ) -> None:
        """Finish a trial. ``COMPLETE`` needs a number (None or NaN turns it into ``FAIL`` with
        an ``error`` user attr, as Optuna would); ``PRUNED`` takes Optuna's last intermediate
        value as the trial's value (a ``value`` given is kept in a user attr); ``FAIL`` records
        ``error``. Telling a finished trial again does nothing."""
        from optuna.trial import TrialState

        if state not in ("COMPLETE", "PRUNED", "FAIL"):
            raise ValueError(f"state must be COMPLETE, PRUNED or FAIL, not {state!r}")
        frozen = self.study._storage.get_trial(self._trial_id(trial_number))
        if frozen.state.is_finished():
            return
        trial_id = frozen._trial_id
        if state == "COMPLETE" and (value is None or math.isnan(value)):
            state = "FAIL"
            error = error or f"objective is not a number ({value})"
        if error:
            self.study._storage.set_trial_user_attr(trial_id, ATTR_ERROR, str(error))
        if state == "PRUNED" and value is not None and math.isfinite(value):
            self.study._storage.set_trial_user_attr(trial_id, ATTR_PRUNED_VALUE, float(value))
        self.study.tell(
            trial_number,
            float(value) if state == "COMPLETE" and value is not None else None,
            state=TrialState[state],
            skip_if_finished=True,
        )
        self._asked.pop(trial_number, None)

    def set_user_attr(self, trial_number: int, key: str, value: Any) -> None:
        """Attach a JSON-able attribute to a trial (shown by optuna-dashboard)."""
        self.study._storage.set_trial_user_attr(self._trial_id(trial_number), key, value)

    # ------------------------------------------------------------------ resume

    def recover(self, reason: str = "controller stopped while the trial ran") -> list[int]:
        """After a controller restart: mark every RUNNING trial FAIL (user attrs
        ``sweeper_recovered`` and ``error`` = ``reason``) and enqueue its params again (user attr
        ``sweeper_rerun_of``), so it runs again under a new trial number. Returns the numbers of
        the trials marked FAIL."""
        from optuna.trial import TrialState

        recovered = []
        for t in self._states("RUNNING"):
            params = {**(t.system_attrs.get("fixed_params") or {}), **t.params}
            self.study._storage.set_trial_user_attr(t._trial_id, ATTR_RECOVERED, reason)
            self.study._storage.set_trial_user_attr(t._trial_id, ATTR_ERROR, reason)
            self.study.tell(t.number, None, state=TrialState.FAIL, skip_if_finished=True)
            self.study.enqueue_trial(params, user_attrs={ATTR_RERUN_OF: t.number})
            self._asked.pop(t.number, None)
            recovered.append(t.number)
        return recovered

    # ------------------------------------------------------------------ views

    def trials(self) -> list[dict[str, Any]]:
        """Every trial: number, state (Optuna's name), params (dotted keys), value,
        datetime_start, datetime_complete, intermediate_values ({step: value}), user_attrs.
        WAITING trials (enqueued, not yet asked) are included with their fixed params."""
        rows = []
        for t in self.study.get_trials(deepcopy=False):
            params = {**(t.system_attrs.get("fixed_params") or {}), **t.params}
            rows.append(
                {
                    "number": t.number,
                    "state": t.state.name,
                    "params": params,
                    "value": t.value,
                    "datetime_start": t.datetime_start,
                    "datetime_complete": t.datetime_complete,
                    "intermediate_values": dict(t.intermediate_values),
                    "user_attrs": dict(t.user_attrs),
                }
            )
        return rows

    def remaining(self) -> int:
        """Trials still to ask (grid: enqueued points left; optuna: n_trials minus counted)."""
        waiting = len(self._states("WAITING"))
        if self.recipe.search.kind == "grid":
            return waiting
        # Reruns waiting are inside the budget (their FAIL marks do not count).
        return max(int(self.recipe.search.n_trials or 0) - self.n_counted(), waiting)
