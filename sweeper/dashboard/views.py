"""The views of a sweep -- progress, curves, Pareto front, search space, importance, the
ranking and a trial's page -- as JSON-able payloads holding Plotly figures.

The live dashboard (:mod:`sweeper.dashboard.server`) sends them to the page, and the report
(:mod:`sweeper.report`) embeds them in one HTML file; the page's script renders both alike with
plotly.js. Figures are Plotly figure dicts (``{"data": [...], "layout": {...}}``), built directly
rather than through ``plotly.graph_objects`` objects, whose per-trace validation costs ~2 ms a
trace (hundreds per view); the tests validate every figure built here with ``graph_objects``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from plotly.colors import qualitative

from sweeper.config.space import axis_values, is_discrete
from sweeper.dashboard.data import (
    IMPORTANCE_MAX_TRIALS,
    IMPORTANCE_MIN_TRIALS,
    Snapshot,
    curve_metrics,
    eta_seconds,
    final_values,
    finite,
    fmt,
    grid_matrix,
    importance_evaluator,
    latest_attempts,
    param_importance,
    pareto_front,
    pass_at_metrics,
    seed_bands,
    step_quantiles,
    trials_done,
    value_interval,
)

DEFAULT_TOP = 5
"""Trials whose curves the overview shows by default (the best by the ranking)."""
MAX_TOP = 50
SAMPLE_ROWS = 200  # eval samples shown on a trial page (latest steps first)
SAMPLE_CHARS = 2000  # a prompt or response longer than this is cut for display

COLORS = qualitative.D3
_BASE_LAYOUT: dict[str, Any] = {
    "margin": {"l": 55, "r": 15, "t": 40, "b": 45},
    "height": 300,
    "template": "plotly_white",
    "uirevision": "keep",  # a refresh keeps the user's zoom and hidden traces
    "hovermode": "closest",
}


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    return {**_BASE_LAYOUT, "title": {"text": title, "font": {"size": 14}}, **extra}


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _floats(values: Any) -> list[float | None]:
    return [finite(v) for v in values]


def objective_label(snap: Snapshot) -> str:
    """E.g. ``pass_at_1 (max, last-2-avg, mean over seeds)``."""
    o = snap.objective
    return f"{o.metric} ({o.mode}, {o.scope}, {o.seed_agg} over seeds)"


def _params_of(row: dict[str, Any], keys: list[str]) -> dict[str, str]:
    return {k: fmt(row.get(k)) for k in keys}


def _params_text(row: dict[str, Any], keys: list[str]) -> str:
    return "<br>".join(f"{k}={fmt(row.get(k))}" for k in keys)


# --------------------------------------------------------------------------- progress


def _counts(snap: Snapshot) -> dict[str, int]:
    counts = snap.status.get("counts")
    if counts:
        return {str(k): int(v) for k, v in counts.items()}
    states = snap.trials["state"].fillna("UNKNOWN").value_counts()  # no status.json yet
    return {str(k): int(v) for k, v in states.items()}


def best_of(snap: Snapshot) -> dict[str, Any] | None:
    """The ranking's leader among COMPLETE trials with a value: trial, value, interval, params."""
    ranked = snap.ranked
    if ranked.empty:
        return None
    done = ranked[(ranked["state"] == "COMPLETE") & np.isfinite(ranked["value"].astype(float))]
    if done.empty:
        return None
    row = done.iloc[0].to_dict()
    interval = value_interval(row)
    return {
        "trial": int(row["trial"]),
        "value": finite(row["value"]),
        "interval": list(interval) if interval else None,
        "feasible": bool(row.get("feasible", True)),
        "params": _params_of(row, snap.param_keys),
        "prob_improvement": finite(row.get("prob_improvement")),
    }


def progress(snap: Snapshot) -> dict[str, Any]:
    """States, finished/total, running jobs with their step, best so far and ETA."""
    st = snap.status
    counts = _counts(snap)
    finished = sum(counts.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL"))
    total = st.get("total_trials") or len(snap.trials) or None
    running = [
        {
            "trial": int(j["trial"]),
            "seed": int(j["seed"]),
            "attempt": int(j.get("attempt", 1)),
            "step": max(int(j.get("step", -1)), 0),
            "steps": int(j.get("steps") or 0),
            "worker": str(j.get("worker", "")),
        }
        for j in st.get("jobs_running") or []
    ]
    return {
        "state": st.get("state") or ("not started" if snap.trials.empty else "unknown"),
        "counts": counts,
        "finished": finished,
        "total": total,
        "done_fraction": (trials_done(st) / total) if total else None,
        "running": running,
        "pending": int(st.get("jobs_pending") or 0),
        "best": best_of(snap),
        "eta_s": eta_seconds(st),
        "started_at": st.get("started_at"),
        "updated_at": st.get("updated_at"),
        "objective": objective_label(snap),
    }


# --------------------------------------------------------------------------- ranking table


def ranking(snap: Snapshot) -> dict[str, Any]:
    """The ranking as display strings: one row per trial, best first."""
    ranked = snap.ranked
    has_ci = "ci_low" in ranked.columns and "ci_high" in ranked.columns
    has_p = "prob_improvement" in ranked.columns
    columns = ["#", "trial", "state", *snap.param_keys, snap.objective.metric]
    columns += ["95% CI" if has_ci else "± std", "seeds", "final entropy"]
    columns += ["P(best)"] if has_p else []
    rows = []
    for rec in ranked.to_dict("records"):
        interval = value_interval(rec)
        spread = ""
        if interval and interval[2] == "95% CI":
            spread = f"[{fmt(interval[0])}, {fmt(interval[1])}]"
        elif interval:
            spread = f"± {fmt(finite(rec['value_std']))}"
        state = str(rec["state"]) + ("" if rec.get("feasible", True) else " (infeasible)")
        cells = [str(rec["rank"]), str(rec["trial"]), state]
        cells += [fmt(rec.get(k)) for k in snap.param_keys]
        cells += [fmt(rec["value"]), spread, str(rec["n_seeds"]), fmt(rec["final_entropy"])]
        cells += [fmt(rec.get("prob_improvement"))] if has_p else []
        rows.append({"trial": int(rec["trial"]), "state": str(rec["state"]), "cells": cells})
    return {"columns": columns, "rows": rows}


# --------------------------------------------------------------------------- curves


def top_trials(snap: Snapshot, top: int) -> list[tuple[int, str]]:
    """(trial, label) of the ``top`` best ranked COMPLETE trials; when fewer have finished, the
    running trials fill the list (their curves so far)."""
    ranked = snap.ranked
    picked: list[tuple[int, str]] = []
    if not ranked.empty:
        ok = ranked[(ranked["state"] == "COMPLETE") & np.isfinite(ranked["value"].astype(float))]
        for i, t in enumerate(ok["trial"].head(top)):
            picked.append((int(t), f"#{i + 1} trial {int(t)}"))
    seen = {t for t, _ in picked}
    for job in snap.status.get("jobs_running") or []:
        t = int(job["trial"])
        if len(picked) < top and t not in seen:
            picked.append((t, f"trial {t} (running)"))
            seen.add(t)
    return picked


def curve_figure(
    traces: pd.DataFrame,
    metric: str,
    trials: list[tuple[int, str]],
    show_legend: bool = True,
    everyone: pd.DataFrame | None = None,
    about_everyone: str = "",
    title: str | None = None,
) -> dict[str, Any]:
    """``metric`` vs step for each of ``trials`` (in order): the mean over seeds as a line and
    the min-max range over seeds as a band. Each trace's ``meta.rank`` is its position (1-based),
    which the page's top-K filter reads. ``everyone``: :func:`step_quantiles` of all trials,
    drawn first as a grey 10-90% band with its median (``about_everyone`` names it), always
    shown: a big sweep plots its best trials' curves and a summary of the rest, never one
    curve per trial."""
    bands = seed_bands(traces, metric)
    by_trial = {int(t): g for t, g in bands.groupby("trial")} if len(bands) else {}
    data: list[dict[str, Any]] = []
    if everyone is not None and len(everyone):
        steps = everyone["step"].to_numpy(dtype="int64").tolist()
        data.append(
            {
                "type": "scatter",
                "x": steps + steps[::-1],
                "y": _floats(everyone["q90"]) + _floats(everyone["q10"])[::-1],
                "mode": "lines",
                "fill": "toself",
                "fillcolor": "rgba(120,120,120,0.15)",
                "line": {"width": 0},
                "hoverinfo": "skip",
                "legendgroup": "all",
                "name": f"{about_everyone}: 10-90%",
                "showlegend": show_legend,
            }
        )
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": steps,
                "y": _floats(everyone["q50"]),
                "line": {"color": "rgba(90,90,90,0.8)", "width": 1, "dash": "dot"},
                "legendgroup": "all",
                "name": f"{about_everyone}: median",
                "hovertemplate": f"{about_everyone}<br>step %{{x}}<br>median %{{y:.4g}}<extra></extra>",
                "showlegend": show_legend,
            }
        )
    for pos, (trial, label) in enumerate(trials, start=1):
        g = by_trial.get(trial)
        if g is None:
            continue
        color = COLORS[(pos - 1) % len(COLORS)]
        steps = g["step"].to_numpy(dtype="int64").tolist()
        meta = {"rank": pos, "trial": trial}
        dashed = "running" in label
        if (g["max"] > g["min"]).any():
            data.append(
                {
                    "type": "scatter",
                    "x": steps + steps[::-1],
                    "y": _floats(g["max"]) + _floats(g["min"])[::-1],
                    "mode": "lines",
                    "fill": "toself",
                    "fillcolor": _rgba(color, 0.15),
                    "line": {"width": 0},
                    "hoverinfo": "skip",
                    "showlegend": False,
                    "legendgroup": str(trial),
                    "name": f"{label} min-max",
                    "meta": meta,
                }
            )
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": steps,
                "y": _floats(g["mean"]),
                "customdata": [
                    [finite(a), finite(b), int(n)]
                    for a, b, n in zip(g["min"], g["max"], g["n"], strict=True)
                ],
                "hovertemplate": (
                    f"{label}<br>step %{{x}}<br>mean %{{y:.4g}}"
                    "<br>min %{customdata[0]:.4g} max %{customdata[1]:.4g}"
                    "<br>seeds %{customdata[2]}<extra></extra>"
                ),
                "line": {"color": color, "width": 2, "dash": "dash" if dashed else "solid"},
                "name": label,
                "legendgroup": str(trial),
                "showlegend": show_legend,
                "meta": meta,
            }
        )
    layout = _layout(
        title or metric,
        xaxis={"title": {"text": "step"}},
        yaxis={"title": {"text": metric}},
        showlegend=show_legend,
        legend={"font": {"size": 10}},
    )
    return {"data": data, "layout": layout}


def curves(snap: Snapshot, top: int) -> tuple[list[dict[str, Any]], list[str]]:
    """One curve figure per metric of :data:`~sweeper.dashboard.data.CURVE_METRICS` present,
    for the ``top`` best trials; and the labels of those trials."""
    picked = top_trials(snap, top)
    if not picked:
        return [], []
    full = latest_attempts(snap.trial_traces([t for t, _ in picked]))
    n_trials = int(snap.completed["trial"].nunique()) if len(snap.completed) else 0
    out = []
    for i, metric in enumerate(curve_metrics(full, snap.objective.metric)):
        everyone, about, title = None, "", metric
        if n_trials > len(picked):  # the others: a band, not a curve each
            everyone, used, runs = step_quantiles(snap.completed, metric)
            sample = f", {used:,} of {runs:,} runs sampled" if used < runs else ""
            about = f"all {n_trials:,} trials{sample}"
            title = f"{metric}: best {len(picked)} of {n_trials:,} trials, band: all"
        figure = curve_figure(full, metric, picked, i == 0, everyone, about, title)
        out.append({"metric": metric, "figure": figure})
    return out, [label for _, label in picked]


# --------------------------------------------------------------------------- Pareto front


def pareto(snap: Snapshot) -> dict[str, Any] | None:
    """Final pass@k (each k, and mean@n; a dropdown picks one) vs final entropy per trial with
    the Pareto front (both maximised: keep exploring, solve more). Completed attempts only."""
    ys = list(dict.fromkeys([*pass_at_metrics(snap.completed.columns), "mean_at_n"]))
    ys += [snap.objective.metric] if snap.objective.metric not in ys else []
    finals = final_values(snap.completed, ["entropy", *ys])
    ys = [m for m in ys if m in finals.columns and finals[m].notna().any()]
    if "entropy" not in finals.columns or not ys:
        return None
    keys = snap.param_keys
    about = {
        int(r["trial"]): f"trial {int(r['trial'])}<br>" + _params_text(r, keys)
        for r in snap.ranked.to_dict("records")
    }
    data, buttons = [], []
    first = snap.objective.metric if snap.objective.metric in ys else ys[0]
    for metric in ys:
        pts = finals[["entropy", metric]].dropna()
        trial_ids = [int(t) for t in pts.index]
        text = [about.get(t, f"trial {t}") for t in trial_ids]
        front = pareto_front(pts["entropy"], pts[metric])
        order = np.argsort(pts["entropy"].to_numpy()[front])
        visible = metric == first
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": _floats(pts["entropy"]),
                "y": _floats(pts[metric]),
                "text": text,
                "customdata": trial_ids,
                "hovertemplate": "%{text}<br>entropy %{x:.4g}<br>"
                + metric
                + " %{y:.4g}<extra></extra>",
                "marker": {"color": "rgba(100,100,100,0.55)", "size": 7},
                "name": "trials",
                "visible": visible,
            }
        )
        fx = pts["entropy"].to_numpy()[front][order]
        fy = pts[metric].to_numpy()[front][order]
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "x": _floats(fx),
                "y": _floats(fy),
                "text": [text[i] for i in np.flatnonzero(front)[order]],
                "customdata": [trial_ids[i] for i in np.flatnonzero(front)[order]],
                "hovertemplate": "Pareto front<br>%{text}<br>entropy %{x:.4g}<br>"
                + metric
                + " %{y:.4g}<extra></extra>",
                "line": {"color": COLORS[3], "shape": "hv", "width": 1.5},
                "marker": {"color": COLORS[3], "size": 10},
                "name": "Pareto front",
                "visible": visible,
            }
        )
    for i, metric in enumerate(ys):
        mask = [j // 2 == i for j in range(len(data))]
        buttons.append(
            {
                "label": metric,
                "method": "update",
                "args": [{"visible": mask}, {"yaxis.title.text": f"final {metric}"}],
            }
        )
    layout = _layout(
        "final pass@k vs final entropy (mean over seeds)",
        height=380,
        xaxis={"title": {"text": "final entropy"}},
        yaxis={"title": {"text": f"final {first}"}},
        legend={"orientation": "h", "y": -0.2},
    )
    if len(ys) > 1:
        layout["updatemenus"] = [
            {
                "buttons": buttons,
                "active": ys.index(first),
                "x": 1.0,
                "xanchor": "right",
                "y": 1.18,
                "yanchor": "top",
            }
        ]
    return {"data": data, "layout": layout}


# --------------------------------------------------------------------------- search space


def _done_rows(snap: Snapshot) -> pd.DataFrame:
    r = snap.ranked
    return r[np.isfinite(r["value"].astype(float))] if len(r) else r


def space_view(snap: Snapshot) -> dict[str, Any] | None:
    """How the value varies over the searched parameters: a heatmap for a 2-D grid, value vs
    the parameter for one, a scatter coloured by value for two continuous ones, parallel
    coordinates for three or more. ``kind`` names which."""
    keys = snap.param_keys
    done = _done_rows(snap)
    if not keys or done.empty:
        return None
    metric = snap.objective.metric
    specs = [snap.space.get(k) for k in keys]
    if len(keys) == 2 and all(s is not None and is_discrete(s) for s in specs):
        return {"kind": "heatmap", "figure": heatmap(snap)}
    if len(keys) == 1:
        return {"kind": "line", "figure": value_vs_param(snap, keys[0])}
    if len(keys) == 2:
        x, y = keys
        fig = {
            "data": [
                {
                    "type": "scatter",
                    "mode": "markers",
                    "x": _axis_values(done[x]),
                    "y": _axis_values(done[y]),
                    "customdata": [int(t) for t in done["trial"]],
                    "marker": {
                        "color": _floats(done["value"]),
                        "colorscale": "Viridis",
                        "showscale": True,
                        "colorbar": {"title": {"text": metric}},
                        "size": 9,
                    },
                    "hovertemplate": f"trial %{{customdata}}<br>{x} %{{x}}<br>{y} %{{y}}"
                    f"<br>{metric} %{{marker.color:.4g}}<extra></extra>",
                }
            ],
            "layout": _layout(
                f"{metric} over the searched parameters",
                height=380,
                xaxis={"title": {"text": x}},
                yaxis={"title": {"text": y}},
            ),
        }
        return {"kind": "scatter", "figure": fig}
    return {"kind": "parcoords", "figure": parallel_coordinates(snap)}


def _axis_values(column: pd.Series) -> list[Any]:
    """Numbers stay numbers; anything else (``inf``, text) becomes its display string."""
    values = list(column)
    nums = [finite(v) for v in values]
    if all(n is not None for n in nums):
        return nums
    return [fmt(v) for v in values]


def heatmap(snap: Snapshot) -> dict[str, Any]:
    """The objective over a 2-D grid (first key across, second down), a trial per cell."""
    x, y = snap.param_keys
    specs = {k: snap.space.get(k) for k in (x, y)}
    axes = {
        k: axis_values(s) if s is not None and is_discrete(s) else None for k, s in specs.items()
    }
    m = grid_matrix(snap.ranked, x, y, x_values=axes[x], y_values=axes[y])
    metric = snap.objective.metric
    z = [[finite(v) for v in row] for row in m.z]
    return {
        "data": [
            {
                "type": "heatmap",
                "x": m.xs,
                "y": m.ys,
                "z": z,
                "customdata": m.trials.tolist(),
                "colorscale": "Viridis",
                "texttemplate": "%{z:.3g}",
                "colorbar": {"title": {"text": metric}},
                "hovertemplate": f"trial %{{customdata}}<br>{x} %{{x}}<br>{y} %{{y}}<br>"
                f"{metric} %{{z:.4g}}<extra></extra>",
                "hoverongaps": False,
            }
        ],
        "layout": _layout(
            f"{metric} over the grid",
            height=380,
            xaxis={"title": {"text": x}, "type": "category"},
            yaxis={"title": {"text": y}, "type": "category"},
        ),
    }


def value_vs_param(snap: Snapshot, key: str) -> dict[str, Any]:
    """The objective of each trial vs the one searched parameter, with its interval."""
    done = _done_rows(snap)
    lows, highs = [], []
    for rec in done.to_dict("records"):
        iv = value_interval(rec)
        v = finite(rec["value"]) or 0.0
        lows.append(v - iv[0] if iv else 0.0)
        highs.append(iv[1] - v if iv else 0.0)
    metric = snap.objective.metric
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "markers",
                "x": _axis_values(done[key]),
                "y": _floats(done["value"]),
                "customdata": [int(t) for t in done["trial"]],
                "error_y": {"type": "data", "array": highs, "arrayminus": lows, "visible": True},
                "marker": {"size": 9, "color": COLORS[0]},
                "hovertemplate": f"trial %{{customdata}}<br>{key} %{{x}}<br>{metric} %{{y:.4g}}"
                "<extra></extra>",
            }
        ],
        "layout": _layout(
            f"{metric} vs {key}",
            height=360,
            xaxis={"title": {"text": key}},
            yaxis={"title": {"text": metric}},
        ),
    }


def parallel_coordinates(snap: Snapshot) -> dict[str, Any]:
    """One line per trial with a value across every parameter, then the value and the final
    entropy; coloured by the value. Text or non-finite values get one tick each."""
    done = _done_rows(snap)
    dims = []
    for key in [*snap.param_keys, "value", "final_entropy"]:
        values = list(done[key])
        nums = [finite(v) for v in values]
        label = snap.objective.metric if key == "value" else key
        if all(n is not None for n in nums):
            dims.append({"label": label, "values": nums})
            continue
        cats = sorted({fmt(v) for v in values})
        dims.append(
            {
                "label": label,
                "values": [cats.index(fmt(v)) for v in values],
                "tickvals": list(range(len(cats))),
                "ticktext": cats,
            }
        )
    return {
        "data": [
            {
                "type": "parcoords",
                "dimensions": dims,
                "line": {
                    "color": _floats(done["value"]),
                    "colorscale": "Viridis",
                    "showscale": True,
                },
            }
        ],
        "layout": _layout(
            f"parallel coordinates ({len(done)} trials)",
            height=400,
            margin={"l": 60, "r": 60, "t": 70, "b": 30},
        ),
    }


# --------------------------------------------------------------------------- importance


def importance(snap: Snapshot) -> dict[str, Any]:
    """Parameter importance by an Optuna evaluator once enough trials have a value; else a
    message saying how many more are needed."""
    done = _done_rows(snap)
    done = done[done["state"] == "COMPLETE"] if len(done) else done
    base = {"version": snap.version, "figure": None}
    if not snap.space:
        return {**base, "message": "no searched parameters"}
    if len(done) < IMPORTANCE_MIN_TRIALS:
        need = IMPORTANCE_MIN_TRIALS - len(done)
        return {**base, "message": f"after {need} more completed trial(s)"}
    total = len(done)
    if total > IMPORTANCE_MAX_TRIALS:  # a seeded random sample: the same figure every time
        done = done.sample(n=IMPORTANCE_MAX_TRIALS, random_state=0)
    evaluator, name = importance_evaluator(len(done))
    on = f"a random {len(done):,} of {total:,} trials" if total > len(done) else f"{total} trials"
    scores = param_importance(
        done, snap.space, snap.objective.mode, grid=snap.search_kind == "grid", evaluator=evaluator
    )
    if not scores:
        return {**base, "message": "no parameter varied across the completed trials"}
    keys = sorted(scores, key=lambda k: scores[k])
    fig = {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "x": [scores[k] for k in keys],
                "y": keys,
                "marker": {"color": COLORS[0]},
                "hovertemplate": "%{y}: %{x:.3f}<extra></extra>",
            }
        ],
        "layout": _layout(
            f"parameter importance for {snap.objective.metric} ({name}, {on})",
            height=max(200, 60 + 40 * len(keys)),
            xaxis={"title": {"text": "importance (sums to 1)"}, "range": [0, 1]},
            margin={"l": 160, "r": 15, "t": 40, "b": 45},
        ),
    }
    return {**base, "figure": fig, "message": "", "evaluator": name}


# --------------------------------------------------------------------------- overview


def overview(snap: Snapshot, top: int = DEFAULT_TOP) -> dict[str, Any]:
    """Everything on the dashboard's first page (importance comes apart: :func:`importance`)."""
    top = min(max(int(top), 1), MAX_TOP)
    curve_figs, labels = curves(snap, top)
    return {
        "version": snap.version,
        "top": top,
        "progress": progress(snap),
        "ranking": ranking(snap),
        "curves": curve_figs,
        "curve_trials": labels,
        "pareto": pareto(snap),
        "space": space_view(snap),
    }


def sweep_info(snap: Snapshot, recipe_text: str = "") -> dict[str, Any]:
    """What does not change while a sweep runs: name, location, description, recipe."""
    return {
        "name": snap.name,
        "uri": snap.uri,
        "description": str(snap.resolved.get("description") or ""),
        "objective": objective_label(snap),
        "param_keys": snap.param_keys,
        "recipe": recipe_text,
    }


# --------------------------------------------------------------------------- a trial


def _time(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return pd.Timestamp(value).isoformat(timespec="seconds")


def attempts_table(runs: pd.DataFrame, trial: int) -> dict[str, Any]:
    """The trial's job attempts from runs.parquet: seed, attempt, state, node, worker, times,
    error."""
    cols = ["seed", "attempt", "state", "node", "worker", "started_at", "ended_at", "error"]
    mine = runs[runs["trial"] == trial].sort_values(["seed", "attempt"], kind="stable")
    rows = []
    for rec in mine.to_dict("records"):
        cells = [str(rec["seed"]), str(rec["attempt"]), fmt(rec.get("state"))]
        cells += [fmt(rec.get("node")), fmt(rec.get("worker"))]
        cells += [_time(rec.get("started_at")), _time(rec.get("ended_at")), fmt(rec.get("error"))]
        rows.append(cells)
    return {"columns": cols, "rows": rows}


def seed_curve_figure(traces: pd.DataFrame, metric: str, runs: pd.DataFrame) -> dict[str, Any]:
    """``metric`` vs step, one line per (seed, attempt): each seed's latest attempt solid, the
    earlier ones (lost or failed tries) dotted."""
    state = {(int(r["seed"]), int(r["attempt"])): str(r["state"]) for r in runs.to_dict("records")}
    latest = traces.groupby("seed")["attempt"].transform("max") == traces["attempt"]
    data = []
    seeds = sorted({int(s) for s in traces["seed"]})
    for (seed, attempt), g in traces.groupby(["seed", "attempt"], sort=True):
        values = pd.to_numeric(g[metric], errors="coerce").to_numpy(dtype="float64")
        ok = np.isfinite(values)
        if not ok.any():
            continue
        is_latest = bool(latest[g.index].all())
        run_state = state.get((int(seed), int(attempt)), "RUNNING")
        color = COLORS[seeds.index(int(seed)) % len(COLORS)]
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers" if ok.sum() <= 30 else "lines",
                "x": g["step"].to_numpy()[ok].tolist(),
                "y": values[ok].tolist(),
                "name": f"seed {seed} (attempt {attempt}, {run_state})",
                "line": {"color": color, "dash": "solid" if is_latest else "dot"},
                "marker": {"size": 5},
                "opacity": 1.0 if is_latest else 0.6,
            }
        )
    return {
        "data": data,
        "layout": _layout(
            metric,
            xaxis={"title": {"text": "step"}},
            yaxis={"title": {"text": metric}},
            height=320,
            legend={"font": {"size": 10}, "orientation": "h", "y": -0.3},
        ),
    }


def samples_table(samples: pd.DataFrame) -> dict[str, Any]:
    """The latest :data:`SAMPLE_ROWS` eval samples (latest step first) as display strings."""
    if samples.empty:
        return {"columns": [], "rows": [], "total": 0}
    keys = ["step", "seed", "attempt"]
    front = [c for c in keys if c in samples.columns]
    rest = [c for c in samples.columns if c not in (*front, "trial")]
    order = samples.sort_values(front, ascending=False, kind="stable") if front else samples
    rows = []
    for rec in order.head(SAMPLE_ROWS).to_dict("records"):
        cells = []
        for c in [*front, *rest]:
            v = rec[c]
            text = v if isinstance(v, str) else fmt(v)
            cells.append(text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + " …")
        rows.append(cells)
    return {"columns": [*front, *rest], "rows": rows, "total": len(samples)}


def trial_view(snap: Snapshot, trial: int) -> dict[str, Any] | None:
    """A trial's page: params, state, value and interval, per-seed curves of every metric, job
    attempts, eval samples; None for an unknown trial."""
    rows = snap.trials[snap.trials["trial"] == trial]
    if rows.empty:
        return None
    rec = rows.iloc[0].to_dict()
    ranked = snap.ranked[snap.ranked["trial"] == trial]
    rrow = ranked.iloc[0].to_dict() if len(ranked) else {}
    traces = snap.trial_traces([trial])
    runs = snap.runs[snap.runs["trial"] == trial]
    interval = value_interval(rrow) if rrow else None
    figures = []
    if len(traces):
        for metric in curve_metrics(traces, snap.objective.metric):
            figures.append({"metric": metric, "figure": seed_curve_figure(traces, metric, runs)})
    running = [j for j in snap.status.get("jobs_running") or [] if int(j["trial"]) == trial]
    return {
        "version": snap.version,
        "trial": trial,
        "rank": int(rrow["rank"]) if rrow else None,
        "state": str(rec.get("state")),
        "params": _params_of(rec, snap.param_keys),
        "objective": objective_label(snap),
        "value": finite(rrow.get("value")) if rrow else None,
        "interval": list(interval) if interval else None,
        "n_seeds": int(rrow.get("n_seeds", 0)) if rrow else 0,
        "final_entropy": finite(rrow.get("final_entropy")) if rrow else None,
        "feasible": bool(rrow.get("feasible", True)) if rrow else True,
        "error": fmt(rec.get("error")),
        "running": [{"seed": int(j["seed"]), "step": int(j.get("step", -1))} for j in running],
        "attempts": attempts_table(snap.runs, trial),
        "curves": figures,
        "samples": samples_table(snap.samples(trial)),
    }


def report_trials(snap: Snapshot, top: int, limit: int = 50) -> list[int]:
    """The trials a report embeds a page for: all of a small sweep (up to ``limit``), else the
    ``top`` best and then the failed ones, up to ``limit``."""
    all_trials = [int(t) for t in snap.ranked["trial"]] if len(snap.ranked) else []
    if len(all_trials) <= limit:
        return all_trials
    best = all_trials[:top]
    failed = [int(t) for t in snap.ranked.loc[snap.ranked["state"] == "FAIL", "trial"]]
    out = list(dict.fromkeys(best + failed))
    return out[: max(limit, top)]
