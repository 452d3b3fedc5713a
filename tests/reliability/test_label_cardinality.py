"""The number of Prometheus series stays bounded, however many senders and agents write.

A Prometheus label must never take its values from the internet: one series per
customer address would grow the daemon's /metrics and every Prometheus scraping it
without limit. Here 3,000 distinct customers (``MAILFLOW_SOAK_SENDERS`` for more) write
to the service, over SMTP, and 50
addresses of the company that the rules do not know answer them from the trusted
network, as the team's mailbox; the series on /metrics are counted after a first wave
and after the rest. The increase must not depend on the number of senders, no label
value may hold an address, and per-agent series only name the agents of the rules, or
"other".
"""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Daemon, Sink, metric, report
from traffic import OUTSIDE, ClientFrom, mail, paris, traffic_config, traffic_rules

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SENDERS = int(os.environ.get("MAILFLOW_SOAK_SENDERS", "3000"))
UNKNOWN_AGENTS = 50
FIRST_WAVE = 500  # senders of the first wave (and half of the unknown agents)
PER_SESSION = 100  # transactions per SMTP connection, as a busy MTA in front sends them


def series(d: Daemon) -> dict[str, set[tuple[tuple[str, str], ...]]]:
    """Sample name -> its label sets, as /metrics shows them now."""
    with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics",
                                timeout=10) as resp:
        text = resp.read().decode()
    found: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, set()).add(tuple(sorted(sample.labels.items())))
    return found


def count(found: dict[str, set[tuple[tuple[str, str], ...]]]) -> int:
    return sum(len(labels) for labels in found.values())


def customers(d: Daemon, first: int, last: int) -> None:
    """Customers ``first`` to ``last - 1`` each write one message, from outside."""
    for start in range(first, last, PER_SESSION):
        client = ClientFrom(d.port, OUTSIDE)
        try:
            client.greet(b"mx.client.test")
            for i in range(start, min(start + PER_SESSION, last)):
                sender = f"customer{i}@client{i % 997}.test"
                client.envelope(f"<{sender}>".encode(), b"<sav@example.com>")
                client.send(mail(sender, "sav@example.com", f"Commande {i}",
                                 f"c-{i}@client.test") + b".\r\n")
                code, text = client.reply()
                assert code == 250, (i, text)
        finally:
            client.close()


def unknown_agents(d: Daemon, first: int, last: int) -> None:
    """Colleagues the rules do not know (a temp, a shared tool) answer customers from the
    trusted network, as the team (``From: sav@``: a reply of the sav team), each from an
    envelope sender of their own."""
    client = ClientFrom(d.port, "127.0.0.1")
    try:
        client.greet(b"intranet.example.com")
        for i in range(first, last):
            agent, customer = f"temp.agent{i}@example.com", f"customer{i}@client{i % 997}.test"
            client.envelope(f"<{agent}>".encode(), f"<{customer}>".encode())
            client.send(mail("SAV <sav@example.com>", customer, f"Re: Commande {i}",
                             f"u-{i}@example.com",
                             f"In-Reply-To: <c-{i}@client.test>\r\n") + b".\r\n")
            code, text = client.reply()
            assert code == 250, (i, text)
    finally:
        client.close()


def test_series_do_not_grow_with_senders_or_unknown_agents(
        tmp_path: Path, daemon_factory: Any, sink: Sink) -> None:
    d: Daemon = daemon_factory(config=traffic_config(), rules=traffic_rules(tmp_path / "r"),
                               test_clock=paris(2026, 11, 23, 10, 0))
    before = count(series(d))
    started = time.monotonic()
    customers(d, 0, FIRST_WAVE)
    unknown_agents(d, 0, UNKNOWN_AGENTS // 2)
    d.settle(60)
    first = series(d)
    customers(d, FIRST_WAVE, SENDERS)
    unknown_agents(d, UNKNOWN_AGENTS // 2, UNKNOWN_AGENTS)
    d.settle(120)
    after = series(d)
    elapsed = time.monotonic() - started
    report(f"label cardinality: {before} series at start, {count(first)} after "
           f"{FIRST_WAVE} senders, {count(after)} after {SENDERS} senders and "
           f"{UNKNOWN_AGENTS} unknown agents ({SENDERS + UNKNOWN_AGENTS} messages in "
           f"{elapsed:.0f} s)")
    assert len(sink.messages) >= SENDERS  # they all went through
    # the unknown colleagues' answers were taken as agents' replies to the customers
    assert metric(d, "mailflow_messages_by_direction_total", direction="reply") \
        == UNKNOWN_AGENTS
    # the 9,500 later senders and 25 later agents added no series at all (a new label set
    # appearing late, e.g. a circuit breaker's reason, would be a handful, not thousands)
    grown = {name: sorted(labels - first.get(name, set()))
             for name, labels in after.items() if labels - first.get(name, set())}
    assert count(after) - count(first) <= 10, grown
    values = {value for labels in after.values() for one in labels for _, value in one}
    assert not [v for v in values if "@" in v or "client" in v or "temp.agent" in v]
    agents = {value for labels in after.values() for one in labels for key, value in one
              if key == "agent"}
    # the rules' names (route members' `name`, else the local part of their address, an
    # account manager's too: each series at 0 from the start)
    assert "other" in agents
    assert agents <= {"alice", "bruno", "chloe", "david.simon", "emma.laurent",
                      "lea.garnier", "carole.martin", "other"}
