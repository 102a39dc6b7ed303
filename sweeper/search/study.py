"""The sweep's Optuna study, driven by ask / report / tell by trial number (DESIGN §4).

Both search kinds go through the same study, so resume and optuna-dashboard work for both:

- ``grid``: every grid point is enqueued once when the study is created (a study user attr
  records it); ``ask`` hands them out in grid order and returns None when none is left;
- ``optuna``: the configured sampler proposes points until ``n_trials`` trials have been asked
  (COMPLETE, PRUNED, FAIL and RUNNING trials count; a trial failed by :meth:`Search.recover`
  does not, its rerun does).

The controller's study (:meth:`Search.for_sweep`) lives in memory (Optuna's thread-safe
``InMemoryStorage``: fast ask/tell, no locks to wait on); on resume it is rebuilt from the sweep
dir alone (:mod:`.rebuild`), so no database is needed to run or resume a sweep, on s3:// too.
An SQLAlchemy storage -- ``optuna.db`` in a local sweep dir, or ``run.optuna_storage`` -- is a
mirror of it for people and tools, copied in the background (:mod:`.mirror`).
:meth:`Search.create_or_load` drives a study kept in any Optuna storage instead (tests, tools).

Ask-ahead (the controller's study): right after a trial is handed out, a background thread asks
the next one (within ``n_trials``), so the controller does not wait for the sampler, whose ask
time grows with the study (bench/README.md). The asked-ahead trial is RUNNING in the in-memory
study but shown WAITING in the mirror until handed out; it is sampled without the results that
arrive while it waits (as if one more trial were running). A controller that ends forgets it.

Optuna is imported lazily: ``import sweeper.search`` stays cheap and torch-free. (The ``gp``
sampler makes Optuna import torch and scipy, ``qmc`` needs scipy, ``cmaes`` the ``cmaes``
package; a missing one is an ``InputError`` naming it.)
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

from sweeper.config.space import expand_grid
from sweeper.search.attrs import (
    ATTR_ERROR,
    ATTR_GRID_ENQUEUED,
    ATTR_PRUNED_VALUE,
    ATTR_RECOVERED,
    ATTR_RERUN_OF,
)
from sweeper.search.distributions import suggest
from sweeper.search.mirror import StudyMirror
from sweeper.search.rebuild import RERUN_REASON, rebuild_trials
from sweeper.search.storage import direction, load_study, memory_study, storage_url

if TYPE_CHECKING:
    import optuna

    from sweeper.config.recipe import Recipe
    from sweeper.store import SweepStore

TellState = Literal["COMPLETE", "PRUNED", "FAIL"]
Asked = tuple["optuna.trial.Trial", dict[str, Any]]


def _point_key(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


class Search:
    """One sweep's search state: an Optuna study with ask / report / tell by trial number.

    Only the controller drives it (one process at a time; ask, report and tell from one thread,
    the ask-ahead and mirror threads beside it). Parameter names in the study are the recipe's
    dotted keys (``loss.eps_low``)."""

    def __init__(self, recipe: Recipe, study: optuna.Study, ask_ahead: bool = False) -> None:
        from optuna.trial import Trial, TrialState

        self.recipe = recipe
        self.study = study
        self.mirror: StudyMirror | None = None
        self._ask_ahead = ask_ahead
        self._pool: ThreadPoolExecutor | None = None
        self._next: Future[Asked] | None = None  # the asked-ahead trial
        # Trials handed out and unfinished (report needs a handle); what they count, at load.
        self._asked: dict[int, optuna.trial.Trial] = {}
        self._counted = self._waiting = 0
        for t in study.get_trials(deepcopy=False):
            if t.state == TrialState.WAITING:
                self._waiting += 1
            elif t.state != TrialState.FAIL or ATTR_RECOVERED not in t.user_attrs:
                self._counted += 1
            if t.state == TrialState.RUNNING:
                self._asked[t.number] = Trial(study, t._trial_id)

    # ------------------------------------------------------------------ set-up

    @classmethod
    def for_sweep(cls, recipe: Recipe, store: SweepStore, resume: bool = False) -> Search:
        """The controller's study: in memory, with ask-ahead; on ``resume`` rebuilt from the
        sweep dir (:func:`~sweeper.search.rebuild.rebuild_trials`). Mirrored into
        :func:`~sweeper.search.storage.storage_url` when there is one (a mirror study that
        belongs to another sweep, or differs in direction or space, is an ``InputError``)."""
        study = memory_study(recipe, rebuild_trials(recipe, store) if resume else [])
        search = cls(recipe, study, ask_ahead=True)
        if recipe.search.kind == "grid" and not resume:
            search._enqueue_grid()
        elif recipe.search.kind == "grid":  # the rebuild holds the points still to hand out
            study.set_user_attr(ATTR_GRID_ENQUEUED, True)
        url = storage_url(recipe, store)
        if url is not None:
            search.mirror = StudyMirror(
                url, recipe.name, direction(recipe), dict(study.user_attrs),
                search._mirror_view, fresh=not resume,
            )  # fmt: skip
            search.mirror.start()
            search._touch(*range(len(study.get_trials(deepcopy=False))))
        return search

    @classmethod
    def create_or_load(cls, recipe: Recipe, storage_url: str, study_name: str) -> Search:
        """A study kept in the Optuna storage ``storage_url`` (no ask-ahead, no mirror):
        created, or loaded if it exists. A grid's points are enqueued once per study: on
        creation, or on a load that finds the enqueue unfinished, only the missing points."""
        search = cls(recipe, load_study(recipe, storage_url, study_name))
        if recipe.search.kind == "grid" and not search.study.user_attrs.get(ATTR_GRID_ENQUEUED):
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
                self._waiting += 1
        self.study.set_user_attr(ATTR_GRID_ENQUEUED, True)

    def close(self) -> None:
        """Stop asking ahead, let the mirror catch up (see :meth:`StudyMirror.close`) and
        release database connections."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self.mirror is not None:
            self.mirror.close()
        engine = getattr(self.study._storage, "engine", None)
        if engine is not None:
            engine.dispose()

    # ------------------------------------------------------------------ ask / report / tell

    def _states(self, *names: str) -> list[optuna.trial.FrozenTrial]:
        from optuna.trial import TrialState

        return self.study.get_trials(deepcopy=False, states=tuple(TrialState[n] for n in names))

    def n_counted(self) -> int:
        """Trials that count towards ``n_trials``: COMPLETE, PRUNED, FAIL and RUNNING handed out,
        except the FAIL marks :meth:`recover` leaves (their reruns count instead)."""
        return self._counted

    def ask(self) -> tuple[int, dict[str, Any]] | None:
        """The next trial: (trial number, params by dotted key), or None when the search is
        exhausted (grid: no enqueued point left; optuna: ``n_trials`` reached). Enqueued trials
        (grid points, reruns from :meth:`recover`) always come first. With ask-ahead this
        returns the trial asked in the background (waiting for it if it is not ready) and starts
        asking the next."""
        if self._next is None:
            self._next = self._reserve()
        if self._next is None:
            return None
        trial, params = self._next.result()
        self._next = None
        self._asked[trial.number] = trial
        self._counted += 1
        self._touch(trial.number)
        if self._ask_ahead:
            self._next = self._reserve()
        return trial.number, params

    def _reserve(self) -> Future[Asked] | None:
        """Start asking one trial, if the search has one left (the budget is taken here)."""
        if self._waiting > 0:
            self._waiting -= 1  # Optuna hands out an enqueued trial first
        elif self.recipe.search.kind == "grid" or self._counted >= int(
            self.recipe.search.n_trials or 0
        ):
            return None  # grid: nothing enqueued left; optuna: the budget is spent
        if not self._ask_ahead:
            done: Future[Asked] = Future()
            done.set_result(self._ask_now())
            return done
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="sweeper-ask")
        return self._pool.submit(self._ask_now)

    def _ask_now(self) -> Asked:
        trial = self.study.ask()
        grid = self.recipe.search.kind == "grid"
        params = {key: suggest(trial, key, spec, grid) for key, spec in self.recipe.space.items()}
        return trial, params

    def _trial_id(self, number: int) -> int:
        # Optuna addresses trials by id internally; numbers are per study.
        return self.study._storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, number
        )

    def _trial(self, number: int) -> optuna.trial.Trial:
        import optuna

        if number not in self._asked:
            return optuna.trial.Trial(self.study, self._trial_id(number))
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
            self._touch(trial_number)
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
        self._touch(trial_number)

    def set_user_attr(self, trial_number: int, key: str, value: Any) -> None:
        """Attach a JSON-able attribute to a trial (shown by optuna-dashboard)."""
        self.study._storage.set_trial_user_attr(self._trial_id(trial_number), key, value)
        self._touch(trial_number)

    # ------------------------------------------------------------------ resume

    def recover(self, reason: str = RERUN_REASON) -> list[int]:
        """After a controller restart (before the first ask): mark every RUNNING trial FAIL
        (user attrs ``sweeper_recovered`` and ``error`` = ``reason``) and enqueue its params
        again (user attr ``sweeper_rerun_of``), so it runs again under a new trial number.
        Returns the numbers of the trials marked FAIL."""
        from optuna.trial import TrialState

        if self._next is not None:
            raise RuntimeError("recover() must come before the first ask()")
        before = len(self.study.get_trials(deepcopy=False))
        recovered = []
        for t in self._states("RUNNING"):
            params = {**(t.system_attrs.get("fixed_params") or {}), **t.params}
            self.study._storage.set_trial_user_attr(t._trial_id, ATTR_RECOVERED, reason)
            self.study._storage.set_trial_user_attr(t._trial_id, ATTR_ERROR, reason)
            self.study.tell(t.number, None, state=TrialState.FAIL, skip_if_finished=True)
            self.study.enqueue_trial(params, user_attrs={ATTR_RERUN_OF: t.number})
            self._asked.pop(t.number, None)
            self._counted -= 1
            self._waiting += 1
            recovered.append(t.number)
        self._touch(*recovered, *range(before, len(self.study.get_trials(deepcopy=False))))
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
        """Trials still to hand out (grid: enqueued points left; optuna: n_trials minus
        counted, or the enqueued reruns if more); the asked-ahead trial is among them."""
        ahead = self._waiting + (self._next is not None)
        if self.recipe.search.kind == "grid":
            return ahead
        # Reruns waiting are inside the budget (their FAIL marks do not count).
        return max(int(self.recipe.search.n_trials or 0) - self._counted, ahead)

    def _touch(self, *numbers: int) -> None:
        if self.mirror is not None and numbers:
            self.mirror.touch(*numbers)

    def _mirror_view(self, number: int) -> optuna.trial.FrozenTrial | None:
        """Trial ``number`` as the mirror shows it: an asked-ahead trial not handed out yet is
        WAITING (with the fixed params it was enqueued with, if any)."""
        from optuna.trial import FrozenTrial, TrialState

        try:
            trial = self.study._storage.get_trial(self._trial_id(number))
        except KeyError:
            return None
        if trial.state != TrialState.RUNNING or number in self._asked:
            return trial
        return FrozenTrial(
            number=number, state=TrialState.WAITING, value=None, datetime_start=None,
            datetime_complete=None, params={}, distributions={}, user_attrs={},
            system_attrs={k: v for k, v in trial.system_attrs.items() if k == "fixed_params"},
            intermediate_values={}, trial_id=-1,
        )  # fmt: skip
