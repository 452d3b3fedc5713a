"""The report's charts: one measure each, axes from 0, whole ticks for counts, a word when
there is nothing to show; the traces the partial plotly.js bundle draws; and the page
written by ``mailflow report --html`` small enough to mail."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from clirunner import run_cli
from conftest import RULES
from mailflow.report.page import BASIC_TRACES, figures, plotly_js, plotly_version, render
from statsrows import UNTIL, report_of, week_store

#: the --html page: the partial bundle (1.2 MB) and the figures; the full plotly.js
#: made it 4.8 MB
MAX_HTML_BYTES = 1_500_000
#: every chart, and the measure its one y axis shows
MEASURES = {"volumes": "messages", "routes": "messages", "first-response": "cases",
            "success": "% of first responses", "breaches": "breaches",
            "agent-answers": "answers", "agent-response": "hours", "escalations": "cases"}
NOT_COUNTS = ("success", "agent-response")


@pytest.fixture
def week(tmp_path: Path) -> Path:
    return week_store(tmp_path / "state")


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    return week_store(tmp_path / "empty", filled=False)


def check_axes(charts: dict[str, dict[str, Any]]) -> None:
    assert set(charts) == set(MEASURES)
    for name, chart in charts.items():
        layout = chart["layout"]
        # one measure: one y axis, named after it, and no trace on another axis
        assert [k for k in layout if re.fullmatch(r"[xy]axis\d+", k)] == [], name
        assert all(not {"yaxis", "xaxis"} & set(trace) for trace in chart["data"]), name
        assert layout["yaxis"]["title"]["text"] == MEASURES[name]
        assert layout["yaxis"]["rangemode"] == "nonnegative", name
        assert layout["yaxis"].get("range", [0])[0] == 0, name
        assert {trace["type"] for trace in chart["data"]} <= BASIC_TRACES, name
        if name not in NOT_COUNTS:  # a count's ticks are whole numbers
            assert layout["yaxis"]["tickformat"] == ",d", name
            top = max((max(t["y"], default=0) for t in chart["data"]), default=0)
            assert top > 10 or layout["yaxis"]["dtick"] == 1, name


def test_every_chart_shows_one_measure_on_an_axis_from_zero(week: Path) -> None:
    charts = figures(report_of(week))
    check_axes(charts)
    # the agents: their answers and their response time, each on a chart of its own
    answers, response = charts["agent-answers"]["data"], charts["agent-response"]["data"]
    assert [t["y"] for t in answers] == [[3, 2, 1]]
    assert [t["x"] for t in response] == [["Alice", "Bob", "other"]]
    assert not any("annotations" in c["layout"] for c in charts.values())


def test_an_empty_period_draws_axes_from_zero_and_says_so(empty: Path) -> None:
    charts = figures(report_of(empty))
    check_axes(charts)
    breaches = charts["breaches"]["layout"]
    assert breaches["yaxis"]["range"] == [0, 1] and breaches["yaxis"]["dtick"] == 1
    for name, chart in charts.items():
        notes = [a["text"] for a in chart["layout"].get("annotations", [])]
        assert notes == ["nothing in this period"] or name == "volumes", (name, notes)


def test_the_page_carries_the_partial_bundle_and_is_small(
        week: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert plotly_version().endswith("-basic"), (
        "the report carries the full plotly.js: `make` installs the partial bundle")
    assert plotly_js().startswith("/**\n* plotly.js (basic - minified) v")
    assert len(plotly_js().encode()) < 1_300_000
    monkeypatch.setattr("mailflow.cli.report.time.time", lambda: UNTIL)
    target = tmp_path / "week.html"
    done = run_cli("report", "--since", "7d", "--html", str(target),
                   "--state-dir", str(week.parent), "--rules", str(RULES))
    assert done.returncode == 0, done.stderr
    size = target.stat().st_size
    assert size < MAX_HTML_BYTES, size
    assert plotly_js() in target.read_text(encoding="utf-8")
    assert len(render(report_of(week), inline_js=False).encode()) < 100_000  # no library
