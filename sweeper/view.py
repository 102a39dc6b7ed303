"""Rich renderings of a sweep's status (used by `run`, `status` and `watch`) and tables."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from sweeper.jobstate import JobReport


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}"
    return str(value)


def job_view(report: JobReport) -> Text:
    """What the Jobs API said about a stale sweep's controller job
    (:func:`sweeper.jobstate.report_lines`): a failure in red with the driver's last log lines,
    anything else as a dim note."""
    from sweeper.jobstate import report_lines

    lines = report_lines(report)
    if report.failed:
        return Text.assemble((lines[0], "bold red"), *("\n" + line for line in lines[1:]))
    return Text("\n".join(lines), style="yellow" if report.state == "UNREACHABLE" else "dim")


def status_view(status: dict[str, Any], job: JobReport | None = None) -> RenderableType:
    """Header (state, counts, best so far), a trials progress bar and the running jobs; with
    ``job`` (a stale submitted sweep, :func:`sweeper.jobstate.check_job`) what the Jobs API said
    under it, and FAILED as the state when the controller job failed."""
    if job is not None and job.failed:
        status = {**status, "state": "FAILED"}
    counts = status.get("counts", {})
    finished = sum(counts.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL"))
    total = status.get("total_trials") or max(finished + counts.get("RUNNING", 0), 1)
    head = Text.assemble(
        (f"{status.get('sweep', '?')} ", "bold"),
        (
            f"[{status.get('state', '?')}]  ",
            "bold red" if status.get("state") == "FAILED" else "cyan",
        ),
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
    if job is not None:
        parts.append(job_view(job))
    return Group(*parts)


def _interval(row: Any) -> str:
    """``value [ci_low, ci_high]``, or the bare value without an interval (one seed)."""
    if pd.isna(row["ci_low"]):
        return _fmt(row["value"])
    return f"{_fmt(row['value'])} [{row['ci_low']:.3g}, {row['ci_high']:.3g}]"


def rank_table(
    ranked: pd.DataFrame, metric: str, max_rows: int = 50, verdict: str | None = None
) -> Table:
    """The ranking: rank, trial, each searched param, the objective's seed aggregate with its
    95% interval over seeds, seeds, P(leader better than this trial), final entropy and state;
    ``verdict`` (:func:`sweeper.rank.verdict`) as the caption under it, with a note when an
    interval rests on fewer than 5 seeds. Headers fold rather than truncate."""
    from sweeper.rank import VALUE_COLUMNS

    fixed = {"rank", "trial", "state", "racing", *VALUE_COLUMNS}
    params = [c for c in ranked.columns if c not in fixed]
    shown = ranked.head(max_rows)
    notes = [verdict] if verdict else []
    few = sorted({int(n) for n in shown["n_seeds"] if 2 <= n <= 4})
    if few:
        notes.append(
            f"Intervals from {'/'.join(map(str, few))} seeds cover the truth less often than 95% "
            "(a bootstrap over n seeds stays inside their range: at most 50% at n = 2, 75% at 3, "
            "88% at 4)."
        )
    table = Table(
        title=f"ranking by {metric}",
        header_style="bold",
        caption="\n".join(notes) or None,
        caption_justify="left",
    )
    columns = ["#", "trial", *params, f"{metric} [95% CI]", "seeds", "P(#1 better)"]
    for col in [*columns, "final entropy", "state"]:
        table.add_column(col, overflow="fold")
    for _, row in shown.iterrows():
        state = str(row["state"]) + ("" if row.get("feasible", True) else " (infeasible)")
        if isinstance(row.get("racing"), str):
            state += f" · {row['racing']}"  # why its race ended (search.racing)
        table.add_row(
            str(row["rank"]),
            str(row["trial"]),
            *(_fmt(row[p]) for p in params),
            _interval(row),
            str(row["n_seeds"]),
            _fmt(row["prob_improvement"]),
            _fmt(row["final_entropy"]),
            state,
        )
    return table
