"""The report's figures from a real SQLite store, its page, and ``mailflow report``."""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest

from clirunner import run_cli
from conftest import RULES
from mailflow import cases
from mailflow.report import data
from mailflow.report.page import duration, plotly_js, plotly_version, render, text_summary
from statsrows import (
    PARIS,
    SECRET_CUSTOMER,
    SECRET_SUBJECT,
    UNTIL,
    Rows,
    report_of,
    week_store,
)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return week_store(tmp_path / "state")


def test_percentile_interpolates_between_ranks() -> None:
    assert data.percentile([], 0.5) is None
    assert data.percentile([7.0], 0.9) == 7.0
    assert data.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert data.percentile([10.0, 0.0, 20.0, 40.0, 30.0], 0.9) == pytest.approx(36.0)


def test_bucket_limits_are_upper_bounds() -> None:
    assert [data.bucket_of(s) for s in (0, 3599, 3600, 14400, 28799, 86399, 86400,
                                        172800, 10**7)] == [0, 0, 1, 2, 2, 3, 4, 5, 5]


def test_volumes_are_whole_days_of_the_period(db: Path) -> None:
    report = report_of(db)
    assert report.days[0] == "2026-11-20" and report.days[-1] == "2026-11-27"
    assert report.since == datetime(2026, 11, 20, tzinfo=PARIS).timestamp()
    assert report.direction_totals() == {"inbound": 6, "reply": 4, "internal": 1,
                                         "passthrough": 5}
    assert report.volumes[("2026-11-23", "inbound", "sav")] == 3
    assert report.route_names() == ["devis", "sav"]
    assert sum(report.opened.values()) == 5


def test_first_responses_percentiles_buckets_and_success(db: Path) -> None:
    report = report_of(db)
    assert report.first_responses == 5  # the one before the period is left out
    assert report.first_p50 == 30000
    assert report.first_p90 == pytest.approx(90000 + 0.6 * 110000)
    assert report.buckets == (1, 1, 0, 1, 1, 1)
    assert (report.in_time, report.late, report.no_deadline) == (2, 2, 1)
    assert report.success_rate == 0.5
    assert report.answers == 6 and report.answer_p50 == pytest.approx((7200 + 30000) / 2)


def test_routes_breaches_agents_and_escalations(db: Path) -> None:
    report = report_of(db)
    routes = {r.route: r for r in report.routes}
    assert routes["sav"].success_rate == pytest.approx(2 / 3)
    assert routes["sav"].p50 == 7200 and routes["sav"].warnings == 2
    assert routes["devis"].success_rate == 0.0 and routes["devis"].breaches == 2
    assert report.breaches == {("sav", "first_response"): 1, ("devis", "first_response"): 1,
                               ("devis", "update"): 1}
    agents = {a.agent: a for a in report.agents}
    assert list(agents) == ["Alice", "Bob", "other"]  # "other" last
    assert agents["Alice"].answers == 3 and agents["Alice"].median == 1800
    assert agents["Bob"].first_responses == 2 and agents["Bob"].first_in_time == 0
    (rule,) = report.rules
    assert (rule.rule, rule.escalations, rule.reminders, rule.supervisor) == (
        "billing-expert", 2, 1, 1)
    assert rule.expert_answers == 2 and rule.expert_median == 7200
    assert report.open_cases == {("sav", "normal", "open"): 2, ("devis", "high", "open"): 1,
                                 ("", "", "open"): 1}


def test_per_agent_off_leaves_no_agent_on_the_page(db: Path) -> None:
    report = report_of(db, per_agent=False)
    assert report.agents == ()
    page = render(report, inline_js=False)
    assert 'id="table-agents"' not in page and 'data-chart="agent-' not in page
    assert "Alice" not in page and "Bob" not in page
    assert "Alice" in render(report_of(db), inline_js=False)


def test_no_address_and_no_subject_anywhere(db: Path) -> None:
    report = report_of(db)
    for text in (render(report, inline_js=False), render(report, inline_js=True),
                 text_summary(report)):
        assert SECRET_CUSTOMER not in text and "jeanne" not in text.lower()
        assert SECRET_SUBJECT not in text and "ZX-98321" not in text


def test_the_file_names_no_server_and_carries_plotly(db: Path) -> None:
    page = render(report_of(db), inline_js=True)
    assert plotly_js() in page  # the library inside: the file works offline
    markup = page.replace(plotly_js(), "")
    assert "Plotly.newPlot" in markup
    assert re.findall(r"<script[^>]*\bsrc=", markup) == []
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", markup)
    served = render(report_of(db), inline_js=False)
    assert re.findall(r"<script[^>]*\bsrc=\"([^\"]*)\"", served) == [
        f"/report/plotly.min.js?v={plotly_version()}"]


def test_names_from_the_rules_are_escaped(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    evil = "</script><script>alert(1)</script>"
    Rows().count("2026-11-23", "mail", 1, route=evil, label="inbound").count(
        "2026-11-23", "sla_breach", 1, route=evil, label="first_response").write(db)
    page = render(report_of(db), inline_js=False)
    assert "<script>alert(1)" not in page
    assert "&lt;/script&gt;" in page  # in the tables
    assert "\\u003c/script\\u003e" in page  # in the figures' JSON


def test_a_store_without_statistics_still_reports_open_cases(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite3"
    Rows().case("SAV-9", route="sav", priority="normal").write(db, schemas=[cases.SCHEMA])
    report = report_of(db)
    assert not report.has_statistics and report.open_cases == {("sav", "normal", "open"): 1}
    assert 'id="no-statistics"' in render(report, inline_js=False)


def test_durations_read_as_a_supervisor_reads_them() -> None:
    assert [duration(s) for s in (None, 20, 2700, 7500, 30000, 200000)] == [
        "–", "20 s", "45 min", "2 h 05 min", "8 h 20 min", "2 d 7 h"]


# -- mailflow report ---------------------------------------------------------------


def cli_args(db: Path) -> list[str]:
    return ["--state-dir", str(db.parent), "--rules", str(RULES)]


def test_cli_summary_and_html_file(tmp_path: Path, db: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mailflow.cli.report.time.time", lambda: UNTIL)
    result = run_cli("report", "--since", "7d", *cli_args(db))
    assert result.returncode == 0, result.stderr
    assert "mail: inbound 6, reply 4, internal 1, passthrough 5" in result.stdout
    assert "answered within the promised time: 50.0 % (2 of 4; 1 without a deadline)" \
        in result.stdout
    target = tmp_path / "week.html"
    result = run_cli("report", "--since", "7d", "--html", str(target), *cli_args(db))
    assert result.returncode == 0, result.stderr
    page = target.read_text(encoding="utf-8")
    assert 'data-figure="first.p50" data-value="30000.0"' in page
    assert 'data-figure="mail.inbound" data-value="6"' in page
    assert SECRET_CUSTOMER not in page


def test_cli_since_is_plain_time(db: Path) -> None:
    result = run_cli("report", "--since", "2bd", *cli_args(db))
    assert result.returncode == 2 and "plain time" in result.stderr
    result = run_cli("report", "--since", "soon", *cli_args(db))
    assert result.returncode == 2 and "--since" in result.stderr


def test_cli_never_creates_a_store(tmp_path: Path) -> None:
    result = run_cli("report", "--state-dir", str(tmp_path / "nowhere"))
    assert result.returncode == 1 and "no store at" in result.stderr
    assert not (tmp_path / "nowhere").exists()


def dump(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return list(conn.iterdump())


def test_cli_changes_nothing_in_the_store(db: Path) -> None:
    before = dump(db)
    result = run_cli("report", "--html", str(db.parent / "r.html"), *cli_args(db))
    assert result.returncode == 0, result.stderr
    assert dump(db) == before
