"""A sweep dir on S3: moto's S3 server on 127.0.0.1, reached through the endpoint override.

Everything a sweep writes and reads goes through ``s3://bucket/sweeps/x``; then it is ranked,
exported and reported from there. Skips cleanly when moto (server extra) or boto3 is missing.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytest.importorskip("moto.server", reason="moto[server] not installed")
boto3 = pytest.importorskip("boto3")

from sweeper.config.recipe import Recipe  # noqa: E402
from sweeper.errors import InputError  # noqa: E402
from sweeper.export import export_best  # noqa: E402
from sweeper.rank import rank_sweep  # noqa: E402
from sweeper.report import write_report  # noqa: E402
from sweeper.store import SweepStore, manifest  # noqa: E402
from sweeper.traces import TraceCompactor  # noqa: E402
from tests.unit.test_store import RECIPE_TEXT, TRIALS, trace_rows  # noqa: E402


def _keys(endpoint: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    return [o["Key"] for o in client.list_objects_v2(Bucket="bucket").get("Contents", [])]


def test_sweep_dir_on_s3(moto_s3: str, tmp_path: Path) -> None:
    resolved = Recipe.model_validate(yaml.safe_load(RECIPE_TEXT)).resolved()
    store = SweepStore.create("s3://bucket/sweeps", "x", RECIPE_TEXT, resolved, manifest())
    assert store.uri == "s3://bucket/sweeps/x" and not store.is_local
    assert store.optuna_sqlite_path() is None
    with pytest.raises(InputError, match="not empty"):
        SweepStore.create("s3://bucket/sweeps", "x", RECIPE_TEXT, resolved, {})

    trials, runs = [], []
    for t, (lo, hi, state, final) in TRIALS.items():
        trials.append(
            {"trial": t, "state": state, "loss.eps_low": lo, "loss.eps_high": hi,
             "value": final, "seeds": [0, 1], "started_at": "2025-01-01T00:00:00Z"}
        )  # fmt: skip
        for seed in (0, 1):
            rows = trace_rows(0.99 if final is None else final + 0.02 * seed)
            store.append_trace(t, seed, 1, rows[:6])
            store.append_trace(t, seed, 1, rows[6:])
            runs.append({"trial": t, "seed": seed, "attempt": 1,
                         "state": "FAIL" if final is None else "COMPLETE"})  # fmt: skip
    store.write_trials(trials, ["loss.eps_low", "loss.eps_high"])
    store.write_runs(runs)
    store.write_status({"counts": {"COMPLETE": 3, "FAIL": 1}})

    keys = _keys(moto_s3)
    assert (
        "sweeps/x/trials.parquet" in keys and "sweeps/x/traces/t000002-s1-a1-p00001.parquet" in keys
    )
    assert not [k for k in keys if k.rsplit("/", 1)[-1].startswith(".")]

    again = SweepStore.open("s3://bucket/sweeps/x")  # a fresh reader, e.g. `sweeper status`
    assert again.read_recipe_text() == RECIPE_TEXT
    assert again.read_resolved() == resolved and again.read_status()["counts"]["FAIL"] == 1
    assert again.read_manifest()["versions"]["python"]
    assert again.read_trials()["trial"].tolist() == [0, 1, 2, 3]
    assert math.isinf(again.read_trials()["loss.eps_high"][1])
    assert len(again.read_runs()) == 8
    assert len(again.read_traces()) == 66 and len(again.read_traces(completed_only=False)) == 88
    again.append_trace(0, 0, 1, [{"step": 11, "entropy": 0.5}])  # resumed part counter
    assert "t000000-s0-a1-p00002.parquet" in again.trace_files()

    before = again.read_traces(completed_only=False)
    # compaction on S3 (what `sweeper resume` does first): the parts become attempt files,
    # merged into segments; the same rows read back
    stats = TraceCompactor(again, fanout=4, max_level=1).recover()
    assert stats["compacted"] == 8
    assert again.trace_files() == ["seg1-000000.parquet", "seg1-000001.parquet"]
    assert not [k for k in _keys(moto_s3) if "/traces/" in k and "-p0" in k]
    pd.testing.assert_frame_equal(again.read_traces(completed_only=False), before)

    table = rank_sweep(again)
    assert table["trial"].tolist() == [1, 2, 0, 3]
    assert table["value"].tolist()[:3] == pytest.approx([0.71, 0.61, 0.51])

    (exported,) = export_best(again, fmt="yaml")
    assert exported == "s3://bucket/sweeps/x/export/x-best1.yaml"
    recipe = Recipe.model_validate(yaml.safe_load(again.read_text("export/x-best1.yaml")))
    assert recipe.job.loss.eps_low == 0.1 and math.isinf(recipe.job.loss.eps_high)
    local = export_best(again, fmt="verl", out_dir=str(tmp_path))
    assert Path(local[0]).is_file()

    assert write_report(again) == "s3://bucket/sweeps/x/report.html"
    assert "window.SWEEPER_REPORT" in again.read_text("report.html")

    with pytest.raises(InputError, match=r"not a sweep directory|no such sweep"):
        SweepStore.open("s3://bucket/sweeps/nothing-here")
