"""The synthetic job: shape of its rows and the landscape the controller tests rely on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweeper.config.job import SyntheticJob
from sweeper.synthetic import expected_accuracy, final_accuracy, run_synthetic, seed_offset


def job(**loss) -> dict:
    return {
        "kind": "synthetic",
        "steps": 10,
        "eval": {"every": 4, "ks": [1, 4], "samples": 4},
        "loss": {"kind": "ppo_clip", **loss},
    }


def test_rows_per_step_with_eval_at_0_every_and_last() -> None:
    rows = list(run_synthetic(job(), seed=0))
    assert [r["step"] for r in rows] == list(range(11))
    evaluated = [r["step"] for r in rows if not math.isnan(r["mean_at_n"])]
    assert evaluated == [0, 4, 8, 10]
    assert math.isnan(rows[-1]["entropy"]) and not math.isnan(rows[0]["entropy"])
    assert {"pass_at_1", "pass_at_4", "eval_entropy"} <= set(rows[0])
    assert len({frozenset(r) for r in rows}) == 1  # same columns on every row


def test_deterministic_per_seed() -> None:
    def rows(seed: int) -> str:  # repr compares NaN equal to NaN
        return repr(list(run_synthetic(job(), seed)))

    assert rows(3) == rows(3)
    assert rows(3) != rows(4)


def test_infinite_eps_high_gives_finite_metrics() -> None:
    rows = list(run_synthetic(job(eps_high=float("inf")), 0))
    assert all(math.isfinite(r["mean_at_n"]) for r in rows if r["step"] in (0, 4, 8, 10))


def test_optimum_is_where_documented() -> None:
    best = final_accuracy({"eps_low": 0.15, "eps_high": 0.3})
    assert best == pytest.approx(0.85)
    assert final_accuracy({"eps_low": 0.3, "eps_high": 0.3}) < best


def test_fail_at_step_raises_there() -> None:
    rows = run_synthetic({**job(), "fail_at_step": 2}, 0)
    assert next(rows)["step"] == 0 and next(rows)["step"] == 1
    with pytest.raises(RuntimeError, match="step 2"):
        next(rows)


def test_seed_noise_offsets_the_whole_trajectory() -> None:
    base = {**job(eps_low=0.1), "noise": 0.01}
    plain = list(run_synthetic(base, seed=5))
    noisy = list(run_synthetic({**base, "seed_noise": 0.05}, seed=5))
    offset = seed_offset(SyntheticJob.model_validate(base).loss.model_dump(), 5, 0.05)
    assert offset != 0.0
    # the same offset at every step, on top of the same per-step noise (acc stays inside [0, 1])
    diffs = [n["mean_at_n"] - p["mean_at_n"] for p, n in zip(plain, noisy, strict=True)]
    evaluated = [d for d in diffs if not math.isnan(d)]
    assert evaluated == pytest.approx([offset] * len(evaluated))
    assert [n["accuracy"] - p["accuracy"] for p, n in zip(plain[:-1], noisy[:-1], strict=True)] == (
        pytest.approx([offset] * 10)
    )
    assert noisy[3]["entropy"] == plain[3]["entropy"]  # entropy carries no seed offset
    again = list(run_synthetic({**base, "seed_noise": 0.05}, seed=5))
    assert repr(again) == repr(noisy)  # fixed by the seed


def test_noise_free_rows_are_the_documented_truth() -> None:
    cfg = {**job(eps_low=0.1, eps_high=0.25), "noise": 0.0}
    loss = SyntheticJob.model_validate(cfg).loss.model_dump()
    for row in run_synthetic(cfg, seed=0):
        if not math.isnan(row["mean_at_n"]):
            assert row["mean_at_n"] == pytest.approx(expected_accuracy(loss, 10, row["step"]))
    assert expected_accuracy(loss, 10, 0) == pytest.approx(0.2)
    # tau = steps / 4: after all steps the gap to the final accuracy has shrunk by e^-4
    final = final_accuracy(loss)
    assert expected_accuracy(loss, 10, 10) == pytest.approx(final - (final - 0.2) * math.exp(-4))


def test_seed_offsets_are_normal_and_independent_across_configs() -> None:
    sigma, n = 0.03, 4000
    a_loss = SyntheticJob.model_validate(job(eps_low=0.1)).loss.model_dump()
    b_loss = SyntheticJob.model_validate(job(eps_low=0.2)).loss.model_dump()
    a = np.array([seed_offset(a_loss, s, sigma) for s in range(n)])
    b = np.array([seed_offset(b_loss, s, sigma) for s in range(n)])
    # mean within 4 standard errors of 0; std within 5% (its relative se is 1/sqrt(2n) = 1.1%)
    assert abs(a.mean()) < 4 * sigma / math.sqrt(n)
    assert a.std(ddof=1) == pytest.approx(sigma, rel=0.05)
    assert abs(np.corrcoef(a, b)[0, 1]) < 4 / math.sqrt(n)  # independent across configs
    assert seed_offset(a_loss, 3, 0.0) == 0.0


def test_seed_mean_of_the_last_value_estimates_the_truth() -> None:
    cfg = {**job(eps_low=0.1, eps_high=0.25), "noise": 0.0, "seed_noise": 0.02}
    loss = SyntheticJob.model_validate(cfg).loss.model_dump()
    last = [list(run_synthetic(cfg, seed))[-1]["mean_at_n"] for seed in range(1000)]
    assert np.mean(last) == pytest.approx(expected_accuracy(loss, 10, 10), abs=4 * 0.02 / 31.6)
