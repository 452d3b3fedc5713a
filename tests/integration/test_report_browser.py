"""The report page in a real headless browser (Debian's chromium, over DevTools).

The real daemon runs the whole chain on its test clock, with its metrics
listener on loopback; customers write to the after-sales team and to sales,
agents answer (one in time, one late), and the page ``/report`` is opened in
chromium. The test checks that every chart is drawn (plotly's SVG, with
marks), that the figures on the page are the store's (read from the SQLite
file with SQL of its own), that no customer address or subject is on it,
that the page asked nothing of any server but the listener, and saves a
screenshot (its path is printed; ``MAILFLOW_SCREENSHOT_DIR`` keeps a copy).
The file ``mailflow report --html`` writes is opened from the disk too: drawn,
the same figures, no request beyond ``file:`` and ``data:``. Every chart has one y
axis, from 0 (whole ticks for counts), and the page of an empty period draws each
chart from 0 to 1 with a word that there is nothing to show.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from chromium import Chromium
from clirunner import run_cli
from conftest import NULL_SENDERS, Daemon, Sink, full_chain_rules, parse_email, report
from mailflow.report.data import BUCKET_LIMITS, percentile
from mailflow.report.page import render
from statsrows import report_of, week_store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PARIS = ZoneInfo("Europe/Paris")
SLA = {"priorities": {p: {"first_response": "2bh", "update": "1bd", "warn_before": "30m"}
                      for p in ("urgent", "high", "normal", "low")}}
CUSTOMERS = (("claire.dupont@client.test", "sav@example.com", "Colis jamais arrivé 88121"),
             ("marc.leroy@client.test", "sav@example.com", "Retour produit cassé 88122"),
             ("ines.haddad@client.test", "devis@example.com", "Demande de devis 88123"),
             # "mise en demeure": the legal team, and the lawyer asked (an escalation)
             ("paul.martin@client.test", "sav@example.com",
              "Mise en demeure, commande 88124"))
CHARTS = ("volumes", "routes", "first-response", "success", "breaches", "agent-answers",
          "agent-response", "escalations")
#: the charts of a measure that is not a count (a share, hours): the others have whole ticks
MEASURED = ("success", "agent-response")

#: per chart: its plotly SVG, its size and the marks (bars) it drew
CHART_STATE_JS = r"""
Array.from(document.querySelectorAll('[data-chart]')).map(function (el) {
  var svg = el.querySelector('svg.main-svg');
  var box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
  var bars = Array.from(el.querySelectorAll('.trace.bars .point path'));
  var tall = bars.filter(function (p) { return p.getBoundingClientRect().height > 0; });
  var layout = el._fullLayout || {};
  var axes = Object.keys(layout).filter(function (k) { return /^yaxis\d+$/.test(k); });
  return {id: el.id, chart: el.dataset.chart, drawn: el.dataset.drawn === 'true',
          svg: !!svg, width: box.width, height: box.height, bars: bars.length,
          tall: tall.length, y: layout.yaxis ? layout.yaxis.range : null,
          ticks: layout.yaxis ? Array.from(el.querySelectorAll('.ytick text')).map(
            function (t) { return t.textContent; }) : [],
          more_axes: axes.length,
          note: Array.from(el.querySelectorAll('.annotation-text')).map(
            function (t) { return t.textContent; })};
})
"""
FIGURES_JS = """
(function () {
  var out = {};
  document.querySelectorAll('[data-figure]').forEach(function (el) {
    out[el.dataset.figure] = el.dataset.value; });
  function rows(id, key) {
    return Array.from(document.querySelectorAll('#' + id + ' tbody tr[' + key + ']')).map(
      function (tr) {
        var row = {key: tr.getAttribute(key)};
        tr.querySelectorAll('td[data-col], td[data-direction], td[data-measure]').forEach(
          function (td) {
            row[td.dataset.col || td.dataset.direction || td.dataset.measure] = td.dataset.value;
          });
        var last = tr.querySelector('td[data-value]:last-child');
        if (last) { row.value = last.dataset.value; }
        return row; });
  }
  out.volumes = rows('table-volumes', 'data-day');
  out.routes = rows('table-routes', 'data-route');
  out.agents = rows('table-agents', 'data-agent');
  out.buckets = rows('table-first-response', 'data-bucket');
  out.open = Array.from(document.querySelectorAll('#table-open tbody tr[data-status]')).map(
    function (tr) { return [tr.dataset.route, tr.dataset.priority, tr.dataset.status,
                            tr.querySelector('td[data-value]').dataset.value]; });
  out.since = document.body.dataset.since;
  return out;
})()
"""


def paris(*args: int) -> float:
    return dt.datetime(*args, tzinfo=PARIS).timestamp()  # type: ignore[misc]


def customer_mail(sender: str, to: str, subject: str, mid: str) -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{mid}>\r\n"
            f"\r\nBonjour,\r\nje vous écris au sujet de : {subject}.\r\n").encode()


def agent_mail(agent: str, customer: str, case: str, mid: str, in_reply_to: str) -> bytes:
    return (f"From: {agent}\r\nTo: {customer}\r\nSubject: Re: [{case}] votre demande\r\n"
            f"Message-ID: <{mid}>\r\nIn-Reply-To: <{in_reply_to}>\r\n\r\n"
            "Bonjour, c'est réglé.\r\n").encode()


def open_cases(d: Daemon, sink: Sink) -> list[tuple[str, str]]:
    """Each customer's case: (number, the agent it went to, or the team's address)."""
    opened = []
    for n, (sender, to, subject) in enumerate(CUSTOMERS):
        code, text = d.send(customer_mail(sender, to, subject, f"q-{n}@client.test"),
                            mail_from=sender, rcpt_to=[to])
        assert code == 250, text
        sink.wait_for(2)  # the relayed message and its acknowledgement
        d.settle()
        (relayed,) = [m for m in sink.messages if m.mail_from not in NULL_SENDERS]
        opened.append((parse_email(relayed.data)["X-Mailflow-Case"], relayed.rcpt_tos[0]))
        sink.reset()
    return opened


def answer(d: Daemon, sink: Sink, agent: str, n: int, case: str) -> None:
    customer = CUSTOMERS[n][0]
    code, text = d.send(agent_mail(agent, customer, case, f"a-{n}@example.com",
                                   f"q-{n}@client.test"), mail_from=agent,
                        rcpt_to=[customer])
    assert code == 250, text
    sink.wait_for(1)
    d.settle()
    sink.reset()


def wait_for_count(db: Path, measure: str, count: int, timeout: float = 20.0) -> None:
    """Until the scheduler recorded ``count`` of ``measure`` (its timers fire on their own)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (found,), = query(db, "SELECT COALESCE(SUM(count), 0) FROM stats_counts"
                              " WHERE measure = ?", measure)
        if found >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{measure}: {found} recorded, not {count}, in {timeout}s")


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return list(conn.execute(sql, args))


def number(value: str | None) -> float | None:
    return None if value in (None, "") else float(value)


def check_figures(db: Path, page: dict[str, Any], per_agent: bool) -> None:
    """The page's figures against the store's rows, computed here with plain SQL."""
    since = float(page["since"])
    since_day = dt.datetime.fromtimestamp(since, PARIS).strftime("%Y-%m-%d")
    for direction in ("inbound", "reply", "internal", "passthrough"):
        (total,) = query(db, "SELECT COALESCE(SUM(count), 0) FROM stats_counts WHERE"
                             " measure = 'mail' AND label = ? AND day >= ?", direction, since_day)
        assert int(page[f"mail.{direction}"]) == total[0], direction
    assert int(page["mail.inbound"]) == len(CUSTOMERS)
    for row in page["volumes"]:
        (inbound,) = query(db, "SELECT COALESCE(SUM(count), 0) FROM stats_counts WHERE"
                               " measure = 'mail' AND label = 'inbound' AND day = ?", row["key"])
        assert int(row["inbound"]) == inbound[0], row
    first = [(s, t) for s, t in query(db, "SELECT seconds, in_time FROM stats_responses"
                                          " WHERE kind = 'first_response' AND at >= ?", since)]
    seconds = [s for s, _ in first]
    assert int(page["first.count"]) == len(first) >= 2
    assert number(page["first.p50"]) == pytest.approx(percentile(seconds, 0.5))
    assert number(page["first.p90"]) == pytest.approx(percentile(seconds, 0.9))
    in_time = sum(1 for _, t in first if t == 1)
    late = sum(1 for _, t in first if t == 0)
    assert in_time >= 1 and late >= 1, first  # one answered in time, one late
    assert number(page["success.rate"]) == pytest.approx(in_time / (in_time + late))
    for index, row in enumerate(page["buckets"]):
        low = BUCKET_LIMITS[index - 1] if index else 0.0
        assert int(row["value"]) == sum(1 for s in seconds if low <= s < BUCKET_LIMITS[index])
    (breaches,) = query(db, "SELECT COALESCE(SUM(count), 0) FROM stats_counts WHERE"
                            " measure = 'sla_breach' AND day >= ?", since_day)
    assert int(page["breaches.total"]) == breaches[0]
    open_now = sorted([r or "", p or "", s, str(c)] for r, p, s, c in query(
        db, "SELECT route, priority, status, COUNT(*) FROM cases WHERE status <> 'closed'"
            " GROUP BY route, priority, status"))
    assert sorted(page["open"]) == open_now and open_now
    agents = {a: n for a, n in query(db, "SELECT agent, COUNT(*) FROM stats_responses WHERE"
                                         " kind = 'response' AND at >= ? AND agent <> ''"
                                         " GROUP BY agent", since)}
    if per_agent:
        assert {row["key"]: int(row["answers"]) for row in page["agents"]} == agents
        assert agents
    else:
        assert page["agents"] == [] and not agents


def test_the_report_page_in_chromium(daemon_factory: Any, sink: Sink,
                                     tmp_path: Path) -> None:
    rules = full_chain_rules(tmp_path / "rules-src", sla=SLA)
    d: Daemon = daemon_factory(config={"trusted_networks": ["127.0.0.0/8"]}, rules=rules,
                               test_clock=paris(2026, 11, 24, 9, 30))
    (sav_1, agent_1), (sav_2, agent_2), _, _ = open_cases(d, sink)
    d.advance(40 * 60)
    answer(d, sink, agent_1, 0, sav_1)        # after 40 minutes: in time
    d.advance(4 * 3600 + 40 * 60)             # 14:50: 3 h 40 of business time since 09:30
    wait_for_count(d.db, "sla_breach", 3)     # the three cases left unanswered
    wait_for_count(d.db, "reminder", 1)       # the lawyer, after 4 business hours
    answer(d, sink, agent_2, 1, sav_2)        # late
    d.settle()

    url = f"http://127.0.0.1:{d.metrics_port}/report?since=7d"
    with Chromium() as browser:
        for domain in ("Page", "Network", "Runtime", "Log"):
            browser.send(f"{domain}.enable")
        browser.send("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                     deviceScaleFactor=1, mobile=False)
        browser.navigate(url)
        browser.wait_until("document.body && document.body.dataset.chartsDrawn === 'true'")
        charts = browser.evaluate(CHART_STATE_JS)
        page = browser.evaluate(FIGURES_JS)
        html = browser.evaluate("document.documentElement.outerHTML")
        shot = browser.screenshot(tmp_path / "report.png")
        events = list(browser.events)
        # the file of `mailflow report --html`, opened from the disk: drawn with nothing else
        browser.events.clear()
        done = run_cli("report", "--config", str(d.config_path), "--since", "60d",
                       "--html", str(tmp_path / "report.html"))
        assert done.returncode == 0, done.stderr
        browser.navigate((tmp_path / "report.html").as_uri())
        browser.wait_until("document.body && document.body.dataset.chartsDrawn === 'true'")
        offline_charts = browser.evaluate(CHART_STATE_JS)
        offline_page = browser.evaluate(FIGURES_JS)
        offline_events = list(browser.events)
        empty = week_store(tmp_path / "empty", filled=False)
        (tmp_path / "empty.html").write_text(render(report_of(empty), inline_js=True),
                                             encoding="utf-8")
        browser.navigate((tmp_path / "empty.html").as_uri())
        browser.wait_until("document.body && document.body.dataset.chartsDrawn === 'true'")
        empty_charts = browser.evaluate(CHART_STATE_JS)

    assert [c["chart"] for c in charts] == list(CHARTS)
    for chart in charts:
        assert chart["drawn"] and chart["svg"], chart
        assert chart["width"] > 300 and chart["height"] > 200, chart
        assert chart["bars"] > 0 and chart["tall"] > 0, chart
        assert chart["y"][0] == 0 and chart["more_axes"] == 0, chart  # one axis, from 0
        if chart["chart"] not in MEASURED:  # counts: whole ticks
            assert all(re.fullmatch(r"[0-9,]+", t) for t in chart["ticks"]), chart
    check_figures(d.db, page, per_agent=True)

    for sender, _, subject in CUSTOMERS:
        assert sender not in html and sender.split("@")[0] not in html
        assert subject not in html and subject.split()[-1] not in html
    requested = [e["params"]["request"]["url"] for e in events
                 if e["method"] == "Network.requestWillBeSent"]
    base = f"http://127.0.0.1:{d.metrics_port}/"
    assert requested and requested[0] == url
    assert f"{base}report/plotly.min.js" in [u.partition("?")[0] for u in requested]
    assert all(u.startswith((base, "data:")) for u in requested), requested
    errors = [e for e in events if e["method"] == "Runtime.exceptionThrown"
              or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert errors == []  # no script error, no Content-Security-Policy violation

    assert [c["chart"] for c in offline_charts] == list(CHARTS)
    assert all(c["drawn"] and c["tall"] > 0 for c in offline_charts), offline_charts
    check_figures(d.db, offline_page, per_agent=True)
    offline_urls = [e["params"]["request"]["url"] for e in offline_events
                    if e["method"] == "Network.requestWillBeSent"]
    assert offline_urls and all(u.startswith(("file:", "data:")) for u in offline_urls), \
        offline_urls

    # a period with nothing in it: axes from 0 to 1, whole ticks, and a word saying so
    assert [c["chart"] for c in empty_charts] == list(CHARTS)
    for chart in empty_charts:
        assert chart["drawn"] and chart["tall"] == 0, chart
        assert chart["y"] == ([0, 100] if chart["chart"] == "success" else [0, 1]), chart
        assert chart["note"] == ["nothing in this period"] or chart["chart"] == "volumes"
        assert chart["chart"] in MEASURED or chart["ticks"] == ["0", "1"], chart

    assert shot.stat().st_size > 50_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("MAILFLOW_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shot = Path(shutil.copy(shot, Path(keep) / "report.png"))
    report(f"report page screenshot: {shot}")
