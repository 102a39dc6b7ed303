"""Racing over seeds: spend seeds where the ranking is close (``search.racing``).

Pure decisions, torch- and Ray-free: :meth:`SeedRace.decide` takes every config's seed results
so far and says which configs get more seeds now, which are dropped, and whose race ends, with
the seed aggregate to tell the Optuna sampler. The controller calls it after each finished seed;
``bench/racing.py`` calls the same code over the synthetic job.

The rule: successive elimination against the leader (as irace's ``t-test-holm`` race,
López-Ibáñez et al. 2016, with seeds in place of instances)
    1. Every config first gets ``min_seeds`` seeds (the warm-up).
    2. The *leader* is the config with the best seed aggregate among those with at least
       ``min_seeds`` measured seeds that were not dropped (ties: more seeds, then lower trial).
    3. Each other such config is tested against the leader: the one-sided p-value that the
       leader is better (:func:`sweeper.stats.gap_p_value`: Welch's t-test on the seed values,
       Yuen's 25%-trimmed version for ``seed_agg`` iqm / median). The p-values are
       Holm-corrected over the configs compared at that moment; a config rejected at level
       ``1 - confidence`` is **dropped** ("confidently worse than the leader") and gets no more
       seeds.
    4. Every other config still racing is a *contender* and gets one more seed once its
       running seeds have finished, until it has ``max_seeds``: its race then ends with reason
       ``max_seeds``. The leader is a contender too while some rival is not rejected.
    5. The leader's race ends with reason ``separated`` when every config it was compared
       with is rejected in step 3, no config is still in its warm-up, and its own seeds have
       finished -- and, while the search may still add configs, only if it had a rival at all
       (a lone leader waits for one; the controller asks the search for configs, warm-ups
       first, whenever none is warming up).
    A race that ended stays ended (the sampler was told its value); later configs race
    against its seeds. Seeds that measured nothing (NaN) count against ``max_seeds`` but not
    as values. Decisions are deterministic given the inputs (configs are taken in trial order).

Statistics and multiple comparisons
    Welch's test holds from 2 seeds per side for roughly normal seed values; with 2 seeds it
    drops only configs far behind (its t quantile on ~1-2 degrees of freedom is large), which
    is what makes a small ``min_seeds`` safe. The test is one-sided ("is the leader better?")
    and the family of a decision -- the leader against each of the m other configs -- is
    Holm-corrected. Three things are *not* corrected, as in irace: the leader is the observed
    best (with two configs that alone doubles the chance of dropping an equal one, and with
    more its lead over the others is inflated further), the race tests again after every seed
    (sequential looks without alpha spending), and a dropped config's race is not reopened. So
    ``confidence`` is a per-test level, not a guarantee about the true best; ``bench/racing.py``
    measures what the rule achieves: how often racing's final #1 is the true best, against fixed
    seed counts, on the synthetic landscape with known truth. (The ranking's verdict, in
    contrast, is a single two-sided test: ``sweeper.stats.separation``.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from sweeper.config.racing import RacingConfig
from sweeper.stats import Mode, aggregate, finite, gap_p_value

EndReason = Literal["dropped", "separated", "max_seeds"]
END_REASONS: tuple[EndReason, ...] = ("dropped", "separated", "max_seeds")


@dataclass(frozen=True)
class ConfigSeeds:
    """One config's seeds so far: the input of :meth:`SeedRace.decide`."""

    trial: int
    values: tuple[float, ...] = ()
    """The objective of each finished seed (in seed order; NaN = measured nothing)."""
    running: int = 0
    """Seeds launched and not finished."""
    ended: EndReason | None = None
    """Why its race ended in an earlier decision; None while it races."""

    @property
    def spent(self) -> int:
        """Seeds finished or running (what counts against ``max_seeds``)."""
        return len(self.values) + self.running

    @property
    def n_measured(self) -> int:
        """Finished seeds with a finite value."""
        return int(finite(self.values).size)


@dataclass(frozen=True)
class RaceEnd:
    """A config whose race ends with this decision."""

    trial: int
    reason: EndReason
    value: float
    """The seed aggregate (``objective.seed_agg``) to tell the sampler; NaN if none measured."""
    n_seeds: int
    """Measured seeds the value rests on."""
    p_value: float
    """One-sided p-value that the leader is better (NaN for the leader, or when not compared)."""


@dataclass(frozen=True)
class RaceDecision:
    """What to do now: the output of :meth:`SeedRace.decide`."""

    leader: int | None
    """The trial with the best seed aggregate among those compared (None before any is)."""
    launch: tuple[tuple[int, int], ...]
    """``(trial, seeds to start now)`` in priority order: warm-ups (by trial), then the
    leader, then the other contenders, closest to the leader first."""
    ended: tuple[RaceEnd, ...]
    """Races that end now, in trial order."""
    p_values: Mapping[int, float] = field(default_factory=dict)
    """Each compared config's one-sided p-value against the leader (before correction)."""

    @property
    def dropped(self) -> tuple[int, ...]:
        """Trials dropped by this decision."""
        return tuple(e.trial for e in self.ended if e.reason == "dropped")

    def seeds_for(self, trial: int) -> int:
        """Seeds to start now for ``trial`` (0 if none)."""
        return sum(n for t, n in self.launch if t == trial)


def holm_rejections(p_values: Mapping[int, float], alpha: float) -> set[int]:
    """The keys whose hypotheses Holm's step-down procedure rejects at family level ``alpha``:
    sorted ascending, ``p_(i) <= alpha / (m - i)`` (i from 0) until the first that fails.
    NaN p-values are never rejected (and still count in m)."""
    m = len(p_values)
    order = sorted(
        p_values, key=lambda k: (math.inf if math.isnan(p_values[k]) else p_values[k], k)
    )
    rejected: set[int] = set()
    for i, key in enumerate(order):
        if not p_values[key] <= alpha / (m - i):  # also stops at NaN
            break
        rejected.add(key)
    return rejected


class SeedRace:
    """The racing rule of the module docstring for one objective (``mode``, ``seed_agg``)."""

    def __init__(self, racing: RacingConfig, mode: Mode = "max", agg: str = "mean") -> None:
        self.racing = racing
        self.mode: Mode = mode
        self.agg = agg

    def _key(self, c: ConfigSeeds) -> tuple[float, int, int]:
        # Sort key: best aggregate first, then more measured seeds, then lower trial id.
        value = aggregate(c.values, self.agg)
        return (-value if self.mode == "max" else value, -c.n_measured, c.trial)

    def decide(self, configs: Iterable[ConfigSeeds], more_to_come: bool = False) -> RaceDecision:
        """The decision for the seed results so far (module docstring); pure and
        deterministic. ``configs`` holds every config of the sweep seen so far, once each;
        ``more_to_come``: the search may still add configs, so a leader without a rival waits
        for one instead of ending separated."""
        cfg = self.racing
        by_trial = sorted(configs, key=lambda c: c.trial)
        if len({c.trial for c in by_trial}) != len(by_trial):
            raise ValueError("each trial must appear once in a racing decision")
        alpha = 1.0 - cfg.confidence

        compared = [c for c in by_trial if c.ended != "dropped" and c.n_measured >= cfg.min_seeds]
        leader = min(compared, key=self._key) if compared else None
        rivals = [c for c in compared if c is not leader]
        lead = np.asarray(leader.values if leader else (), dtype="float64")
        p_values = {c.trial: gap_p_value(lead, c.values, self.agg, self.mode) for c in rivals}
        rejected = holm_rejections(p_values, alpha)
        # The leader needs more seeds only while some rival is not (yet) confidently worse.
        contested = any(c.trial not in rejected for c in rivals)
        warming = any(c.ended is None and c.n_measured < cfg.min_seeds for c in by_trial)

        ends: dict[int, RaceEnd] = {}
        for c in rivals:
            if c.ended is None and c.trial in rejected:
                ends[c.trial] = self._end(c, "dropped", p_values[c.trial])
        if leader is not None and leader.ended is None and leader.running == 0:  # noqa: SIM102
            # separated: every rival confidently worse, and no newcomer still warming up
            if not contested and not warming and (rivals or not more_to_come):
                ends[leader.trial] = self._end(leader, "separated", math.nan)

        warm_ups: list[tuple[int, int]] = []
        contenders: list[ConfigSeeds] = []
        for c in by_trial:
            if c.ended is not None or c.trial in ends:
                continue
            room = cfg.max_seeds - c.spent
            if room <= 0:
                if c.running == 0:
                    ends[c.trial] = self._end(c, "max_seeds", p_values.get(c.trial, math.nan))
                continue
            if c.n_measured < cfg.min_seeds:
                need = min(cfg.min_seeds - c.n_measured - c.running, room)
                if need > 0:
                    warm_ups.append((c.trial, need))
            elif c.running == 0 and (c is not leader or contested):
                contenders.append(c)

        # The leader first, then the closest rivals (largest p-value): where a slot decides most.
        contenders.sort(key=lambda c: (c is not leader, -p_values.get(c.trial, 1.0), c.trial))
        launch = (*warm_ups, *((c.trial, 1) for c in contenders))
        return RaceDecision(
            leader=None if leader is None else leader.trial,
            launch=launch,
            ended=tuple(ends[t] for t in sorted(ends)),
            p_values=p_values,
        )

    def _end(self, c: ConfigSeeds, reason: EndReason, p_value: float) -> RaceEnd:
        return RaceEnd(
            trial=c.trial,
            reason=reason,
            value=aggregate(c.values, self.agg),
            n_seeds=c.n_measured,
            p_value=p_value,
        )
