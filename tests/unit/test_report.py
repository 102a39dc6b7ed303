"""The HTML report: one self-contained file holding plotly.js, the page's script and the data of
the dashboard's views (the browser test opens it offline)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from plotly.offline import get_plotlyjs

from sweeper.report import write_report
from sweeper.store import SweepStore
from tests.unit.test_dashboard_views import assert_valid_figures
from tests.unit.test_store import RECIPE_TEXT, build_sweep


def embedded(text: str) -> dict[str, Any]:
    """The payload the report embeds for its script."""
    m = re.search(r"<script>window\.SWEEPER_REPORT = (.*?);</script>", text, re.S)
    assert m, "no embedded payload"
    return dict(json.loads(m.group(1)))


def test_report_is_self_contained_and_holds_every_view(tmp_path: Path) -> None:
    store = build_sweep(tmp_path)
    path = write_report(store)
    assert path == str(tmp_path / "demo" / "report.html")
    text = Path(path).read_text()
    # nothing to fetch: the markup links to nothing, every script is inline, plotly.js is the
    # package's copy (its own strings name map tile servers; the browser test proves nothing
    # is fetched when the file opens)
    markup = re.sub(r"<script>.*?</script>", "", text, flags=re.S)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", markup)
    assert not re.search(r"<script[^>]+src=", text) and "<link" not in markup
    assert get_plotlyjs() in text
    data = embedded(text)
    assert data["sweep"]["name"] == "demo" and "loss.eps_low" in data["sweep"]["recipe"]
    o = data["overview"]
    assert [r["trial"] for r in o["ranking"]["rows"]] == [1, 2, 0, 3]
    assert o["progress"]["best"]["trial"] == 1
    assert [c["metric"] for c in o["curves"]] == ["entropy", "mean_at_n"]
    assert o["space"]["kind"] == "heatmap" and o["pareto"] is not None
    # a small sweep: a page for every trial, the failed one with its error
    assert sorted(data["trials"]) == ["0", "1", "2", "3"]
    assert data["trials"]["3"]["error"] == "ValueError: NaN loss"
    assert assert_valid_figures(data) >= 4 + 3 * 2
    assert "<title>sweeper report: demo</title>" in text


def test_report_embedded_text_cannot_close_the_script(tmp_path: Path) -> None:
    text = RECIPE_TEXT.replace("# demo sweep", "# </script><script>alert(1)</script>")
    store = build_sweep(tmp_path, recipe_text=text)
    html = Path(write_report(store)).read_text()
    assert "alert(1)</script>" not in html
    assert "</script><script>alert(1)" in embedded(html)["sweep"]["recipe"]


def test_report_custom_path_and_empty_sweep(tmp_path: Path) -> None:
    store = SweepStore.create(str(tmp_path), "empty", RECIPE_TEXT, {"name": "empty"}, {})
    out = tmp_path / "out" / "r.html"
    assert write_report(store, out=str(out)) == str(out)
    data = embedded(out.read_text())
    assert data["sweep"]["name"] == "empty"
    assert data["overview"]["curves"] == [] and data["trials"] == {}
