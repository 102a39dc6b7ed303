"""Logged eval samples end to end: a real (tiny-policy) RLVR sweep on the embedded Ray writes
samples/ next to the traces, and ``sweeper samples`` prints them."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from sweeper.cli import app
from sweeper.store import SweepStore

RECIPE = {
    "name": "samples_demo",
    "job": {
        "kind": "rlvr",
        "steps": 2,
        "prompts_per_step": 2,
        "group_size": 2,
        "mini_batches": 2,
        "max_new_tokens": 4,
        "micro_batch_size": 1,
        # a small, quickly warm-started tiny policy: this test is about the plumbing
        "policy": {"tiny": {"d_model": 32, "warm_start_steps": 50}},
        "eval": {"every": 2, "prompts": 3, "samples": 2, "ks": [1], "log_samples": 4},
    },
    "space": {"loss.eps_high": [0.2, 0.28]},
    "search": {"kind": "grid", "seeds": 1, "max_concurrent": 1},
    "objective": {"metric": "mean_at_n", "scope": "last"},
}


def test_sweep_writes_samples_and_cli_prints_them(tmp_path: Path, cache_dir: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    storage = tmp_path / "sweeps"
    cli = CliRunner()
    result = cli.invoke(app, ["run", str(path), "--storage", str(storage)])
    assert result.exit_code == 0, result.output

    sweep = storage / "samples_demo"
    files = sorted(p.name for p in (sweep / "samples").iterdir())
    # 2 trials x 1 seed x eval steps 0 and 2
    assert files == [f"t{t:06d}-s0-a1-step{s:06d}.parquet" for t in (0, 1) for s in (0, 2)], files
    store = SweepStore.open(str(sweep))
    samples = store.read_samples()
    assert len(samples) == 2 * 2 * 4
    assert set(samples["sample"]) == {0, 1, 2, 3}
    assert samples["prompt"].str.fullmatch(r"\d+\+\d+=").all()  # the addition prompts
    assert ((samples["reward"] == 1.0) == samples["correct"]).all()
    traces = store.read_traces()
    assert len(traces) == 2 * 3 and "_samples" not in traces.columns  # popped, not traced

    shown = cli.invoke(app, ["samples", str(sweep), "--trial", "1", "--step", "2"])
    assert shown.exit_code == 0, shown.output
    assert "4 of 4" in shown.output
    one = samples[(samples["trial"] == 1) & (samples["step"] == 2)].iloc[0]
    assert one["prompt"] in shown.output
    none = cli.invoke(app, ["samples", str(sweep), "--step", "1"])
    assert none.exit_code == 0 and "no samples" in none.output
    bad = cli.invoke(app, ["samples", str(tmp_path / "missing")])
    assert bad.exit_code == 2
