"""The dashboard and the alert rules against a real Prometheus scraping the real daemon.

Debian's Prometheus (tests/prometheus.py: a private server on a free loopback port,
scraping every second) reads the daemon's /metrics while customer-service mail goes
through over SMTP (tests/traffic.py), twice, with scrapes in between, so that every
counter and histogram has grown between two samples. Then every PromQL expression of
deploy/grafana/mailflow-dashboard.json (panel targets and variables, Grafana's
variables substituted) must return data, with at least one number that is not NaN
(a histogram_quantile over nothing is NaN: an empty panel), and every alert rule of
deploy/prometheus/mailflow-alerts.yml, loaded by that Prometheus, must be evaluated
without error.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from conftest import REPO, Daemon, Sink
from prometheus import PrometheusServer, unavailable
from traffic import paris, round_of_mail, traffic_config, traffic_rules

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

DASHBOARD = REPO / "deploy" / "grafana" / "mailflow-dashboard.json"
ALERTS = REPO / "deploy" / "prometheus" / "mailflow-alerts.yml"
#: what Grafana would put in place of its variables: every instance, route and
#: priority; windows long enough to hold the whole test
VARIABLES = {"$instance": ".*", "$route": ".*", "$priority": ".*", "$window": "1h",
             "$__rate_interval": "1h", "$__range": "1h", "$__interval": "15s"}
LABEL_VALUES = re.compile(r"label_values\((\w+),\s*(\w+)\)")


def substitute(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    assert "$" not in expr, f"a Grafana variable left unsubstituted: {expr}"
    return expr


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels") or [])


def dashboard_queries() -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """(where, expr) of every panel target; (variable, metric, label) of label_values."""
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [(f"panel {p['title']!r} {t['refId']}", t["expr"])
             for p in panels(data["panels"]) for t in p.get("targets") or []]
    variables = []
    for variable in data["templating"]["list"]:
        if variable["type"] == "query":
            found = LABEL_VALUES.fullmatch(variable["query"]["query"])
            assert found is not None, variable
            variables.append((variable["name"], found.group(1), found.group(2)))
    return exprs, variables


def has_numbers(answer: dict[str, Any]) -> bool:
    if answer.get("status") != "success":
        return False
    data = answer["data"]
    if data["resultType"] == "scalar":
        return not math.isnan(float(data["result"][1]))
    return any(not math.isnan(float(item["value"][1])) for item in data["result"])


@pytest.fixture
def mailflow(tmp_path: Path, daemon_factory: Any) -> Daemon:
    d: Daemon = daemon_factory(config=traffic_config(),
                               rules=traffic_rules(tmp_path / "rules-src"),
                               test_clock=paris(2026, 11, 23, 10, 0))
    return d


@pytest.fixture
def prometheus(mailflow: Daemon) -> Iterator[PrometheusServer]:
    problem = unavailable()
    if problem is not None:  # make test installs it: a failure, never a skip
        pytest.fail(problem)
    server = PrometheusServer([f"127.0.0.1:{mailflow.metrics_port}"], rule_files=[ALERTS])
    try:
        yield server.start()
    finally:
        server.stop()


def test_every_dashboard_query_and_alert_works_on_real_data(
        mailflow: Daemon, sink: Sink, prometheus: PrometheusServer) -> None:
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
