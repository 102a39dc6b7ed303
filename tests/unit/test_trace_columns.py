"""The trace columns each job kind declares (sweeper.config.job) are the columns its rows have:
the declaration is what the checks hold a recipe's objective to, so it must be the truth. (The
RLVR job builds its rows from it; tests/integration/test_job.py checks a real run's rows.)"""

from __future__ import annotations

import pytest

from sweeper.config.job import LOSS_METRIC_COLUMNS, RLVRJob, SyntheticJob
from sweeper.config.loader import recipe_from_data
from sweeper.errors import InputError
from sweeper.synthetic import run_synthetic


@pytest.mark.parametrize("ks", [[1], [1, 4], [2, 3, 4]])
def test_synthetic_rows_have_exactly_the_declared_columns(ks: list[int]) -> None:
    job = SyntheticJob.model_validate({"steps": 4, "eval": {"every": 2, "samples": 4, "ks": ks}})
    for row in run_synthetic(job, seed=0):
        assert list(row) == job.trace_columns()


def test_rlvr_declaration_is_what_the_rl_job_writes() -> None:
    from sweeper.rl.job import row_keys
    from sweeper.rl.losses import METRIC_KEYS

    job = RLVRJob.model_validate({"eval": {"ks": [1, 2], "samples": 2}})
    assert row_keys(job) == job.trace_columns()
    assert tuple(METRIC_KEYS) == LOSS_METRIC_COLUMNS  # what every loss reports
    assert {"pass_at_1", "pass_at_2", "time_eval_s", "tokens_per_s"} <= set(job.trace_columns())


@pytest.mark.parametrize(
    ("objective", "needle"),
    [
        ({"metric": "pass_at_16"}, "with eval.ks [1, 8]"),
        ({"metric": "entropyy"}, "'entropyy' is not a column the synthetic job produces"),
        ({"metric": "step"}, "'step' is not a column"),
        ({"metric": "time_eval_s"}, "synthetic job"),  # an RLVR column the synthetic job lacks
        ({"constraints": [{"metric": "entropi", "min_ratio": 0.5}]}, "constraints.0.metric"),
    ],
)
def test_objective_and_constraints_must_name_a_produced_column(
    objective: dict, needle: str
) -> None:
    data = {"name": "t", "job": {"kind": "synthetic", "steps": 3}, "objective": objective}
    with pytest.raises(InputError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        recipe_from_data(data, "r.yaml")
