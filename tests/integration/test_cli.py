"""The CLI as a user drives it: run a synthetic sweep, follow it, rank, export, report; bad
input gives exit code 2 and one line, and never touches what was already written."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from sweeper.cli import app
from sweeper.config.loader import load_recipe

RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "synthetic_grid.yaml")
FAST = ["--set", "job.step_seconds=0", "--set", "job.steps=6", "--set", "job.eval.every=2"]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    storage = tmp_path_factory.mktemp("sweeps")
    result = CliRunner().invoke(app, ["run", RECIPE, "--storage", str(storage), *FAST])
    assert result.exit_code == 0, result.output
    sweep = storage / "synthetic_grid"
    assert str(sweep) in result.output  # run prints where the sweep dir is
    return sweep


def test_run_writes_a_complete_sweep_dir(finished_sweep: Path) -> None:
    for name in (
        "recipe.yaml",
        "recipe.resolved.json",
        "manifest.json",
        "trials.parquet",
        "runs.parquet",
        "status.json",
        "optuna.db",
    ):
        assert (finished_sweep / name).exists(), name
    assert "--set job.steps=6" in (finished_sweep / "recipe.yaml").read_text()


def test_status_rank_export_report(finished_sweep: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    status = runner.invoke(app, ["status", str(finished_sweep)])
    assert status.exit_code == 0 and "finished" in status.output and "9/9" in status.output

    ranked = runner.invoke(app, ["rank", str(finished_sweep)])
    assert ranked.exit_code == 0, ranked.output
    assert "ranking by pass_at_1" in ranked.output and "loss.eps_" in ranked.output
    first_row = next(line for line in ranked.output.splitlines() if line.startswith("│ 1 "))
    assert "0.15" in first_row and "0.3 " in first_row  # the synthetic optimum ranks first

    out = tmp_path / "export"
    exported = runner.invoke(
        app, ["export", str(finished_sweep), "--top", "2", "--format", "yaml", "--out", str(out)]
    )
    assert exported.exit_code == 0, exported.output
    files = sorted(out.glob("*.yaml"))
    assert len(files) == 2
    recipe, _ = load_recipe(str(files[0]))  # the export re-runs as a recipe
    assert recipe.job.loss.eps_low == 0.15 and recipe.space == {}

    verl = runner.invoke(
        app, ["export", str(finished_sweep), "--format", "verl", "--out", str(out)]
    )
    assert verl.exit_code == 0, verl.output

    report = runner.invoke(app, ["report", str(finished_sweep)])
    assert report.exit_code == 0
    html = (finished_sweep / "report.html").read_text()
    assert "window.SWEEPER_REPORT" in html  # the dashboard's views, embedded (test_dashboard.py)


def test_rank_formats_table_json_csv(finished_sweep: Path) -> None:
    runner = CliRunner()
    table = runner.invoke(app, ["rank", str(finished_sweep)])
    assert table.exit_code == 0, table.output
    assert "pass_at_1 [95% CI]" in table.output and "P(#1 better)" in table.output
    assert "Trial " in table.output and " at 95%" in table.output  # the verdict under it

    result = runner.invoke(app, ["rank", str(finished_sweep), "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # standard JSON: no NaN / Infinity tokens
    assert "NaN" not in result.stdout and "Infinity" not in result.stdout
    trials = doc["trials"]
    assert len(trials) == 9 and trials[0]["rank"] == 1
    best = trials[0]
    assert (best["loss.eps_low"], best["loss.eps_high"]) == (0.15, 0.3)
    assert best["n_seeds"] == 2 and best["ci_low"] <= best["value"] <= best["ci_high"]
    assert best["prob_improvement"] is None and trials[1]["prob_improvement"] is not None
    assert any(t["loss.eps_high"] == "inf" for t in trials)
    assert doc["verdict"]["leader"] == best["trial"] and doc["confidence"] == 0.95

    csv = runner.invoke(app, ["rank", str(finished_sweep), "--format", "csv", "--top", "3"])
    assert csv.exit_code == 0, csv.output
    frame = pd.read_csv(io.StringIO(csv.stdout))
    assert len(frame) == 3 and frame["trial"].tolist() == [t["trial"] for t in trials[:3]]
    for col in ("trial", "loss.eps_low", "loss.eps_high", "value", "ci_low", "ci_high"):
        assert col in frame.columns
    assert {"n_seeds", "prob_improvement", "state"} <= set(frame.columns)

    bad = runner.invoke(app, ["rank", str(finished_sweep), "--format", "xml"])
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1


def test_rerun_into_existing_sweep_is_refused_and_keeps_results(finished_sweep: Path) -> None:
    before = (finished_sweep / "trials.parquet").read_bytes()
    result = CliRunner().invoke(app, ["run", RECIPE, "--storage", str(finished_sweep.parent)])
    assert result.exit_code == 2
    assert (finished_sweep / "trials.parquet").read_bytes() == before


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"job": {"kind": "synthetic", "stepz": 3}}, "stepz"),
        ({"space": {"loss.eps_low": [1.5]}}, "eps_low"),
        ({"space": {"loss.rescue_prob": [0.5]}}, "rescue_prob"),
        ({"search": {"kind": "grid", "seeds": 0}}, "seeds"),
    ],
)
def test_bad_recipes_exit_2_with_one_line(tmp_path: Path, patch: dict, needle: str) -> None:
    data = yaml.safe_load(Path(RECIPE).read_text())
    data.update(patch)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    for command in (["validate", str(bad)], ["run", str(bad), "--storage", str(tmp_path / "s")]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], result.output
    assert not (tmp_path / "s").exists()  # nothing written for a bad recipe


def test_missing_files_and_bad_sweeps_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")]).exit_code == 2
    assert runner.invoke(app, ["status", str(tmp_path)]).exit_code == 2
    assert runner.invoke(app, ["rank", str(tmp_path / "nope")]).exit_code == 2


def test_losses_lists_every_kind_with_parameters() -> None:
    result = CliRunner().invoke(app, ["losses"])
    assert result.exit_code == 0
    for kind in ("ppo_clip", "nsr", "clip_cov", "kl_cov", "gppo", "gspo"):
        assert kind in result.output
    assert "rescue_margin" in result.output and "cov_ub" in result.output


def test_watch_follows_a_running_sweep_until_it_ends(tmp_path: Path) -> None:
    import threading

    from sweeper.sweeps import prepare_sweep, run_sweep

    slow = ["job.steps=10", "job.step_seconds=0.1", "search.seeds=1"]
    recipe, cluster, store = prepare_sweep(RECIPE, slow, str(tmp_path / "sweeps"))
    # The sweep runs in a thread of this process (not through CliRunner, which swaps stdout).
    thread = threading.Thread(target=run_sweep, args=(recipe, store, cluster))
    thread.start()
    sweep = Path(store.uri)
    try:
        for _ in range(300):  # wait for the controller's first status.json
            if (sweep / "status.json").exists():
                break
            threading.Event().wait(0.1)
        watched = CliRunner().invoke(app, ["watch", str(sweep), "--interval", "0.2"])
    finally:
        thread.join()
    assert watched.exit_code == 0, watched.output
    # watch returned only once the sweep had ended, and showed the final state.
    assert "finished" in watched.output and "9/9" in watched.output
