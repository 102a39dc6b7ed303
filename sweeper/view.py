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
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in best["params"].items())
        best_line = Text.assemble(
            "best: ",
            (f"{objective.get('metric', 'value')}={_fmt(best['value'])}", "bold green"),
            f"  trial {best['trial']}  {params}",
        )
    parts: list[RenderableType] = [head, ProgressBar(total=total, completed=finished), best_line]
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


def frame_table(frame: pd.DataFrame, title: str | None = None, max_rows: int = 50) -> Table:
    """A DataFrame as a rich table (numbers to 4 significant digits)."""
    table = Table(title=title, header_style="bold")
    for col in frame.columns:
        table.add_column(str(col), justify="right" if frame[col].dtype.kind in "fiu" else "left")
    for _, row in frame.head(max_rows).iterrows():
        table.add_row(*(_fmt(v) for v in row.tolist()))
    return table
