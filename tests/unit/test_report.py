"""The HTML report: one self-contained file with the ranking, states and embedded plots."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from sweeper.report import write_report
from sweeper.store import SweepStore
from tests.unit.test_store import RECIPE_TEXT, build_sweep


def test_report_has_table_plots_and_no_network(tmp_path: Path) -> None:
    store = build_sweep(tmp_path)
    path = write_report(store)
    assert path == str(tmp_path / "demo" / "report.html")
    text = Path(path).read_text()
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)">', text)
    assert [alt for alt, _ in images] == [
        "entropy vs step", "mean_at_n vs step", "objective vs params",
    ]  # fmt: skip
    for _, data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG")
    # no external resources: nothing is fetched when the page opens
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert "<script" not in text
    # the ranking table lists every trial, best first, with its state; top rows highlighted
    rows = re.findall(
        r"<tr( class=\"top\")?><td class=\"\">(\d+)</td><td class=\"\">(\d+)</td>", text
    )
    assert [(int(r), int(t)) for _, r, t in rows] == [(1, 1), (2, 2), (3, 0), (4, 3)]
    assert [bool(top) for top, _, _ in rows] == [True, True, True, False]
    assert "<b>COMPLETE</b> 3" in text and "<b>FAIL</b> 1" in text
    assert '<td class="l">ValueError: NaN loss</td>' in text  # the failed trial's error
    assert "loss.eps_low" in text and "mean_at_n" in text


def test_report_custom_path_and_empty_sweep(tmp_path: Path) -> None:
    store = SweepStore.create(str(tmp_path), "empty", RECIPE_TEXT, {"name": "empty"}, {})
    out = tmp_path / "out" / "r.html"
    assert write_report(store, out=str(out)) == str(out)
    text = out.read_text()
    assert "No completed traces yet." in text and "<img" not in text
    assert "Sweep empty" in text
