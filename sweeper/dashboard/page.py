"""The one HTML page of the dashboard and the report (``static/index.html`` + its script).

Live, the page loads its style, plotly.js and script from the server (``static/...``; plotly.js
is the copy bundled in the ``plotly`` Python package, never a CDN). The report inlines all
three and the data, so the file opens from ``file://`` with no network.
"""

from __future__ import annotations

import functools
import html
from pathlib import Path
from typing import Any

from plotly.io.json import to_json_plotly

STATIC_DIR = Path(__file__).with_name("static")
ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
"""The page's own files in :data:`STATIC_DIR`, with their media types."""


def asset(name: str) -> str:
    """The text of one of :data:`ASSETS`."""
    if name not in ASSETS:
        raise KeyError(name)
    return (STATIC_DIR / name).read_text(encoding="utf-8")


@functools.cache
def plotly_js() -> str:
    """plotly.js, minified, as bundled in the installed ``plotly`` package (~4.8 MB)."""
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


def _template() -> str:
    return (STATIC_DIR / "index.html").read_text(encoding="utf-8")


def live_page() -> str:
    """The page the dashboard server sends: assets by relative URL, data fetched from api/."""
    style = '<link rel="stylesheet" href="static/dashboard.css">'
    scripts = (
        '<script src="static/plotly.min.js"></script>\n<script src="static/dashboard.js"></script>'
    )
    return _template().replace("<!--STYLE-->", style).replace("<!--SCRIPTS-->", scripts)


def script_json(payload: Any) -> str:
    """``payload`` as JSON safe inside a ``<script>`` element (``<`` escaped, so no string in
    it can close the element), NaN and infinities as null."""
    return to_json_plotly(payload).replace("<", "\\u003c")


def report_page(payload: dict[str, Any]) -> str:
    """A self-contained page: style, plotly.js, the payload (``window.SWEEPER_REPORT``) and the
    script inline; nothing is loaded from anywhere when it opens."""
    style = f"<style>\n{asset('dashboard.css')}</style>"
    scripts = "\n".join(
        [
            f"<script>{plotly_js()}</script>",
            f"<script>window.SWEEPER_REPORT = {script_json(payload)};</script>",
            f"<script>{asset('dashboard.js')}</script>",
        ]
    )
    name = html.escape(str(payload.get("sweep", {}).get("name", "")))
    page = _template().replace("<title>sweeper</title>", f"<title>sweeper report: {name}</title>")
    # The scripts go in last: nothing is searched for in the text after they are in.
    return page.replace("<!--STYLE-->", style, 1).replace("<!--SCRIPTS-->", scripts, 1)
