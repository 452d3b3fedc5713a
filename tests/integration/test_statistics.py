"""Statistics in the real daemon: what an answer records, what /metrics shows, what a
restart keeps, what per_agent: false leaves out, and what /healthz says.

Shipped rules (Paris calendar, sav's members alice, bruno, chloe by round robin) on
the daemon's test clock; loopback is trusted, so agents reply from it.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client.parser import text_string_to_metric_families

from clirunner import run_cli
from conftest import NULL_SENDERS, Daemon, Sink, full_chain_rules, metric, parse_email

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PARIS = ZoneInfo("Europe/Paris")
SLA = {"priorities": {p: {"first_response": "2bh", "update": "2bh", "warn_before": "30m"}
                      for p in ("urgent", "high", "normal", "low")}}
MONDAY_9 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=PARIS).timestamp()
NAMES = {"alice.moreau@example.com": "alice", "bruno.petit@example.com": "bruno",
         "chloe.roger@example.com": "chloe"}


def start(daemon_factory: Any, tmp_path: Path, **config: Any) -> Daemon:
    rules = full_chain_rules(tmp_path / "rules-src", sla=SLA)
    d: Daemon = daemon_factory(config={"trusted_networks": ["127.0.0.0/8"], **config},
                               rules=rules, test_clock=MONDAY_9)
    return d


def customer(d: Daemon, sink: Sink, mid: str, sender: str = "claire@client.test",
             extra: str = "") -> tuple[str, str]:
    """A customer's message to sav@: (its case, the agent it went to)."""
    data = (f"From: <{sender}>\r\nTo: sav@example.com\r\nSubject: Commande en retard\r\n"
            f"Message-ID: <{mid}>\r\n{extra}\r\nBonjour, ma commande 4821 n'arrive pas.\r\n")
    code, text = d.send(data.encode(), mail_from=sender, rcpt_to=["sav@example.com"])
    assert code == 250, text
    assert wait_until(lambda: any(relayed_copy(m, mid) for m in sink.messages))
    d.settle()
    relayed = next(m for m in sink.messages if relayed_copy(m, mid))
    return parse_email(relayed.data)["X-Mailflow-Case"], relayed.rcpt_tos[0]


def relayed_copy(m: Any, mid: str) -> bool:
    return m.mail_from not in NULL_SENDERS and f"<{mid}>" in m.data.decode("utf-8", "replace")


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def answer(d: Daemon, agent: str, mid: str, to_mid: str,
           customer_address: str = "claire@client.test") -> None:
    data = (f"From: <{agent}>\r\nTo: {customer_address}\r\nSubject: Re: Commande\r\n"
            f"Message-ID: <{mid}>\r\nIn-Reply-To: <{to_mid}>\r\n\r\nVotre colis part.\r\n")
    code, text = d.send(data.encode(), mail_from=agent, rcpt_to=[customer_address])
    assert code == 250, text
    d.settle()


def query(d: Daemon, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(d.db) as db:
        return list(db.execute(sql, args))


def samples(d: Daemon) -> list[Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics",
                                timeout=5) as resp:
        text = resp.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def test_an_answer_records_its_delays_in_the_store_and_the_metrics(
        daemon_factory: Any, tmp_path: Path, sink: Sink) -> None:
    d = start(daemon_factory, tmp_path)
    case, agent = customer(d, sink, "q-1@client.test")
    name = NAMES[agent]
    d.set_time(MONDAY_9 + 1800)  # the customer writes again half an hour later
    assert customer(d, sink, "q-2@client.test",
                    extra="In-Reply-To: <q-1@client.test>\r\n")[0] == case
    d.set_time(MONDAY_9 + 3600)  # the agent answers after an hour: in time (2bh)
    answer(d, agent, "a-1@example.com", "q-2@client.test")
    d.set_time(MONDAY_9 + 5400)  # and again, unasked: no response to count
    answer(d, agent, "a-2@example.com", "q-2@client.test")

    rows = query(d, "SELECT kind, route, priority, agent, seconds, in_time FROM"
                 " stats_responses ORDER BY id")
    assert rows == [("first_response", "sav", "normal", name, 3600.0, 1),
                    # from the oldest message not answered, the first one
                    ("response", "sav", "normal", name, 3600.0, None)]
    volumes = dict(query(d, "SELECT label, count FROM stats_counts WHERE measure = 'mail'"
                         " AND day = '2026-11-23' AND route = 'sav'"))
    assert volumes == {"inbound": 2, "reply": 2}
    assert query(d, "SELECT route, priority, count FROM stats_counts"
                 " WHERE measure = 'case_opened'") == [("sav", "normal", 1)]
    # no address and no subject in the statistics tables
    dump = repr(query(d, "SELECT * FROM stats_counts")) + repr(
        query(d, "SELECT * FROM stats_responses"))
    assert "@" not in dump and "Commande" not in dump

    labels = {"route": "sav", "priority": "normal"}
    assert metric(d, "mailflow_first_response_seconds_count", **labels) == 1
    assert metric(d, "mailflow_first_response_seconds_sum", **labels) == 3600
    assert metric(d, "mailflow_first_response_seconds_bucket", le="3600.0", **labels) == 1
    assert metric(d, "mailflow_first_response_seconds_bucket", le="1800.0", **labels) == 0
    assert metric(d, "mailflow_first_responses_total", in_time="yes", **labels) == 1
    assert metric(d, "mailflow_response_seconds_count", **labels) == 1
    assert metric(d, "mailflow_agent_replies_total", agent=name) == 2
    assert metric(d, "mailflow_agent_response_seconds_count", agent=name) == 1
    assert not any("@" in value for s in samples(d) for value in s.labels.values())


def test_open_cases_come_from_the_store_also_after_a_restart(
        daemon_factory: Any, tmp_path: Path, sink: Sink) -> None:
    d = start(daemon_factory, tmp_path)
    for i in range(3):
        customer(d, sink, f"q-{i}@client.test", sender=f"c{i}@client.test")
    number = query(d, "SELECT number FROM cases ORDER BY number LIMIT 1")[0][0]
    with sqlite3.connect(d.db) as db:  # closed behind the daemon's back (another daemon)
        db.execute("UPDATE cases SET status = 'closed' WHERE number = ?", (number,))
    d.stop()
    d.start()
    open_now = {"route": "sav", "priority": "normal", "status": "open"}
    assert wait_until(lambda: metric(d, "mailflow_cases_open", **open_now) == 2)
    assert metric(d, "mailflow_healthy") == 1


def test_per_agent_off_leaves_no_agent_anywhere(daemon_factory: Any, tmp_path: Path,
                                                sink: Sink) -> None:
    d = start(daemon_factory, tmp_path, statistics={"per_agent": False})
    _, agent = customer(d, sink, "q-1@client.test")
    d.set_time(MONDAY_9 + 600)
    answer(d, agent, "a-1@example.com", "q-1@client.test")
    assert query(d, "SELECT kind, agent FROM stats_responses ORDER BY id") == [
        ("first_response", ""), ("response", "")]
    names = {s.name for s in samples(d)}
    assert "mailflow_first_response_seconds_count" in names
    assert not [n for n in names if n.startswith("mailflow_agent_")]


def test_passed_mail_is_counted_by_direction_only(daemon_factory: Any, tmp_path: Path,
                                                  sink: Sink) -> None:
    d = start(daemon_factory, tmp_path)
    data = (b"From: <supplier@vendor.test>\r\nTo: <partner@elsewhere.test>\r\n"
            b"Subject: Facture 12\r\nMessage-ID: <p-1@vendor.test>\r\n\r\nHello\r\n")
    code, text = d.send(data, mail_from="supplier@vendor.test",
                        rcpt_to=["partner@elsewhere.test"])
    assert code == 250, text
    sink.wait_for(1)
    assert wait_until(lambda: query(
        d, "SELECT day, route, priority, label, count FROM stats_counts"
        " WHERE measure = 'mail'") == [("2026-11-23", "", "", "passthrough", 1)])
    assert query(d, "SELECT count(*) FROM messages") == [(0,)]  # nothing else stored


def test_healthz_names_the_next_hop_that_went_away(daemon_factory: Any, tmp_path: Path,
                                                   sink: Sink) -> None:
    d = start(daemon_factory, tmp_path)
    with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/healthz",
                                timeout=5) as resp:
        assert resp.read().decode().startswith(
            "ok: store: ok; next hop: ok; scheduler: ok; accepting mail")
    sink.stop()
    code, _ = d.send(b"From: <c@client.test>\r\nTo: sav@example.com\r\nSubject: x\r\n"
                     b"Message-ID: <h-1@client.test>\r\n\r\nHello\r\n",
                     mail_from="c@client.test", rcpt_to=["sav@example.com"])
    assert code == 451
    with pytest.raises(urllib.error.HTTPError) as failed:
        urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/healthz", timeout=5)
    body = failed.value.read().decode()
    assert failed.value.code == 503
    assert body.startswith("unhealthy: store: ok; next hop: smtp://127.0.0.1:"), body
    assert "scheduler: ok" in body


def test_retention_purges_old_records_and_keeps_the_statistics(
        daemon_factory: Any, tmp_path: Path, sink: Sink) -> None:
    d = start(daemon_factory, tmp_path, statistics={"retention": "30d"})
    old, agent = customer(d, sink, "q-old@client.test", sender="old@client.test")
    d.set_time(MONDAY_9 + 600)
    answer(d, agent, "a-old@example.com", "q-old@client.test", "old@client.test")
    still_open, _ = customer(d, sink, "q-open@client.test", sender="open@client.test")
    assert run_cli("cases", "close", old, "--config", str(d.config_path)).returncode == 0
    with sqlite3.connect(d.db) as db:  # closed that day (the command runs on real time)
        db.execute("UPDATE cases SET updated_at = ? WHERE number = ?", (MONDAY_9 + 900, old))
    kept = {table: query(d, f"SELECT * FROM {table} ORDER BY 1")
            for table in ("stats_counts", "stats_responses")}
    assert kept["stats_responses"]
    d.stop()
    d.set_time(MONDAY_9 + 31 * 86400)  # a month later: the purge runs at start
    d.start()
    d.wait_for_log("retention_purged")
    assert query(d, "SELECT number FROM cases") == [(still_open,)]
    assert query(d, "SELECT count(*) FROM case_messages WHERE case_number = ?", old) == [(0,)]
    assert query(d, "SELECT count(*) FROM sla_deadlines WHERE case_number = ?", old) == [(0,)]
    assert query(d, "SELECT count(*) FROM acks WHERE case_number = ?", old) == [(0,)]
    assert query(d, "SELECT count(*) FROM messages") == [(0,)]  # all a month old, done
    assert query(d, "SELECT count(*) FROM fingerprints WHERE case_number = ?", old) == [(0,)]
    for table, rows in kept.items():  # the aggregated statistics stay as they were (the
        # open case's breach, fired at the restart, adds a row of its own)
        now = query(d, f"SELECT * FROM {table} ORDER BY 1")
        assert set(rows) <= set(now), (rows, now)
