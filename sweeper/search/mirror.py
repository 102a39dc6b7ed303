"""A copy of the controller's in-memory study in an SQLAlchemy storage, for people and tools.

The controller never waits on the database: :meth:`StudyMirror.touch` marks trials as changed and
a background thread copies them (batched, about once per :data:`MIRROR_SECONDS`) into the mirror
study of the same name -- trial ``n`` of the mirror is trial ``n`` of the sweep. A trial is
created in the mirror with everything it has (``create_new_trial`` from a template), then, while
the mirror's copy is unfinished, its new params, intermediate values, user attrs and finally its
state and value are pushed; a finished copy is never touched again. So a resumed controller,
whose rebuilt study numbers trials as the sweep did, brings the mirror up to date without
duplicating a trial. A database that is down is retried (a warning, then every
:data:`RETRY_SECONDS`); the sweep runs on. At the end :meth:`close` waits up to
:data:`FLUSH_SECONDS` for the copy to catch up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sweeper.errors import InputError
from sweeper.search.attrs import ATTR_PARAM_KEYS
from sweeper.search.storage import make_storage

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

log = logging.getLogger("sweeper.search")

MIRROR_SECONDS = 1.0
"""The mirror lags the controller by about this much (changes are copied in batches)."""
RETRY_SECONDS = 10.0
"""How often a mirror whose database failed is tried again."""
FLUSH_SECONDS = 30.0
"""At the end of a controller run, how long :meth:`StudyMirror.close` waits for the copy."""


@dataclass
class _Copy:
    """What the mirror holds of one unfinished trial (so only differences are pushed)."""

    trial_id: int
    state: str
    params: set[str]
    intermediate: dict[int, float]
    user_attrs: dict[str, Any]
    fixed: Any


class StudyMirror:
    """Copies trials of an in-memory study into the study ``name`` of an SQLAlchemy storage.

    Args:
        url: the storage's SQLAlchemy URL.
        name, direction, user_attrs: the study (created in the mirror if absent).
        view: the trial ``number`` as the mirror should show it now (None: not to be shown).
        fresh: a new sweep; a mirror study of that name that already holds trials is bad input.
    """

    def __init__(
        self,
        url: str,
        name: str,
        direction: str,
        user_attrs: dict[str, Any],
        view: Callable[[int], FrozenTrial | None],
        fresh: bool,
    ) -> None:
        self.url, self.name, self.direction = url, name, direction
        self.user_attrs, self.view, self.fresh = user_attrs, view, fresh
        self._storage: Any = None
        self._study_id = -1
        self._count = 0  # trials in the mirror study
        self._copies: dict[int, _Copy] = {}  # unfinished trials the mirror holds
        self._dirty: set[int] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._failing_since: float | None = None
        self._thread = threading.Thread(target=self._loop, name="sweeper-mirror", daemon=True)

    # ------------------------------------------------------------------ controller side

    def start(self) -> None:
        """Open the mirror (a study of another sweep, or a direction or space that differs, is
        an ``InputError``; a database that does not answer is a warning, retried) and start
        copying in the background."""
        try:
            self._open()
        except InputError:
            raise
        except Exception as err:  # unreachable: the sweep runs, the thread retries
            self._failed(err)
        self._thread.start()

    def touch(self, *numbers: int) -> None:
        """Trials that changed: copied at the next batch. Never blocks on the database."""
        with self._lock:
            self._dirty.update(numbers)
        self._wake.set()

    def lag(self) -> int:
        """Changed trials not copied yet."""
        with self._lock:
            return len(self._dirty)

    def close(self, timeout: float = FLUSH_SECONDS) -> bool:
        """Copy what is left (waiting up to ``timeout`` s) and release the database; returns
        whether the mirror caught up."""
        self._closing = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        caught_up = not self._thread.is_alive() and self.lag() == 0
        if not caught_up:
            log.warning(
                "optuna mirror %s: %d trial(s) not copied; `sweeper resume` copies them",
                self.url, self.lag(),
            )  # fmt: skip
        if not self._thread.is_alive() and self._storage is not None:
            engine = getattr(self._storage, "engine", None)
            if engine is not None:
                engine.dispose()
        return caught_up

    # ------------------------------------------------------------------ the thread

    def _loop(self) -> None:
        while True:
            self._wake.wait(RETRY_SECONDS if self._failing_since else None)
            if not self._closing:
                time.sleep(MIRROR_SECONDS)  # batch what changes meanwhile
            self._wake.clear()
            with self._lock:
                batch, self._dirty = sorted(self._dirty), set()
            try:
                if self._storage is None:
                    self._open()
                for i, number in enumerate(batch):
                    self._sync(number)
                    batch[i] = -1
                self._failing_since = None
            except Exception as err:  # the database: warn, keep what is left, retry
                with self._lock:
                    self._dirty.update(n for n in batch if n >= 0)
                self._failed(err)
                if self._closing:
                    return
                continue
            if self._closing and self.lag() == 0:
                return

    def _failed(self, err: Exception) -> None:
        if self._failing_since is None:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            log.warning("optuna mirror %s: %s; the sweep goes on, retrying", self.url, first)
            self._failing_since = time.monotonic()

    def _open(self) -> None:
        import optuna

        storage = make_storage(self.url)
        try:
            study_id = storage.get_study_id_from_name(self.name)
        except KeyError:
            direction = optuna.study.StudyDirection[self.direction.upper()]
            study_id = storage.create_new_study([direction], self.name)
        have = storage.get_study_directions(study_id)[0].name.lower()
        if have != self.direction:
            raise InputError(
                f"optuna storage {self.url}: study {self.name!r} exists with direction {have}, "
                f"but objective.mode is {'max' if self.direction == 'maximize' else 'min'}"
            )
        keys = storage.get_study_user_attrs(study_id).get(ATTR_PARAM_KEYS)
        if keys is not None and keys != self.user_attrs.get(ATTR_PARAM_KEYS):
            raise InputError(
                f"optuna storage {self.url}: study {self.name!r} searches {keys}, but the "
                f"recipe's space is {self.user_attrs.get(ATTR_PARAM_KEYS)}: use a new sweep name"
            )
        trials = storage.get_all_trials(study_id, deepcopy=False)
        if self.fresh and trials:
            raise InputError(
                f"optuna storage {self.url}: study {self.name!r} already holds {len(trials)} "
                "trials of another sweep: use a new sweep name (or delete that study)"
            )
        for key, value in self.user_attrs.items():
            storage.set_study_user_attr(study_id, key, value)
        self._copies = {t.number: _copy_of(t) for t in trials if not t.state.is_finished()}
        self._count = len(trials)
        self._storage, self._study_id = storage, study_id

    def _sync(self, number: int) -> None:
        while self._count < number:  # trial numbers are positions: fill the ones below first
            self._create(self._count)
        if number == self._count:
            self._create(number)
            return
        held = self._copies.get(number)
        trial = self.view(number)
        if held is None or trial is None:  # finished in the mirror (or nothing to show)
            return
        self._push(held, trial)
        if trial.state.is_finished():
            del self._copies[number]

    def _create(self, number: int) -> None:
        trial = self.view(number)
        if trial is None:  # e.g. an asked-ahead trial: shown once handed out
            trial = _waiting(number)
        trial_id = self._storage.create_new_trial(self._study_id, template_trial=trial)
        self._count += 1
        if not trial.state.is_finished():
            self._copies[number] = _copy_of(trial, trial_id)

    def _push(self, held: _Copy, trial: FrozenTrial) -> None:
        from optuna.trial import TrialState

        s, tid = self._storage, held.trial_id
        fixed = trial.system_attrs.get("fixed_params")
        if fixed != held.fixed and fixed is not None:
            s.set_trial_system_attr(tid, "fixed_params", fixed)
            held.fixed = fixed
        if trial.state == TrialState.RUNNING and held.state == "WAITING":
            s.set_trial_state_values(tid, TrialState.RUNNING)
            held.state = "RUNNING"
        for key in trial.params.keys() - held.params:
            dist = trial.distributions[key]
            s.set_trial_param(tid, key, dist.to_internal_repr(trial.params[key]), dist)
            held.params.add(key)
        for step, value in trial.intermediate_values.items():
            if held.intermediate.get(step) != value:
                s.set_trial_intermediate_value(tid, step, value)
                held.intermediate[step] = value
        for key, value in trial.user_attrs.items():
            if key not in held.user_attrs or held.user_attrs[key] != value:
                s.set_trial_user_attr(tid, key, value)
                held.user_attrs[key] = value
        if trial.state.is_finished():
            if held.state == "WAITING":  # finished without running here: RUNNING first
                s.set_trial_state_values(tid, TrialState.RUNNING)
            s.set_trial_state_values(tid, trial.state, trial.values)
            held.state = trial.state.name


def _copy_of(trial: FrozenTrial, trial_id: int | None = None) -> _Copy:
    return _Copy(
        trial._trial_id if trial_id is None else trial_id,
        trial.state.name,
        set(trial.params),
        dict(trial.intermediate_values),
        dict(trial.user_attrs),
        trial.system_attrs.get("fixed_params"),
    )


def _waiting(number: int) -> FrozenTrial:
    from optuna.trial import FrozenTrial, TrialState

    return FrozenTrial(
        number=number, state=TrialState.WAITING, value=None, datetime_start=None,
        datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
        intermediate_values={}, trial_id=-1,
    )  # fmt: skip
