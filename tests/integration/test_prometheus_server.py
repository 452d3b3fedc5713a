"""The dashboard and the alert rules against a real Prometheus scraping the real daemon.

Debian's Prometheus (tests/prometheus.py: a private server on a free loopback port,
scraping every second) reads the daemon's /metrics while customer-service mail goes
through over SMTP (tests/traffic.py), twice, with scrapes in between, so that every
counter and histogram has grown between two samples. Then every PromQL expression of
deploy/grafana/mailflow-dashboard.json (panel targets and variables, Grafana's
variables substituted) must return data, with at least one number that is not NaN
(a histogram_quantile over nothing is NaN: an empty panel); every series the traffic
counted in must have been on /metrics at 0 from the start (its label values known
before the first event), and every alert rule of
deploy/prometheus/mailflow-alerts.yml, loaded by that Prometheus, must be evaluated
without error.
"""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from conftest import REPO, Daemon, Sink
from dashboard import dashboard_queries, has_numbers, substitute
from mailflow.acks import SUPPRESSED
from prometheus import PrometheusServer, scraping
from traffic import paris, round_of_mail, traffic_config, traffic_rules

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ALERTS = REPO / "deploy" / "prometheus" / "mailflow-alerts.yml"


def series(d: Daemon) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """(sample name, labels) of each sample on the daemon's /metrics now."""
    with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics",
                                timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items())))
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name.startswith("mailflow_")}


def from_mail(name: str, labels: tuple[tuple[str, str], ...]) -> bool:
    """A series whose label value only the mail tells: the automatic-mail sign that
    stopped an acknowledgement (the others' reasons are known at start)."""
    return name in ("mailflow_acks_suppressed_total", "mailflow_acks_suppressed_created") \
        and dict(labels)["reason"] not in SUPPRESSED


@pytest.fixture
def mailflow(tmp_path: Path, daemon_factory: Any) -> Daemon:
    d: Daemon = daemon_factory(config=traffic_config(),
                               rules=traffic_rules(tmp_path / "rules-src"),
                               test_clock=paris(2026, 11, 23, 10, 0))
    return d


@pytest.fixture
def prometheus(mailflow: Daemon) -> Iterator[PrometheusServer]:
    with scraping(mailflow.metrics_port, rule_files=[ALERTS]) as server:
        yield server


def test_every_dashboard_query_and_alert_works_on_real_data(
        mailflow: Daemon, sink: Sink, prometheus: PrometheusServer) -> None:
    started = series(mailflow)
    prometheus.wait_scrapes(2)
    # twice, scraped in between: a series a first round created, the second one grows
    # (and between an agent's two answers: a per-agent series created, then grown)
    def scraped() -> None:
        prometheus.wait_scrapes(2)

    round_of_mail(mailflow, sink, 1, paris(2026, 11, 23, 10, 0), scraped)  # Monday
    prometheus.wait_scrapes(3)
    round_of_mail(mailflow, sink, 2, paris(2026, 11, 25, 10, 0), scraped)  # Wednesday
    prometheus.wait_scrapes(3)

    exprs, variables = dashboard_queries()
    assert len(exprs) >= 40
    # the open-cases gauge is recomputed every 30 s: wait (bounded) for what lags
    missing: list[str] = []
    deadline = time.monotonic() + 60
    while True:
        missing = [f"{where}: {substitute(expr)}" for where, expr in exprs
                   if not has_numbers(prometheus.query(substitute(expr)))]
        for name, metric, label in variables:
            answer = prometheus.api(f"label/{label}/values", **{"match[]": metric})
            if answer.get("status") != "success" or not answer["data"]:
                missing.append(f"variable {name}: label_values({metric}, {label})")
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not missing, "no data from Prometheus for:\n" + "\n".join(missing)

    # and the figures are the traffic's: first answers 10 minutes after the case opened,
    # all in time; the lawyer's 5 h 30 after the forward; the open cases the store's
    panel = {where: expr for where, expr in exprs}

    def values(where: str) -> dict[str, float]:
        result = prometheus.query(substitute(panel[where]))["data"]["result"]
        return {json.dumps(item["metric"], sort_keys=True): float(item["value"][1])
                for item in result}

    assert values("panel 'SLA success rate (range)' A") == {"{}": 1.0}
    first = values("panel 'First-response time by route (p50, p90)' A")
    assert 300 < first['{"route": "sav"}'] <= 900, first
    expert = values("panel 'Expert answer time by rule (p50, p90, range)' A")
    assert 14400 < expert['{"rule": "legal-notice"}'] <= 28800, expert
    with sqlite3.connect(mailflow.db) as db:
        (open_cases,) = db.execute("SELECT count(*) FROM cases WHERE status <> 'closed'"
                                   ).fetchone()
    assert open_cases >= 8
    deadline = time.monotonic() + 45  # the gauge is recomputed every 30 s
    while values("panel 'Open cases' A") != {"{}": float(open_cases)}:
        assert time.monotonic() < deadline, (values("panel 'Open cases' A"), open_cases)
        time.sleep(1)
    # the scheduler's heartbeat is real time, the test clock's notwithstanding
    (age,) = values("panel 'Scheduler heartbeat age' A").values()
    assert 0 <= age < 30, age

    # every series the traffic counted in was there from the start, at 0: its labels were
    # known (the rules', the stages', the framework's), but for what only mail can tell
    grown = {(name, labels) for name, labels in series(mailflow) - started
             if not name.endswith("_created") and not from_mail(name, labels)}
    assert not grown, sorted(grown)

    # every alert rule: loaded, evaluated by Prometheus without error
    rules: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = prometheus.api("rules")
        assert answer["status"] == "success", answer
        rules = [rule for group in answer["data"]["groups"] for rule in group["rules"]]
        if rules and all(rule["health"] != "unknown" for rule in rules):
            break
        time.sleep(0.5)
    shipped = [rule for group in YAML(typ="safe").load(ALERTS.read_text(encoding="utf-8"))
               ["groups"] for rule in group["rules"]]
    assert sorted(r["name"] for r in rules) == sorted(r["alert"] for r in shipped)
    unhealthy = {r["name"]: (r["health"], r.get("lastError")) for r in rules
                 if r["health"] != "ok"}
    assert not unhealthy, unhealthy
    for rule in shipped:  # and each expression on its own, through the query API
        answer = prometheus.query(rule["expr"])
        assert answer["status"] == "success", (rule["alert"], answer)
