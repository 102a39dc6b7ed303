"""The `sweeper` command line: thin commands, one function call each, rich output.

Exit codes: 0 ok, 1 run failure (no trial completed, or the controller crashed), 2 bad input:
an :class:`~sweeper.errors.InputError` or a usage error (an unknown option, ``--top abc``), one
line on stderr either way.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from sweeper.errors import InputError

try:  # typer vendors click (typer._click) since 0.2x; the errors it raises are that copy's
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - an older typer, on click itself
    from click import exceptions as click_errors  # type: ignore[no-redef]


def _usage_error_line(err: Any) -> str:
    """A click usage error as one line: the command, the problem and where help is."""
    ctx = getattr(err, "ctx", None)
    words = ctx.command_path.split()[1:] if ctx is not None else []
    command = " ".join(["sweeper", *words])  # the program's name, however it was started
    message = " ".join(err.format_message().split())
    return f"error: {command}: {message} (see `{command} --help`)"


@contextlib.contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    try:
        yield
    except click_errors.NoArgsIsHelpError:
        raise  # `sweeper` alone prints the help
    except click_errors.ClickException as err:
        typer.echo(_usage_error_line(err), err=True)
        raise typer.Exit(err.exit_code) from None


class _OneLineErrors(TyperGroup):
    """Usage errors (an unknown option, ``--top abc``, a missing argument) as one line on stderr
    and exit code 2, instead of click's multi-line box."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _one_line_usage_errors():
            return super().invoke(ctx)


app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    help="Sweep the clipping knobs of RLVR policy losses on Ray; rank and export the best.",
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a recipe value: --set job.loss.eps_high=0.28 (repeatable)."
    ),
]
StorageOpt = Annotated[
    str | None, typer.Option("--storage", help="Directory or URI where sweep dirs go.")
]
ClusterOpt = Annotated[
    str | None, typer.Option("--cluster", help="Cluster file (clusters/*.yaml).")
]
AddressOpt = Annotated[
    str | None, typer.Option("--address", help="Ray cluster address (instead of a cluster file).")
]


def handles_input_errors(fn: F) -> F:
    """Bad input -> one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            line = " ".join(str(exc).split())  # one line, whatever the message held
            err_console.print(Text.assemble(("error:", "red"), " ", line), soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _exit_for(status: dict[str, Any]) -> None:
    counts = status.get("counts", {})
    if status.get("state") == "finished" and counts.get("COMPLETE", 0) == 0:
        err_console.print("[red]no trial completed[/red]")
        raise typer.Exit(1)


def _live_runner() -> tuple[Live, Callable[[dict[str, Any]], None]]:
    from sweeper.view import status_view

    live = Live(console=console, refresh_per_second=4, transient=False)
    return live, lambda status: live.update(status_view(status))


@app.command()
@handles_input_errors
def run(
    recipe: Annotated[str, typer.Argument(help="Recipe YAML file.")],
    overrides: SetOpt = None,
    storage: StorageOpt = None,
    cluster: ClusterOpt = None,
    address: AddressOpt = None,
) -> None:
    """Run a sweep here, in the foreground, with live progress."""
    from sweeper.sweeps import prepare_sweep, run_sweep

    parsed, cluster_cfg, store = prepare_sweep(recipe, overrides, storage, cluster, address)
    console.print(f"sweep dir: [bold]{store.uri}[/bold]")
    live, update = _live_runner()
    with live:
        status = run_sweep(parsed, store, cluster_cfg, address=address, on_update=update)
    console.print()
    console.print(f"[bold]{status['state']}[/bold] — sweep dir: {store.uri}")
    _exit_for(status)


@app.command()
@handles_input_errors
def submit(
    recipe: Annotated[str, typer.Argument(help="Recipe YAML file.")],
    cluster: ClusterOpt = None,
    address: AddressOpt = None,
    overrides: SetOpt = None,
    storage: StorageOpt = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Wait until the controller has written its first status.json (exit 1 if its "
            "job fails or --timeout passes first).",
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option(min=1.0, max=86400.0, help="Seconds --wait waits at most.")
    ] = 300.0,
) -> None:
    """Submit a sweep to a Ray cluster as a Ray Job; returns at once (or, with --wait, once its
    controller runs)."""
    from sweeper.submit import submit_sweep

    info = submit_sweep(recipe, overrides, storage, cluster, address)
    console.print(f"submitted [bold]{info['submission_id']}[/bold] to {info['address']}")
    console.print(f"sweep dir: {info['sweep_dir']}", soft_wrap=True)
    if wait:
        _wait_for_controller(info, timeout)
    console.print(f"follow it: sweeper watch {info['sweep_dir']}", soft_wrap=True)


def _wait_for_controller(info: dict[str, Any], timeout: float) -> None:
    """``submit --wait``: a spinner until the controller's first status.json (returns), its
    job's failure or the timeout (both: what is known, exit 1)."""
    from sweeper.jobstate import JobReport, report_lines, wait_for_controller
    from sweeper.store import SweepStore
    from sweeper.view import job_view

    store = SweepStore.open(info["sweep_dir"])
    what = f"waiting for the controller of {info['submission_id']} to start"

    with console.status(what) as spinner:

        def progress(report: JobReport | None, elapsed: float) -> None:
            known = f" — {report_lines(report)[0]}" if report is not None else ""
            spinner.update(Text(f"{what} ({elapsed:.0f} s){known}"))

        done = wait_for_controller(store, timeout, on_report=progress)
    if done.outcome == "started":
        console.print(
            f"controller started ({done.status.get('state')}) after {done.waited:.0f} s: "
            f"{store.uri}/status.json",
            soft_wrap=True,
        )
        return
    if done.outcome == "failed" and done.report is not None:
        err_console.print(job_view(done.report), soft_wrap=True)
        raise typer.Exit(1)
    known = report_lines(done.report)[0] if done.report is not None else "status.json unchanged"
    err_console.print(
        Text(
            f"timed out after {timeout:g} s waiting for the controller's first status.json: "
            f"{known}. The job was left as it is; `sweeper watch {store.uri}` follows it.",
            style="red",
        ),
        soft_wrap=True,
    )
    raise typer.Exit(1)


@app.command()
@handles_input_errors
def status(sweep: Annotated[str, typer.Argument(help="Sweep dir (path or URI).")]) -> None:
    """Print a sweep's current status. A submitted sweep whose status.json looks stale is
    checked with the cluster's Jobs API: a failed controller job prints FAILED with its last
    log lines and exits 1."""
    from sweeper.jobstate import check_job
    from sweeper.sweeps import open_sweep
    from sweeper.view import status_view

    store = open_sweep(sweep)
    st = store.read_status()
    job = check_job(store, st)
    if not st and job is None:
        raise InputError(f"{store.uri}: no status.json yet (has the sweep started?)")
    view = status_view(st or {"sweep": store.name, "state": "submitted"}, job=job)
    console.print(view, soft_wrap=True)  # log lines whole, not folded to the pipe's 80 columns
    if job is not None and job.failed:
        raise typer.Exit(1)


WATCH_JOB_SECONDS = 5.0
"""``watch`` asks the Jobs API about a stale submitted sweep at most this often."""


@app.command()
@handles_input_errors
def watch(
    sweep: Annotated[str, typer.Argument(help="Sweep dir (path or URI).")],
    interval: Annotated[
        float, typer.Option(min=0.05, max=3600.0, help="Seconds between refreshes.")
    ] = 2.0,
) -> None:
    """Follow a sweep live until it ends (exit 1 if its submitted controller job fails)."""
    from sweeper.jobstate import check_job, is_stale, read_submission
    from sweeper.sweeps import open_sweep
    from sweeper.view import status_view

    store = open_sweep(sweep)
    store.read_status()  # a damaged status.json is one line here, not a broken live view
    job = None
    asked = -float("inf")
    with Live(console=console, refresh_per_second=4) as live:
        while True:
            st = store.read_status() or {"sweep": store.name, "state": "starting"}
            if time.monotonic() - asked >= max(interval, WATCH_JOB_SECONDS):
                job, asked = check_job(store, st), time.monotonic()
            elif job is not None and not is_stale(st, read_submission(store)):
                job = None
            live.update(status_view(st, job=job))
            if job is not None and job.failed:
                break
            active = st.get("state") in ("running", "starting", "submitted")
            if not active and (job is None or job.state in ("SUCCEEDED", "UNREACHABLE")):
                break
            time.sleep(interval)
    if job is not None and job.failed:
        raise typer.Exit(1)


@app.command()
@handles_input_errors
def resume(
    sweep: Annotated[str, typer.Argument(help="Sweep dir (path or URI).")],
    cluster: ClusterOpt = None,
    address: AddressOpt = None,
) -> None:
    """Finish a sweep whose controller ended: finished trials stay, unfinished ones rerun.

    With a Jobs API address (``--address http://HEAD:8265`` or such a cluster file) the
    controller is submitted to that cluster as a new Ray Job and this returns at once."""
    from sweeper.submit import is_job_submission, submit_resume
    from sweeper.sweeps import resume_sweep

    if is_job_submission(cluster, address):
        info = submit_resume(sweep, cluster, address)
        if info.get("note"):  # it had finished: nothing submitted, nothing changed
            console.print(info["note"], soft_wrap=True)
            return
        console.print(f"submitted [bold]{info['submission_id']}[/bold] to {info['address']}")
        console.print(f"follow it: sweeper watch {info['sweep_dir']}", soft_wrap=True)
        return
    live, update = _live_runner()
    with live:
        st = resume_sweep(sweep, cluster, address, on_update=update)
    if st.get("note"):  # it had finished: nothing ran, nothing changed
        console.print(st["note"], soft_wrap=True)
        return
    console.print()
    console.print(f"[bold]{st['state']}[/bold]")
    _exit_for(st)


@app.command()
@handles_input_errors
def stop(sweep: Annotated[str, typer.Argument(help="Sweep dir (path or URI).")]) -> None:
    """Ask a running sweep to end cleanly (running jobs stop, finished results stay)."""
    from sweeper.sweeps import request_stop

    console.print(request_stop(sweep), soft_wrap=True)


@app.command()
@handles_input_errors
def rank(
    sweep: Annotated[str, typer.Argument(help="Sweep dir (path or URI).")],
    top: Annotated[
        int | None, typer.Option(min=1, help="Rows to show (table: 20 by default; json/csv: all).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table | json | csv")] = "table",
) -> None:
    """Rank the configs by the recipe's objective (completed attempts only), with 95% intervals
    over seeds and whether the leader is separated from the runner-up."""
    import json

    from sweeper.rank import objective_of, rank_sweep_with_verdict, ranking_document
    from sweeper.sweeps import open_sweep
    from sweeper.view import rank_table

    if fmt not in ("table", "json", "csv"):
        raise InputError(f"--format {fmt!r}: choose table, json or csv")
    store = open_sweep(sweep)
    objective = objective_of(store)
    table, verdict = rank_sweep_with_verdict(store, objective)
    if fmt == "table":
        ranking = rank_table(table, objective.metric, max_rows=top or 20, verdict=verdict.text)
        # A pipe or file has no width: print the table whole rather than folded to 80 columns.
        (console if console.is_terminal else Console(width=200)).print(ranking)
        return
    if top is not None:
        table = table.head(top)
    if fmt == "json":
        doc = ranking_document(table, verdict, objective)
        sys.stdout.write(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    else:
        sys.stdout.write(table.to_csv(index=False))


@app.command()
@handles_input_errors
def export(
    sweep: Annotated[str, typer.Argument(help="Sweep dir (path or URI).")],
    top: Annotated[int, typer.Option(min=1, help="Export the N best configs.")] = 1,
    fmt: Annotated[str, typer.Option("--format", help="yaml | verl | trl")] = "yaml",
    out: Annotated[str | None, typer.Option(help="Output directory.")] = None,
) -> None:
    """Export the best configs as a recipe, verl overrides or TRL GRPOConfig kwargs."""
    from sweeper.export import FORMATS, export_best
    from sweeper.sweeps import check_output, open_sweep

    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: choose {', '.join(FORMATS)}")
    store = open_sweep(sweep)
    if out is not None:
        check_output(out, "--out", directory=True)
    for path in export_best(store, top=top, fmt=fmt, out_dir=out):
        console.print(f"wrote {path}")


@app.command()
@handles_input_errors
def report(
    sweep: Annotated[str, typer.Argument(help="Sweep dir (path or URI).")],
    out: Annotated[str | None, typer.Option(help="HTML file to write.")] = None,
    top: Annotated[int, typer.Option(help="Best trials whose curves it holds.", min=1)] = 10,
) -> None:
    """Write the dashboard's views as one self-contained interactive HTML file (offline)."""
    from sweeper.report import write_report
    from sweeper.sweeps import check_output, open_sweep

    store = open_sweep(sweep)
    if out is not None:
        check_output(out, "--out", directory=False)
    console.print(f"wrote {write_report(store, out, top=top)}", soft_wrap=True)


@app.command()
@handles_input_errors
def dashboard(
    sweep: Annotated[str, typer.Argument(help="Sweep dir (path or URI).")],
    port: Annotated[int, typer.Option(help="TCP port (0: any free port).", min=0)] = 8050,
    host: Annotated[
        str,
        typer.Option(help="Address to listen on; anything but loopback is reachable by others."),
    ] = "127.0.0.1",
) -> None:
    """Serve a live dashboard of a sweep on http://127.0.0.1:PORT/ until Ctrl-C."""
    from sweeper.dashboard.server import is_loopback, serve
    from sweeper.sweeps import open_sweep

    store = open_sweep(sweep)
    if not is_loopback(host):
        err_console.print(
            f"[yellow]warning:[/yellow] listening on {host}: anyone who can reach this address "
            "can read the sweep (there is no login)",
            highlight=False,
        )
    serve(
        store,
        host=host,
        port=port,
        on_ready=lambda url: console.print(
            f"dashboard of {store.name}: {url}  (Ctrl-C stops it)", soft_wrap=True, highlight=False
        ),
    )


@app.command()
@handles_input_errors
def samples(
    sweep: Annotated[str, typer.Argument(help="Sweep dir (path or URI).")],
    trial: Annotated[int | None, typer.Option(help="Only this trial.")] = None,
    step: Annotated[int | None, typer.Option(help="Only this eval step.")] = None,
    limit: Annotated[int, typer.Option(help="Rows to show at most.")] = 50,
) -> None:
    """Print logged eval completions (prompt, response, reward, correct; eval.log_samples)."""
    from sweeper.sweeps import open_sweep

    rows = open_sweep(sweep).read_samples(trial=trial, step=step)
    if rows.empty:
        err_console.print("no samples (the recipe logs them with job.eval.log_samples: N)")
        return
    table = Table(title=f"eval samples ({min(len(rows), limit)} of {len(rows)})", show_lines=True)
    for col in ("trial", "seed", "attempt", "step", "prompt", "response", "reward", "correct"):
        table.add_column(col, overflow="fold")
    for r in rows.head(limit).itertuples(index=False):
        table.add_row(
            *(str(v) for v in (r.trial, r.seed, r.attempt, r.step)),
            Text(str(r.prompt)),  # model text is never read as rich markup
            Text(str(r.response)),
            f"{r.reward:.3g}",
            "[green]yes[/green]" if r.correct else "[red]no[/red]",
        )
    console.print(table)


@app.command()
@handles_input_errors
def validate(
    path: Annotated[str, typer.Argument(help="A recipe or cluster file.")],
    cluster: ClusterOpt = None,
    address: AddressOpt = None,
) -> None:
    """Check a recipe or cluster file (a recipe also as it would run: here, or on --cluster)."""
    from sweeper.sweeps import validate as validate_file

    console.print(f"[green]ok[/green] {validate_file(path, cluster, address)}")


@app.command()
def losses() -> None:
    """List the policy-loss variants and their parameters (from the code)."""
    from sweeper.config.loss import loss_catalog

    for entry in loss_catalog():
        table = Table(title=f"{entry['kind']} — {entry['paper']}", title_justify="left")
        for col in ("parameter", "type", "default", "description"):
            table.add_column(col)
        for p in entry["params"]:
            table.add_row(p["name"], p["type"], str(p["default"]), p["description"])
        console.print(entry["summary"])
        console.print(table)


def main() -> None:
    """Console entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
