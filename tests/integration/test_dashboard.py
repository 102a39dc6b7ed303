"""`sweeper dashboard` and `sweeper report` in a real browser, and optuna-dashboard on a sweep's
study.

One synthetic sweep runs on the embedded Ray (in a thread of this process) for the whole
module; the first test follows it live while it runs. The dashboard is the real CLI command in a
subprocess on 127.0.0.1 (a free port). The browser is Debian's headless Chromium
(``/usr/bin/chromium``, package ``chromium``) driven by Playwright; without it the browser tests
skip, naming the package. Screenshots go to ``$SWEEPER_TEST_ARTIFACTS/dashboard`` (default
``/tmp/sweeper-test-artifacts/dashboard``); the path is printed at the end of the module.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sweeper.cli import app
from tests.integration.conftest import base_env, free_port

RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "synthetic_grid.yaml")
# 9 trials x 2 seeds of 21 steps at 0.1 s a step, 2 at a time: ~20 s, time to watch it live.
LIVE = ["job.steps=20", "job.step_seconds=0.1", "job.eval.every=5"]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# --------------------------------------------------------------------------- fixtures


@dataclass
class SweepRun:
    """A sweep running in a thread of this process."""

    path: Path
    thread: threading.Thread
    result: dict[str, Any] = field(default_factory=dict)

    def wait(self, timeout: float = 300) -> dict[str, Any]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the sweep did not finish"
        assert "status" in self.result, self.result.get("error")
        return dict(self.result["status"])


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SweepRun]:
    from sweeper.sweeps import prepare_sweep, run_sweep

    recipe, cluster, store = prepare_sweep(RECIPE, LIVE, str(tmp_path_factory.mktemp("sweeps")))
    run = SweepRun(Path(store.uri), threading.Thread(target=lambda: None))

    def target() -> None:
        try:
            run.result["status"] = run_sweep(recipe, store, cluster)
        except BaseException as err:  # reported by wait()
            run.result["error"] = repr(err)

    run.thread = threading.Thread(target=target, name="sweep", daemon=True)
    run.thread.start()
    yield run
    run.thread.join(300)


@pytest.fixture(scope="module")
def finished_sweep(sweep_run: SweepRun) -> Path:
    status = sweep_run.wait()
    assert status["state"] == "finished" and status["counts"]["COMPLETE"] == 9
    return sweep_run.path


class DashboardProcess:
    """``sweeper dashboard SWEEP --port 0`` in a subprocess; ``url`` from its first line."""

    def __init__(self, sweep: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sweeper.cli", "dashboard", str(sweep), "--port", "0", *args],
            env=base_env(COLUMNS="200"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(
            target=lambda: [lines.put(x) for x in self.proc.stdout], daemon=True
        ).start()  # type: ignore[union-attr]
        try:
            first = lines.get(timeout=60)
        except queue.Empty:
            self.stop()
            raise AssertionError(f"dashboard printed nothing: {self.stderr()}") from None
        m = re.search(r"http://127\.0\.0\.1:\d+/", first)
        assert m, first
        self.url = m.group(0)
        self.first_line = first

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as resp:
            return json.loads(resp.read())

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


@contextlib.contextmanager
def dashboard(sweep: Path, *args: str) -> Iterator[DashboardProcess]:
    server = DashboardProcess(sweep, *args)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def artifacts(request: pytest.FixtureRequest) -> Iterator[Path]:
    # Not under pytest's basetemp: it keeps only the last three runs of this user.
    root = (
        os.environ.get("SWEEPER_TEST_ARTIFACTS")
        or Path(tempfile.gettempdir()) / "sweeper-test-artifacts"
    )
    out = Path(root) / "dashboard"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    yield out
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        shots = sorted(p.name for p in out.glob("*.png"))
        print(f"\ndashboard screenshots in {out}: {', '.join(shots) or 'none'}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium (Debian's) context with a fresh profile."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(
            f"browser tests need Debian's chromium package at {CHROMIUM} (apt-get install chromium)"
        )
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (dev extra)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    try:
        yield page
    finally:
        page.close()
    assert not errors, f"errors in the page: {errors}"


# What a plot holds, counted in its rendered SVG: drawn line paths, markers, heatmap images,
# bars, parallel-coordinates axes.
PLOT_MARKS = """(sel) => Array.from(document.querySelectorAll(sel)).map((d) =>
  d.querySelectorAll('.scatterlayer path.js-line, .scatterlayer .point, .heatmaplayer image,'
                     + ' .barlayer .point path, .parcoords .axis').length)"""


# Lines per plot in its figure data: mean lines (curves) or per-seed lines (a trial's page), not
# the bands, and not the traces the top-K choice hid.
LINES = """(sel) => Array.from(document.querySelectorAll(sel)).map((d) =>
  d.data.filter((t) => t.visible !== false && !t.fill && String(t.mode).startsWith('lines')).length)"""

BAND = """(sel) => document.querySelector(sel).data.filter((t) => t.legendgroup === 'all')
  .map((t) => (t.fill ? 'fill' : 'median'))"""


def wait_for_plots(page: Any, selector: str, count: int = 1) -> list[int]:
    """Scroll to ``selector`` (plots are drawn when near the viewport) and wait until ``count``
    plots under it hold marks; their mark counts."""
    page.locator(selector).first.scroll_into_view_if_needed()
    page.wait_for_function(
        "([sel, n]) => document.querySelectorAll(sel + ' .main-svg').length >= n",
        arg=[selector, count],
    )
    deadline = time.monotonic() + 30
    marks: list[int] = []
    while time.monotonic() < deadline:
        marks = page.evaluate(PLOT_MARKS, f"{selector}.js-plotly-plot, {selector} .js-plotly-plot")
        if len(marks) >= count and all(m > 0 for m in marks):
            return marks
        time.sleep(0.2)
    raise AssertionError(f"plots under {selector} stayed empty: {marks}")


def screenshot(page: Any, path: Path) -> None:
    """A full-page screenshot with every plot drawn (scrolled past each first)."""
    for plot in page.locator(".plot:visible").all():
        plot.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=True)


# --------------------------------------------------------------------------- live


def test_page_updates_while_the_sweep_runs(sweep_run: SweepRun, page: Any, artifacts: Path) -> None:
    with dashboard(sweep_run.path) as server:
        assert server.first_line.startswith("dashboard of synthetic_grid: http://127.0.0.1:")
        page.goto(server.url)
        page.wait_for_function("document.getElementById('done-count').textContent !== '–'")
        page.evaluate("window.__same_page = true")  # gone if the page ever reloads
        seen: list[str] = []
        shot = False
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            text = page.inner_text("#done-count")
            if not seen or seen[-1] != text:
                seen.append(text)
            if not shot and page.locator("#running tbody tr").count() > 0:
                screenshot(page, artifacts / "live-running.png")
                shot = True
            if text == "9/9":
                break
            time.sleep(0.25)
        assert page.evaluate("window.__same_page === true"), "the page reloaded"
        assert seen[-1] == "9/9", seen
        done = [int(t.split("/")[0]) for t in seen if re.fullmatch(r"\d+/\d+", t)]
        assert len(done) >= 2 and done == sorted(done), seen  # counted up, in place
        assert shot, "never saw a running job"
        page.wait_for_function("document.getElementById('state').textContent === 'finished'")
        screenshot(page, artifacts / "live-finished.png")
    sweep_run.wait()


# --------------------------------------------------------------------------- a finished sweep


def test_page_shows_the_sweep_and_plots_with_data(
    finished_sweep: Path, page: Any, artifacts: Path
) -> None:
    with dashboard(finished_sweep) as server:
        page.goto(server.url)
        curves = wait_for_plots(page, "#curves", count=4)
        assert page.inner_text("#sweep-name") == "synthetic_grid"
        assert page.inner_text("#done-count") == "9/9"
        assert page.inner_text("#state") == "finished"
        # entropy, pass@1, pass@8, mean@n, reward, clip fractions, approx_kl; 5 trials each
        metrics = page.eval_on_selector_all("#curves .plot", "ds => ds.map(d => d.dataset.metric)")
        assert metrics[:4] == ["entropy", "pass_at_1", "pass_at_8", "mean_at_n"]
        assert "clip_low_frac" in metrics and "approx_kl" in metrics
        assert min(curves) > 0
        # the top 5 trials' curves, and (9 trials > 5) the all-trials band: a fill and its median
        assert page.evaluate(LINES, "#curves .js-plotly-plot")[0] == 5 + 1
        assert page.evaluate(BAND, "#curves .js-plotly-plot") == ["fill", "median"]
        for sel in ("#fig-pareto", "#fig-space", "#fig-importance"):
            wait_for_plots(page, sel)
        assert page.locator("#fig-space .heatmaplayer image").count() == 1  # the 3x3 grid
        assert page.locator("#fig-importance .barlayer .point").count() == 2  # two parameters
        rows = page.locator("#ranking tbody tr")
        assert rows.count() == 9
        best = server.get("api/overview")["progress"]["best"]
        assert rows.first.locator("td").nth(1).inner_text() == str(best["trial"])
        # the top-K choice redraws the curves for that many trials, in place
        page.select_option("#top", "1")
        page.wait_for_function(
            "document.getElementById('curve-trials').textContent.split(' · ').length === 1"
        )
        page.locator("#curves").scroll_into_view_if_needed()
        page.wait_for_function(
            f"({LINES})('#curves .js-plotly-plot')[0] === 1 + 1"
        )  # + band median
        screenshot(page, artifacts / "overview.png")


def test_trial_page_opens(finished_sweep: Path, page: Any, artifacts: Path) -> None:
    with dashboard(finished_sweep) as server:
        best = server.get("api/overview")["progress"]["best"]["trial"]
        page.goto(server.url)
        page.click("#ranking tbody tr:first-child a")
        page.wait_for_selector("#trial-view:not([hidden])")
        assert page.url.endswith(f"#/trial/{best}")
        assert page.inner_text("#trial-title") == f"trial {best}"
        wait_for_plots(page, "#trial-curves", count=3)
        page.wait_for_selector("#trial-attempts tbody tr")
        assert page.evaluate(LINES, "#trial-curves .js-plotly-plot")[0] == 2  # one per seed
        assert page.locator("#trial-attempts tbody tr").count() == 2
        assert "COMPLETE" in page.inner_text("#trial-attempts")
        assert "no eval samples" in page.inner_text("#trial-samples")
        screenshot(page, artifacts / "trial.png")
        page.click("text=← overview")
        page.wait_for_selector("#overview:not([hidden])")
        # /trial/N is a link that works too
        page.goto(server.url + "trial/0")
        page.wait_for_function("document.getElementById('trial-title').textContent === 'trial 0'")
        wait_for_plots(page, "#trial-curves", count=3)


def test_report_opens_offline_from_file(
    finished_sweep: Path, page: Any, artifacts: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", str(finished_sweep), "--out", str(out)])
    assert result.exit_code == 0, result.output
    requested: list[str] = []

    def only_the_file(route: Any) -> None:
        url = route.request.url
        if url.startswith("file://"):
            route.continue_()
        else:  # the network is blocked for this page: anything asked for shows here
            requested.append(url)
            route.abort()

    page.route("**/*", only_the_file)
    page.goto(out.as_uri())
    wait_for_plots(page, "#curves", count=4)
    for sel in ("#fig-pareto", "#fig-space", "#fig-importance"):
        wait_for_plots(page, sel)
    assert page.inner_text("#sweep-name") == "synthetic_grid"
    assert page.inner_text("#done-count") == "9/9"
    assert page.inner_text("#mode").startswith("report written")
    screenshot(page, artifacts / "report.png")
    # its trial pages are in the file too
    page.click("#ranking tbody tr:nth-child(2) a")
    page.wait_for_selector("#trial-view:not([hidden])")
    wait_for_plots(page, "#trial-curves", count=3)
    assert page.evaluate(LINES, "#trial-curves .js-plotly-plot")[0] == 2
    screenshot(page, artifacts / "report-trial.png")
    # the top-K choice works offline (it hides the curves of the others)
    page.click("text=← overview")
    page.select_option("#top", "3")
    page.wait_for_function(f"({LINES})('#curves .js-plotly-plot')[0] === 3")
    assert requested == []


# --------------------------------------------------------------------------- no browser needed


def test_optuna_dashboard_serves_the_sweeps_study(finished_sweep: Path) -> None:
    pytest.importorskip("optuna_dashboard", reason="optuna-dashboard not installed (dev extra)")
    port = free_port()
    url = f"sqlite:///{finished_sweep / 'optuna.db'}"
    exe = str(Path(sys.executable).with_name("optuna-dashboard"))
    proc = subprocess.Popen(
        [exe, url, "--host", "127.0.0.1", "--port", str(port), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        studies = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and studies is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    studies = json.loads(r.read())["study_summaries"]
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.5)
        assert studies is not None, "optuna-dashboard did not answer"
        (study,) = studies
        assert study["study_name"] == "synthetic_grid"
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/studies/{study['study_id']}", timeout=30
        ) as r:
            detail = json.loads(r.read())
        assert len(detail["trials"]) == 9
        assert {t["state"] for t in detail["trials"]} == {"Complete"}
        params = {p["name"] for t in detail["trials"] for p in t["params"]}
        assert params == {"loss.eps_low", "loss.eps_high"}
    finally:
        proc.terminate()
        proc.wait(15)


def test_dashboard_bad_input_exits_2(finished_sweep: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["dashboard", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such sweep" in missing.output
    with dashboard(finished_sweep) as server:
        port = server.url.rsplit(":", 1)[1].strip("/")
        taken = runner.invoke(app, ["dashboard", str(finished_sweep), "--port", port])
    assert taken.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in taken.output
    # Another --host is taken only when asked, with a warning first. 192.0.2.1 (TEST-NET-1) is
    # not an address of this machine, so nothing listens beyond loopback here.
    far = runner.invoke(app, ["dashboard", str(finished_sweep), "--host", "192.0.2.1"])
    assert far.exit_code == 2
    assert "warning: listening on 192.0.2.1" in far.output and "cannot listen" in far.output


def test_dashboard_reads_a_sweep_on_s3(moto_s3: str) -> None:
    from sweeper.dashboard import views
    from sweeper.dashboard.data import SweepData
    from tests.unit.test_store import build_sweep

    store = build_sweep("s3://bucket/sweeps")  # type: ignore[arg-type]
    assert store.uri == "s3://bucket/sweeps/demo"
    sample = {"prompt": "1+2=", "response": "3", "reward": 1.0, "correct": True}
    store.append_samples(1, 0, 2, 10, [sample])
    snap = SweepData(store).snapshot()
    o = views.overview(snap)
    assert [r["trial"] for r in o["ranking"]["rows"]] == [1, 2, 0, 3]
    t = views.trial_view(snap, 1)
    assert t["samples"]["total"] == 1 and "1+2=" in t["samples"]["rows"][0]
    assert len(t["attempts"]["rows"]) == 3
