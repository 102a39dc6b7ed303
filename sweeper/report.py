"""``sweeper report``: the dashboard's views as one self-contained, interactive HTML file
(DESIGN §6).

The file holds plotly.js, the page's script and the data of every view (progress, curves, the
Pareto front, the search space, parameter importance, the ranking, and the pages of the best
trials), so it opens from ``file://`` with no server and no network, and can be mailed around.
It is the live dashboard (:mod:`sweeper.dashboard`) frozen at the moment it was written.
"""

from __future__ import annotations

import datetime as dt

from sweeper.dashboard import views
from sweeper.dashboard.data import SweepData
from sweeper.dashboard.page import report_page
from sweeper.store import RECIPE_YAML, SweepStore

DEFAULT_TOP = 10
"""Trials whose curves the report holds (its top-K choice goes up to this)."""


def render_report(store: SweepStore, top: int = DEFAULT_TOP) -> str:
    """The report of a sweep as an HTML string (see :func:`write_report`)."""
    snap = SweepData(store).snapshot()
    recipe = store.read_text(RECIPE_YAML) if store.exists(RECIPE_YAML) else ""
    pages = {}
    for trial in views.report_trials(snap, top):
        page = views.trial_view(snap, trial)
        if page is not None:
            pages[str(trial)] = page
    payload = {
        "sweep": views.sweep_info(snap, recipe),
        "written_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "overview": views.overview(snap, top),
        "importance": views.importance(snap),
        "trials": pages,
    }
    return report_page(payload)


def write_report(store: SweepStore, out: str | None = None, top: int = DEFAULT_TOP) -> str:
    """Write the report (default ``<sweep>/report.html``) and return its path or URI.

    ``top``: the best trials whose curves it shows (and the first of those it holds a trial
    page for; a sweep of up to 50 trials gets a page for every trial)."""
    text = render_report(store, top=top)
    if out is None:
        return store.write_text("report.html", text)
    parent, _, name = str(out).rstrip("/").rpartition("/")
    return SweepStore(parent or ".").write_text(name, text)
