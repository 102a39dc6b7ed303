"""The dashboard's views (values in the payloads, every figure valid for Plotly) and the web
app's routes (Starlette's test client; the real server and browser are integration tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import pytest
import yaml

from sweeper.config.recipe import Recipe
from sweeper.dashboard import views
from sweeper.dashboard.data import SweepData
from sweeper.store import SweepStore, manifest
from sweeper.synthetic import run_synthetic
from tests.unit.test_store import build_sweep


def figures_in(payload: Any) -> list[dict[str, Any]]:
    """Every Plotly figure (a dict with data and layout) anywhere in a payload."""
    found = []
    if isinstance(payload, dict):
        if "data" in payload and "layout" in payload:
            return [payload]
        for v in payload.values():
            found += figures_in(v)
    elif isinstance(payload, list):
        for v in payload:
            found += figures_in(v)
    return found


def assert_valid_figures(payload: Any) -> int:
    figs = figures_in(payload)
    for fig in figs:
        go.Figure(fig)  # raises on any property plotly.js does not know
    return len(figs)


@pytest.fixture
def snap(tmp_path: Path):
    return SweepData(build_sweep(tmp_path)).snapshot()


def test_overview_values(snap) -> None:
    o = views.overview(snap, top=2)
    p = o["progress"]
    assert (p["finished"], p["total"], p["counts"]) == (4, 4, {"COMPLETE": 3, "FAIL": 1})
    best = p["best"]
    # trial 1 ends at 0.70 (seed 0) and 0.72 (seed 1): mean 0.71, sample std 0.01414
    assert best["trial"] == 1 and best["value"] == pytest.approx(0.71)
    lo, hi, label = best["interval"]
    # the ranking's bootstrap interval over the 2 seeds: their range (the expanded level)
    assert label == "95% CI" and (lo, hi) == pytest.approx((0.70, 0.72))
    assert best["params"] == {"loss.eps_low": "0.1", "loss.eps_high": "inf"}
    # ranking: best first, the failed trial last, as display strings
    assert [r["trial"] for r in o["ranking"]["rows"]] == [1, 2, 0, 3]
    assert o["ranking"]["columns"][:5] == ["#", "trial", "state", "loss.eps_low", "loss.eps_high"]
    # curves of the top 2 only, one figure per measured metric, entropy first
    assert [c["metric"] for c in o["curves"]] == ["entropy", "mean_at_n"]
    assert o["curve_trials"] == ["#1 trial 1", "#2 trial 2"]
    lines = [t for t in o["curves"][1]["figure"]["data"] if t.get("mode") == "lines"]
    mean_line = next(t for t in lines if t["name"] == "#1 trial 1" and "fill" not in t)
    assert mean_line["x"] == [0, 5, 10]  # mean_at_n is measured every 5 steps
    assert mean_line["y"] == pytest.approx([0.51, 0.61, 0.71])
    fills = [t for t in o["curves"][1]["figure"]["data"] if t.get("fill") == "toself"]
    band = next(t for t in fills if t.get("meta"))
    assert band["y"][:3] == pytest.approx([0.52, 0.62, 0.72])  # max over seeds, then min back
    # the trials not drawn (top 2 of 3 completed): one band over all, drawn first, no meta
    everyone = fills[0]
    assert everyone["name"] == "all 3 trials: 10-90%" and "meta" not in everyone
    title = o["curves"][1]["figure"]["layout"]["title"]["text"]
    assert title == "mean_at_n: best 2 of 3 trials, band: all"
    assert o["space"]["kind"] == "heatmap"
    assert assert_valid_figures(o) == 4


def test_heatmap_and_pareto_figures(snap) -> None:
    heat = views.heatmap(snap)["data"][0]
    assert heat["x"] == ["0.1", "0.2"] and heat["y"] == ["0.28", "inf"]
    assert heat["z"][0] == pytest.approx([0.51, 0.61]) and heat["z"][1][0] == pytest.approx(0.71)
    assert heat["z"][1][1] is None  # the failed trial has no value
    assert heat["customdata"] == [[0, 2], [1, 3]]  # clicking a cell opens its trial
    pareto = views.pareto(snap)
    front = next(t for t in pareto["data"] if t["name"] == "Pareto front" and t["visible"])
    # every trial ends at entropy 0.8; the best mean_at_n alone is on the front
    assert front["customdata"] == [1]


def test_trial_view(snap) -> None:
    t = views.trial_view(snap, 1)
    assert t["rank"] == 1 and t["state"] == "COMPLETE" and t["value"] == pytest.approx(0.71)
    # seed 0's attempt 1 was lost and retried: both attempts listed, and drawn
    assert [r[:3] for r in t["attempts"]["rows"]] == [
        ["0", "1", "FAIL"], ["0", "2", "COMPLETE"], ["1", "1", "COMPLETE"],
    ]  # fmt: skip
    entropy = t["curves"][0]["figure"]["data"]
    assert [d["name"] for d in entropy] == [
        "seed 0 (attempt 1, FAIL)", "seed 0 (attempt 2, COMPLETE)", "seed 1 (attempt 1, COMPLETE)",
    ]  # fmt: skip
    assert entropy[0]["line"]["dash"] == "dot" and entropy[1]["line"]["dash"] == "solid"
    assert t["samples"] == {"columns": [], "rows": [], "total": 0}
    failed = views.trial_view(snap, 3)
    assert failed["error"] == "ValueError: NaN loss" and failed["value"] is None
    assert views.trial_view(snap, 99) is None
    assert_valid_figures(t)


def synthetic_sweep(root: Path, n_trials: int, keys: int) -> SweepStore:
    """A hand-written optuna-style sweep of the synthetic job over ``keys`` parameters."""
    space = {
        "loss.eps_low": {"type": "uniform", "low": 0.0, "high": 0.5},
        "loss.eps_high": {"type": "uniform", "low": 0.1, "high": 1.0},
        "loss.rescue_prob": {"type": "uniform", "low": 0.0, "high": 1.0},
    }
    text = yaml.safe_dump(
        {
            "name": "syn",
            "job": {"kind": "synthetic", "steps": 4, "loss": {"kind": "nsr"}, "eval": {"every": 2}},
            "space": dict(list(space.items())[:keys]),
            "search": {"kind": "optuna", "n_trials": n_trials, "seeds": 2},
            "objective": {"metric": "pass_at_1"},
        }
    )
    recipe = Recipe.model_validate(yaml.safe_load(text))
    store = SweepStore.create(str(root), "syn", text, recipe.resolved(), manifest())
    trials, runs = [], []
    for i in range(n_trials):
        p = {k: (i + 1) / (n_trials + 1) * space[k]["high"] for k in recipe.space}
        for s in (0, 1):
            store.append_trace(i, s, 1, list(run_synthetic(recipe.job_for(p), s)))
            runs.append({"trial": i, "seed": s, "attempt": 1, "state": "COMPLETE"})
        trials.append({"trial": i, "state": "COMPLETE", **p})
    store.write_trials(trials, list(recipe.space))
    store.write_runs(runs)
    return store


def test_space_view_by_dimension_and_importance(tmp_path: Path) -> None:
    one = SweepData(synthetic_sweep(tmp_path / "a", 10, 1)).snapshot()
    assert views.space_view(one)["kind"] == "line"
    three = SweepData(synthetic_sweep(tmp_path / "b", 10, 3)).snapshot()
    par = views.space_view(three)
    assert par["kind"] == "parcoords"
    dims = par["figure"]["data"][0]["dimensions"]
    assert sorted(three.param_keys) == ["loss.eps_high", "loss.eps_low", "loss.rescue_prob"]
    assert [d["label"] for d in dims] == [*three.param_keys, "pass_at_1", "final_entropy"]
    assert len(dims[0]["values"]) == 10
    imp = views.importance(three)
    assert imp["figure"] is not None and "PED-ANOVA" in imp["evaluator"]
    bars = imp["figure"]["data"][0]
    assert sorted(bars["y"]) == ["loss.eps_high", "loss.eps_low", "loss.rescue_prob"]
    assert sum(bars["x"]) == pytest.approx(1.0)
    few = views.importance(SweepData(synthetic_sweep(tmp_path / "c", 5, 2)).snapshot())
    assert few["figure"] is None and "3 more" in few["message"]
    assert (
        views.space_view(SweepData(synthetic_sweep(tmp_path / "d", 5, 2)).snapshot())["kind"]
        == "scatter"
    )
    assert_valid_figures([par, imp])


def test_empty_sweep(tmp_path: Path) -> None:
    store = SweepStore.create(str(tmp_path), "empty", "name: empty\n", {"name": "empty"}, {})
    o = views.overview(SweepData(store).snapshot())
    assert o["progress"]["state"] == "not started" and o["progress"]["best"] is None
    assert o["curves"] == [] and o["pareto"] is None and o["space"] is None
    assert o["ranking"]["rows"] == []


# --------------------------------------------------------------------------- the web app


def strict_json(name: str) -> None:
    raise AssertionError(f"{name} in JSON")


def test_app_routes(tmp_path: Path) -> None:
    from plotly.offline import get_plotlyjs
    from starlette.testclient import TestClient

    from sweeper.dashboard.server import create_app

    store = build_sweep(tmp_path)
    client = TestClient(create_app(store))
    page = client.get("/")
    assert page.status_code == 200 and 'src="static/plotly.min.js"' in page.text
    assert "cdn" not in page.text.lower()
    js = client.get("/static/plotly.min.js")
    assert js.text == get_plotlyjs()  # the plotly package's own bundled copy
    assert "Plotly.react" in client.get("/static/dashboard.js").text
    assert client.get("/static/nope.js").status_code == 404
    assert client.get("/api/sweep").json()["name"] == "demo"
    o = client.get("/api/overview?top=3").json()
    assert o["progress"]["finished"] == 4 and len(o["curve_trials"]) == 3
    again = client.get(f"/api/overview?top=3&since={o['version']}").json()
    assert again == {"version": o["version"], "unchanged": True}
    assert client.get("/api/overview?top=x").status_code == 400
    assert client.get("/api/trial/1").json()["trial"] == 1
    assert client.get("/api/trial/99").status_code == 404
    assert client.get("/api/importance").json()["figure"] is None
    moved = client.get("/trial/2", follow_redirects=False)
    assert moved.status_code in (302, 307) and moved.headers["location"] == "/#/trial/2"
    # NaN and infinities never reach the wire (standard JSON): a missing value is null
    for path in ("/api/trial/3", "/api/overview"):
        body = json.loads(client.get(path).text, parse_constant=strict_json)
    assert body["ranking"]["rows"][-1]["cells"][5] == ""  # the failed trial: no value
    assert json.loads(client.get("/api/trial/3").text)["value"] is None


def test_bind_refuses_a_taken_port() -> None:
    from sweeper.dashboard.server import bind, is_loopback, url_of
    from sweeper.errors import InputError

    sock = bind("127.0.0.1", 0)
    try:
        assert url_of(sock).startswith("http://127.0.0.1:")
        with pytest.raises(InputError, match=r"cannot listen on 127\.0\.0\.1"):
            bind("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
