"""Rich renderings of a sweep's status (used by `run`, `status` and `watch`) and tables."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}"
    return str(value)


def status_view(status: dict[str, Any]) -> RenderableType:
    """Header (state, counts, best so far), a trials progress bar and the running jobs."""
    counts = status.get("counts", {})
    finished = sum(counts.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL"))
    total = status.get("total_trials") or max(finished + counts.get("RUNNING", 0), 1)
    head = Text.assemble(
        (f"{status.get('sweep', '?')} ", "bold"),
        (f"[{status.get('state', '?')}]  ", "cyan"),
        f"trials {finished}/{total} done · ",
        (f"{counts.get('RUNNING', 0)} running", "yellow"),
        " · ",
        (f"{counts.get('COMPLETE', 0)} complete", "green"),
        " · ",
        (f"{counts.get('PRUNED', 0)} pruned", "magenta"),
        " · ",
        (f"{counts.get('FAIL', 0)} failed", "red"),
    )
    objective = status.get("objective", {})
    best = status.get("best")
    best_line = Text("best: -", style="dim")
    if best:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in (best.get("params") or {}).items())
        best_line = Text.assemble(
            "best: ",
            (f"{objective.get('metric', 'value')}={_fmt(best['value'])}", "bold green"),
            f"  trial {best['trial']}  {params}",
        )
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        "trials", ProgressBar(total=total, completed=finished, width=40), f"{finished}/{total}"
    )
    parts: list[RenderableType] = [head, bar, best_line]
    jobs = status.get("jobs_running") or []
    if jobs:
        table = Table(box=None, pad_edge=False, show_header=True, header_style="dim")
        for col in ("trial", "seed", "attempt", "step", "progress", "worker"):
            table.add_column(col)
        for j in jobs:
            steps = max(int(j.get("steps") or 1), 1)
            step = max(int(j.get("step", -1)), 0)
            table.add_row(
                str(j["trial"]),
                str(j["seed"]),
                str(j["attempt"]),
                f"{step}/{steps}",
                ProgressBar(total=steps, completed=step, width=24),
                str(j.get("worker", "")),
            )
        parts.append(table)
    pending = status.get("jobs_pending")
    if pending:
        parts.append(Text(f"{pending} jobs queued", style="dim"))
    parts.append(Text(f"updated {status.get('updated_at', '?')}", style="dim"))
    return Group(*parts)


def rank_table(ranked: pd.DataFrame, metric: str, max_rows: int = 50) -> Table:
    """The ranking: rank, trial, each searched param, objective mean ± std over seeds, seeds,
    final entropy, feasibility and state. Headers fold rather than truncate."""
    fixed = {"rank", "trial", "state", "value", "value_std", "n_seeds", "final_entropy", "feasible"}
    params = [c for c in ranked.columns if c not in fixed]
    table = Table(title=f"ranking by {metric}", header_style="bold")
    for col in ["#", "trial", *params, f"{metric} (mean ± std)", "seeds", "final entropy", "state"]:
        table.add_column(col, overflow="fold")
    for _, row in ranked.head(max_rows).iterrows():
        value = f"{_fmt(row['value'])} ± {_fmt(row['value_std'])}"
        state = str(row["state"]) + ("" if row.get("feasible", True) else " (infeasible)")
        table.add_row(
            str(row["rank"]),
            str(row["trial"]),
            *(_fmt(row[p]) for p in params),
            value,
            str(row["n_seeds"]),
            _fmt(row["final_entropy"]),
            state,
        )
    return table
