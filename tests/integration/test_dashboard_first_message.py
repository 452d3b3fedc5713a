"""The shipped dashboard on a daemon that got ONE customer message: no "No data".

A real Prometheus (tests/prometheus.py) scrapes the real daemon, running the shipped
rules' whole chain, before and after a single customer writes to the after-sales
mailbox (acknowledged, numbered, routed, counted). Every expression of
deploy/grafana/mailflow-dashboard.json must then answer with a number, the series the
rules make known having been exported at zero since the start, except those listed in
:data:`NEEDS_LATER`, each with the event it waits for: for those the test checks they
really are still empty, so the list says exactly what a new administrator sees.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, Sink, full_chain_rules
from dashboard import dashboard_queries, has_numbers, substitute
from prometheus import PrometheusServer, scraping
from traffic import TRUSTED, customer_case, paris

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

_ANSWER = "needs an answer to a customer (an agent's reply)"
#: the panels that stay empty until a later event, and why
NEEDS_LATER = {
    "panel 'First-response time by route (p50, p90)' A":
        f"a quantile of first responses: {_ANSWER}",
    "panel 'First-response time by route (p50, p90)' B":
        f"a quantile of first responses: {_ANSWER}",
    "panel 'Response time by route (p50, p90)' A": f"a quantile of response times: {_ANSWER}",
    "panel 'Response time by route (p50, p90)' B": f"a quantile of response times: {_ANSWER}",
    "panel 'SLA success rate (range)' A":
        f"in time / all first responses is 0/0 before the first one: {_ANSWER}",
    "panel 'SLA success rate by route and priority (range)' A":
        f"in time / all first responses is 0/0 before the first one: {_ANSWER}",
    "panel 'First-response time by route and priority (p90, range)' A":
        f"a quantile of first responses: {_ANSWER}",
    "panel 'Per agent: replies and response time (range)' B":
        f"a quantile of an agent's response times: {_ANSWER}",
    "panel 'Per agent: replies and response time (range)' C":
        f"a quantile of an agent's response times: {_ANSWER}",
    "panel 'Expert answer time by rule (p50, p90, range)' A":
        "a quantile of experts' answer times: needs an expert's answer to an escalation",
    "panel 'Expert answer time by rule (p50, p90, range)' B":
        "a quantile of experts' answer times: needs an expert's answer to an escalation",
}


@pytest.fixture
def mailflow(tmp_path: Path, daemon_factory: Any) -> Daemon:
    d: Daemon = daemon_factory(config={"trusted_networks": TRUSTED},
                               rules=full_chain_rules(tmp_path / "rules-src"),
                               test_clock=paris(2026, 11, 23, 10, 0))
    return d


@pytest.fixture
def prometheus(mailflow: Daemon) -> Iterator[PrometheusServer]:
    with scraping(mailflow.metrics_port) as server:
        yield server


def test_one_customer_message_fills_the_dashboard(
        mailflow: Daemon, sink: Sink, prometheus: PrometheusServer) -> None:
    exprs, variables = dashboard_queries()
    wheres = {where for where, _ in exprs}
    assert set(NEEDS_LATER) <= wheres, sorted(set(NEEDS_LATER) - wheres)
    prometheus.wait_scrapes(2)
    customer_case(mailflow, sink, "claire.martin@client.test", "sav@example.com",
                  "q-1@client.test")
    sink.wait_for(2)  # the message, and its acknowledgement sent from the outbox
    mailflow.settle()
    prometheus.wait_scrapes(3)

    empty: list[str] = []
    answered: list[str] = []
    deadline = time.monotonic() + 20  # a sample a scrape took a moment ago: bounded wait
    while True:
        found = {where: has_numbers(prometheus.query(substitute(expr)))
                 for where, expr in exprs}
        empty = [f"{where}: {substitute(expr)}" for where, expr in exprs
                 if where not in NEEDS_LATER and not found[where]]
        for name, metric, label in variables:
            answer = prometheus.api(f"label/{label}/values", **{"match[]": metric})
            if answer.get("status") != "success" or not answer["data"]:
                empty.append(f"variable {name}: label_values({metric}, {label})")
        answered = [where for where in NEEDS_LATER if found[where]]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not empty, "no data from Prometheus after one message for:\n" + "\n".join(empty)
    assert not answered, f"these answer after one message: take them off NEEDS_LATER: {answered}"
    share = f"{len(exprs) - len(NEEDS_LATER)} of {len(exprs)}"
    print(f"dashboard after one customer message: {share} expressions answer")
