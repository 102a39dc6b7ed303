"""Racing decisions on constructed cases, the racing config, and one race on the synthetic job."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from sweeper.config.racing import RacingConfig
from sweeper.config.recipe import SearchConfig
from sweeper.racing import ConfigSeeds, EndReason, SeedRace, holm_rejections
from sweeper.stats import gap_p_value
from sweeper.synthetic import final_accuracy, run_synthetic

NAN = math.nan
LEAD = (0.80, 0.81, 0.79)
CLOSE = (0.79, 0.80, 0.81)
FAR = (0.50, 0.52, 0.51)


def race(min_seeds: int = 3, max_seeds: int = 6, confidence: float = 0.95, **kw: str) -> SeedRace:
    cfg = RacingConfig(min_seeds=min_seeds, max_seeds=max_seeds, confidence=confidence)
    return SeedRace(cfg, **kw)


# --------------------------------------------------------------------------- config


def test_racing_config_bounds() -> None:
    assert RacingConfig() == RacingConfig(min_seeds=2, max_seeds=10, confidence=0.95)
    with pytest.raises(ValidationError, match=r"exceeds racing\.max_seeds"):
        RacingConfig(min_seeds=5, max_seeds=3)
    for bad in ({"min_seeds": 1}, {"confidence": 1.0}, {"confidence": 0.4}, {"typo": 1}):
        with pytest.raises(ValidationError):
            RacingConfig.model_validate(bad)


def test_search_racing_needs_enough_seeds() -> None:
    ok = SearchConfig.model_validate({"seeds": 10, "racing": {"min_seeds": 3}})
    assert ok.racing is not None and ok.racing.min_seeds == 3
    with pytest.raises(
        ValidationError, match=r"max_seeds=10 needs at least that many seeds \(has 4\)"
    ):
        SearchConfig.model_validate({"seeds": 4, "racing": {}})
    assert SearchConfig().racing is None


# --------------------------------------------------------------------------- Holm


def test_holm_by_hand() -> None:
    # m = 3 at 0.05: thresholds 0.0167, 0.025, 0.05
    assert holm_rejections({1: 0.01, 2: 0.02, 3: 0.04}, 0.05) == {1, 2, 3}
    assert holm_rejections({1: 0.01, 2: 0.03, 3: 0.04}, 0.05) == {1}  # 0.03 > 0.025 stops
    assert holm_rejections({1: 0.02, 2: 0.001}, 0.05) == {1, 2}  # 0.001 <= .025, .02 <= .05
    assert holm_rejections({1: 0.001, 2: NAN}, 0.05) == {1}  # NaN counts in m, never rejected
    assert holm_rejections({}, 0.05) == set()


# --------------------------------------------------------------------------- decisions


def test_warm_up_first_in_trial_order() -> None:
    d = race().decide([ConfigSeeds(2), ConfigSeeds(0), ConfigSeeds(1, (0.5,), running=1)])
    assert d.leader is None and d.ended == ()
    assert d.launch == ((0, 3), (1, 1), (2, 3))  # trial 1: 1 done + 1 running of 3


def test_far_config_dropped_close_one_races_on() -> None:
    d = race().decide([ConfigSeeds(0, LEAD), ConfigSeeds(1, CLOSE), ConfigSeeds(2, FAR)])
    assert d.leader == 0
    assert d.dropped == (2,)
    (end,) = d.ended
    assert end.reason == "dropped" and end.value == pytest.approx(0.51) and end.n_seeds == 3
    assert end.p_value == pytest.approx(gap_p_value(LEAD, FAR)) and end.p_value < 0.05 / 2
    assert d.p_values[1] == pytest.approx(gap_p_value(LEAD, CLOSE)) and d.p_values[1] > 0.4
    assert d.launch == ((0, 1), (1, 1))  # the leader first, then the close rival
    assert d.seeds_for(2) == 0


def test_holm_family_keeps_a_borderline_config() -> None:
    # On its own (family of 1) the borderline config is rejected; with two more rivals that
    # are not rejected, Holm's first threshold is 0.05 / 3 and it survives.
    borderline = (0.775, 0.79, 0.78)
    p = gap_p_value(LEAD, borderline)
    assert 0.05 / 3 < p < 0.05
    alone = race().decide([ConfigSeeds(0, LEAD), ConfigSeeds(1, borderline)])
    assert alone.dropped == (1,)
    crowd = race().decide(
        [ConfigSeeds(0, LEAD), ConfigSeeds(1, borderline), ConfigSeeds(2, CLOSE),
         ConfigSeeds(3, CLOSE)]
    )  # fmt: skip
    assert crowd.dropped == ()


def test_leader_separated_once_all_rivals_rejected_and_no_warm_up() -> None:
    configs = [ConfigSeeds(0, LEAD), ConfigSeeds(1, FAR)]
    d = race().decide(configs)
    assert [(e.trial, e.reason) for e in d.ended] == [(0, "separated"), (1, "dropped")]
    assert d.launch == ()
    leader_end = d.ended[0]
    assert leader_end.value == pytest.approx(0.80) and math.isnan(leader_end.p_value)
    # a config still warming up may need the leader's seeds: not separated yet
    d = race().decide([*configs, ConfigSeeds(2, (0.7,))])
    assert [(e.trial, e.reason) for e in d.ended] == [(1, "dropped")]
    assert d.launch == ((2, 2),)  # the leader waits: no rival left to race
    # its running seeds finish first
    d = race().decide([ConfigSeeds(0, LEAD, running=1), ConfigSeeds(1, FAR)])
    assert [(e.trial, e.reason) for e in d.ended] == [(1, "dropped")]


def test_max_seeds_ends_the_race_after_running_seeds_finish() -> None:
    six = (0.80, 0.81, 0.79, 0.80, 0.82, 0.78)
    five = (0.79, 0.80, 0.81, 0.80, 0.79)
    d = race().decide([ConfigSeeds(0, six), ConfigSeeds(1, five, running=1)])
    assert d.ended[0].trial == 0 and d.ended[0].reason == "max_seeds"
    assert d.launch == ()  # trial 1 waits for its running sixth seed
    d = race().decide([ConfigSeeds(0, six, ended="max_seeds"), ConfigSeeds(1, (*five, 0.8))])
    assert [(e.trial, e.reason) for e in d.ended] == [(1, "max_seeds")]
    assert d.ended[0].p_value == pytest.approx(gap_p_value(six, (*five, 0.8)))


def test_ended_races_stay_ended() -> None:
    # a dropped config is neither leader nor compared even when it now looks best
    d = race().decide(
        [ConfigSeeds(0, (0.9, 0.9, 0.9), ended="dropped"), ConfigSeeds(1, LEAD),
         ConfigSeeds(2, CLOSE)]
    )  # fmt: skip
    assert d.leader == 1 and 0 not in d.p_values and d.seeds_for(0) == 0
    # a config that ended at max_seeds can lead; it gets no seeds, a rival races against it
    d = race().decide([ConfigSeeds(0, LEAD, ended="max_seeds"), ConfigSeeds(1, CLOSE)])
    assert d.leader == 0 and d.launch == ((1, 1),) and d.ended == ()


def test_mode_min_and_iqm() -> None:
    low = tuple(1.0 - v for v in LEAD)
    high = tuple(1.0 - v for v in FAR)
    d = race(mode="min").decide([ConfigSeeds(0, high), ConfigSeeds(1, low)])
    assert d.leader == 1 and d.dropped == (0,)
    d = race(agg="iqm").decide([ConfigSeeds(0, LEAD), ConfigSeeds(1, FAR)])
    assert d.dropped == (1,)
    assert d.p_values[1] == pytest.approx(gap_p_value(LEAD, FAR, "iqm"))


def test_unmeasured_seeds_count_against_max_seeds() -> None:
    d = race(min_seeds=2, max_seeds=4).decide([ConfigSeeds(0, (NAN, 0.5))])
    assert d.launch == ((0, 1),)  # one measured of 2: one more
    d = race(min_seeds=2, max_seeds=4).decide([ConfigSeeds(0, (NAN, NAN, NAN, 0.5))])
    assert [(e.trial, e.reason, e.n_seeds) for e in d.ended] == [(0, "max_seeds", 1)]
    assert d.ended[0].value == pytest.approx(0.5)


def test_deterministic_and_order_free() -> None:
    configs = [ConfigSeeds(3, CLOSE), ConfigSeeds(1, LEAD), ConfigSeeds(2, FAR), ConfigSeeds(0)]
    rule = race()
    assert rule.decide(configs) == rule.decide(reversed(configs))
    with pytest.raises(ValueError, match="once"):
        rule.decide([ConfigSeeds(1), ConfigSeeds(1)])


# --------------------------------------------------------------------------- a whole race


def test_race_on_the_synthetic_job_finds_the_best_with_fewer_jobs() -> None:
    """Rounds of decisions over 4 synthetic configs (seed noise 0.01, gaps 0.03-0.3): the far
    configs stop early, the race ends, its #1 is the true best, under 4 x max_seeds jobs."""
    lows = (0.15, 0.10, 0.05, 0.5)
    jobs = {
        i: {"kind": "synthetic", "steps": 8, "noise": 0.0, "seed_noise": 0.01,
            "loss": {"kind": "ppo_clip", "eps_low": lo, "eps_high": 0.3}}
        for i, lo in enumerate(lows)
    }  # fmt: skip
    truth = {i: final_accuracy({"eps_low": lo, "eps_high": 0.3}) for i, lo in enumerate(lows)}
    assert max(truth, key=truth.__getitem__) == 0
    rule = race(min_seeds=2, max_seeds=8)
    values: dict[int, list[float]] = {i: [] for i in jobs}
    ended: dict[int, EndReason] = {}
    for _ in range(50):
        d = rule.decide(ConfigSeeds(i, tuple(v), ended=ended.get(i)) for i, v in values.items())
        ended.update((e.trial, e.reason) for e in d.ended)
        if not d.launch:
            break
        for trial, n in d.launch:
            for _ in range(n):
                *_, last = run_synthetic(jobs[trial], seed=len(values[trial]))
                values[trial].append(last["mean_at_n"])
    assert set(ended) == set(jobs)  # every race ended
    assert ended[3] == "dropped" and len(values[3]) == 2  # 0.3 behind: dropped at once
    spent = sum(len(v) for v in values.values())
    assert spent < 4 * 8
    means = {i: sum(v) / len(v) for i, v in values.items()}
    assert max(means, key=means.__getitem__) == 0
