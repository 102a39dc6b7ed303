"""Which seeds each trial runs: every seed of ``search.seeds`` at once, or raced.

Without ``search.racing`` a trial queues all its seeds when it opens and completes when they all
have. With racing (``sweeper.racing``: successive elimination against the leader) a trial opens
with none; after every finished seed the race decides which trials get more seeds (handed out in
the order of ``search.seeds``) and whose race ends -- dropped, separated or at ``max_seeds`` --
with the seed aggregate to tell the sampler.

What racing keeps in memory: a finished trial leaves the trial book, but a config whose race
ended stays in every later decision (later configs race against its seeds). So the plan keeps,
per such config, a compact summary -- :class:`~sweeper.racing.ConfigSeeds`: its trial number, the
objective value of each finished seed, the count of seeds it had running when it ended, and why
it ended (a few dozen bytes per config) -- and nothing for configs that failed or were pruned
(they leave the race). A decision is computed over these summaries and the unfinished trials: its
cost grows with the configs in the race, which is the racing rule's own cost.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from sweeper.config.recipe import Recipe
from sweeper.racing import ConfigSeeds, RaceEnd, SeedRace

if TYPE_CHECKING:
    from sweeper.controller.trials import Trial


class SeedPlan:
    """The seed schedule of one sweep (see the module docstring)."""

    def __init__(self, recipe: Recipe) -> None:
        self.pool = list(recipe.search.seeds)
        racing = recipe.search.racing
        objective = recipe.objective
        self.race = (
            SeedRace(racing, objective.mode, objective.seed_agg) if racing is not None else None
        )
        self.ended: dict[int, ConfigSeeds] = {}
        """Racing: the summary of each config whose race ended (see the module docstring)."""

    @property
    def racing(self) -> bool:
        """Whether seeds are raced."""
        return self.race is not None

    def first_seeds(self) -> list[int]:
        """The seeds a trial queues when it opens (racing: none, the race hands them out)."""
        return [] if self.race is not None else list(self.pool)

    def decide(
        self, trials: Iterable[Trial], more_to_come: bool
    ) -> tuple[list[tuple[int, list[int]]], list[RaceEnd]]:
        """Racing only: the race's decision over the unfinished ``trials`` and every config
        whose race ended -- ``(trial, new seeds)`` to queue, in priority order, and the races
        that end now. ``more_to_come``: the search may still hand out configs."""
        assert self.race is not None, "decide() is for racing sweeps"
        racing = {t.number: t for t in trials if not t.state.finished and t.racing is None}
        configs = [*self.ended.values(), *(summary(t) for t in racing.values())]
        decision = self.race.decide(configs, more_to_come)
        launches = []
        for trial, n in decision.launch:
            used = set(racing[trial].seeds)
            launches.append((trial, [s for s in self.pool if s not in used][:n]))
        return launches, list(decision.ended)

    def race_ended(self, t: Trial) -> None:
        """Racing: ``t``'s race ended (``t.racing`` says why); keep its summary for later
        decisions, as the trial itself leaves memory."""
        self.ended[t.number] = summary(t)

    def warming_up(self, t: Trial) -> bool:
        """Racing: whether a trial has not yet finished (or started) its ``min_seeds``."""
        assert self.race is not None, "warming_up() is for racing sweeps"
        return sum(s in t.seed_values for s in t.seeds) < self.race.racing.min_seeds


def summary(t: Trial) -> ConfigSeeds:
    """A trial's seeds so far, as the race sees them."""
    return ConfigSeeds(
        trial=t.number,
        values=tuple(t.seed_values[s] for s in t.seeds if s in t.seed_values),
        running=sum(s not in t.seed_values for s in t.seeds),
        ended=t.racing,  # type: ignore[arg-type]
    )
