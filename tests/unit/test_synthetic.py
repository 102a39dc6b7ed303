"""The synthetic job: shape of its rows and the landscape the controller tests rely on."""

from __future__ import annotations

import math

import pytest

from sweeper.synthetic import final_accuracy, run_synthetic


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
