"""A one-file HTML report of a sweep: states, the ranking, and plots (DESIGN §6 ``report``).

The page is self-contained: matplotlib (Agg, no pyplot state) renders PNGs that are embedded as
base64 ``data:`` URIs, and the styling is inline -- it opens offline and can be mailed around.

Plots: entropy vs step and the objective metric vs step (mean over seeds, one line per trial,
the top-N ranked trials coloured and labelled, the rest grey), and the objective value of each
trial vs each searched parameter.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sweeper.rank import objective_of, param_keys_of, rank
from sweeper.store import SweepStore

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}tr.top td{background:#eef6ff;font-weight:600}
td.l,th.l{text-align:left}img{max-width:100%;border:1px solid #eee;margin:.5em 0}
pre{background:#f8f8f8;padding:1em;overflow:auto;font-size:12px}
.states span{display:inline-block;margin-right:1.2em}
"""


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _img(fig: Figure, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{_png(fig)}">'


def _curves(traces: pd.DataFrame, metric: str) -> dict[int, pd.Series]:
    """Per trial: the metric's mean over seeds at each step where it was measured."""
    if metric not in traces.columns or traces.empty:
        return {}
    finite = traces[np.isfinite(pd.to_numeric(traces[metric], errors="coerce"))]
    means = finite.groupby(["trial", "step"])[metric].mean()
    return {int(t): s.droplevel(0) for t, s in means.groupby(level=0)}


def _trace_plot(traces: pd.DataFrame, metric: str, top: list[int]) -> str | None:
    curves = _curves(traces, metric)
    if not curves:
        return None
    fig = Figure(figsize=(8, 4.2))
    ax = fig.add_subplot()
    for trial, s in curves.items():
        if trial not in top:
            ax.plot(s.index, s.to_numpy(), color="0.78", lw=0.9, zorder=1)
    for i, trial in enumerate(top):
        if trial in curves:
            s = curves[trial]
            ax.plot(
                s.index,
                s.to_numpy(),
                lw=2,
                zorder=2,
                color=f"C{i % 10}",
                label=f"#{i + 1} trial {trial}",
            )
    ax.set_xlabel("step")
    ax.set_ylabel(f"{metric} (mean over seeds)")
    ax.set_title(f"{metric} vs step (top {len(top)} coloured)")
    ax.grid(alpha=0.3)
    if any(t in curves for t in top):
        ax.legend(fontsize=8, loc="best")
    return _img(fig, f"{metric} vs step")


def _scatter(table: pd.DataFrame, keys: list[str], metric: str, top: list[int]) -> str | None:
    data = table[np.isfinite(pd.to_numeric(table["value"], errors="coerce"))]
    if data.empty or not keys:
        return None
    n = len(keys)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows), layout="constrained")
    for i, key in enumerate(keys, start=1):
        ax = fig.add_subplot(rows, cols, i)
        x = data[key]
        numeric = pd.to_numeric(x, errors="coerce")
        is_top = data["trial"].isin(top).to_numpy()
        if numeric.notna().all() and np.isfinite(numeric).all():
            xs = numeric.to_numpy(dtype="float64")
        else:  # categorical (or containing inf): evenly spaced labelled positions
            labels = [str(v) for v in x]
            cats = sorted(set(labels))
            xs = np.array([cats.index(v) for v in labels], dtype="float64")
            ax.set_xticks(range(len(cats)), cats, rotation=30, fontsize=8)
        ys = data["value"].to_numpy(dtype="float64")
        ax.scatter(xs[~is_top], ys[~is_top], color="0.6", s=22)
        ax.scatter(xs[is_top], ys[is_top], color="C0", s=36, edgecolor="k", lw=0.5)
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle("objective vs each searched parameter (top trials blue)")
    return _img(fig, "objective vs params")


def _cell(v: Any) -> str:
    if isinstance(v, float | np.floating):
        return "" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, list | np.ndarray):
        return html.escape(", ".join(str(x) for x in v))
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return ""
    return html.escape(str(v))


def _table(table: pd.DataFrame, top: list[int]) -> str:
    left = {"state", "error"}
    head = "".join(
        f'<th class="{"l" if c in left else ""}">{html.escape(str(c))}</th>' for c in table.columns
    )
    body = []
    for rec in table.to_dict("records"):
        cls = ' class="top"' if rec["trial"] in top else ""
        cells = "".join(
            f'<td class="{"l" if c in left else ""}">{_cell(rec[c])}</td>' for c in table.columns
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _states(df: pd.DataFrame) -> str:
    if df.empty:
        return "<span>none yet</span>"
    counts = df["state"].fillna("UNKNOWN").value_counts().sort_index()
    return "".join(f"<span><b>{html.escape(str(s))}</b> {n}</span>" for s, n in counts.items())


def render_report(store: SweepStore, top: int = 5) -> str:
    """The report of a sweep as an HTML string (see :func:`write_report`)."""
    objective = objective_of(store)
    trials = store.read_trials()
    keys = param_keys_of(store, trials)
    traces = store.read_traces(completed_only=True)
    table = rank(trials, traces, objective, keys)
    ranked = table[(table["state"] == "COMPLETE") & table["value"].notna()]
    top_ids = [int(t) for t in ranked["trial"].head(top)]
    runs = store.read_runs()
    manifest = store.read_manifest()
    status = store.read_status()
    resolved = store.read_resolved()

    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>sweeper report: {html.escape(store.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Sweep {html.escape(store.name)}</h1>",
        f"<p class='sub'>{html.escape(store.uri)} · created {html.escape(str(manifest.get('created_at', '?')))}"
        f" · status updated {html.escape(str(status.get('updated_at', '?')))}</p>",
    ]
    if resolved.get("description"):
        parts.append(f"<p>{html.escape(str(resolved['description']))}</p>")
    parts += [
        "<h2>States</h2>",
        f"<p class='states'>trials: {_states(trials)}</p>",
        f"<p class='states'>job attempts: {_states(runs)}</p>",
        "<h2>Ranking</h2>",
        f"<p>objective: <b>{html.escape(objective.metric)}</b> ({objective.mode}, scope "
        f"{html.escape(objective.scope)}, {objective.seed_agg} over seeds)"
        + (
            "; constraints: "
            + html.escape(
                "; ".join(c.model_dump_json(exclude_none=True) for c in objective.constraints)
            )
            if objective.constraints
            else ""
        )
        + ". Only completed job attempts count; non-COMPLETE trials are listed last.</p>",
        _table(table, top_ids),
    ]
    if "error" in trials.columns and trials["error"].notna().any():
        failed = trials.loc[trials["error"].notna(), ["trial", "state", "error"]]
        parts += ["<h2>Errors</h2>", _table(failed.reset_index(drop=True), [])]
    parts.append("<h2>Traces</h2>")
    plots = [
        _trace_plot(traces, "entropy", top_ids),
        _trace_plot(traces, objective.metric, top_ids),
        _scatter(table, keys, objective.metric, top_ids),
    ]
    shown = [p for p in plots if p]
    parts += shown or ["<p>No completed traces yet.</p>"]
    parts += [
        "<h2>Recipe</h2>",
        f"<pre>{html.escape(store.read_recipe_text() if store.exists('recipe.yaml') else '')}</pre>",
        "<h2>Manifest</h2>",
        f"<pre>{html.escape(_pretty(manifest))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _pretty(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)


def write_report(store: SweepStore, out: str | None = None, top: int = 5) -> str:
    """Write the HTML report (default ``<sweep>/report.html``) and return its path or URI.

    The file is self-contained (no network resources): the ranking table, the states of trials
    and job attempts, entropy and objective-metric traces (mean over seeds, top ``top`` trials
    highlighted), the objective vs each searched parameter, the recipe and the manifest.
    """
    text = render_report(store, top=top)
    if out is None:
        return store.write_text("report.html", text)
    parent, _, name = str(out).rstrip("/").rpartition("/")
    return SweepStore(parent or ".").write_text(name, text)
