"""After an outage, a burst of real customers: every one acknowledged, paced, none lost.

Postfix kept 70 customers' mail while mailflow was down; ``postqueue -f`` brings it all
at once. A burst of distinct customers is not a loop: past the pace (60 a minute) the
acknowledgements wait their turn in the outbox instead of being dropped. One the next
hop keeps refusing for longer than its maximum age (2 hours) expires: recorded with the
reason, never sent late with a stale promise; ``cases show`` says what became of each.
The daemon runs on its test clock, so the pace and the maximum age pass in an instant.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from clirunner import run_cli
from conftest import NULL_SENDERS, REPO, Daemon, Sink, metric, rules_with_chain

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

T0 = 1_796_630_400.0  # Monday 2026-12-07 09:00 Paris (08:00 UTC)
BURST = 70


def customer(i: int) -> str:
    return f"client{i}@client{i}.test"


def message(i: int) -> bytes:
    return (f"From: Client {i} <{customer(i)}>\r\nTo: sav@example.com\r\n"
            f"Subject: Commande {1000 + i}\r\nMessage-ID: <burst-{i}@client{i}.test>\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n"
            f"Bonjour, ma commande {1000 + i} n'est pas arrivée.\r\n").encode()


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def acks_received(sink: Sink) -> Counter[str]:
    return Counter(m.rcpt_tos[0] for m in sink.messages if m.mail_from in NULL_SENDERS)


def wait_for_acks(sink: Sink, count: int, timeout: float = 20.0) -> Counter[str]:
    deadline = time.monotonic() + timeout
    while sum(acks_received(sink).values()) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return acks_received(sink)


@pytest.fixture
def daemon(daemon_factory: Any, tmp_path: Path) -> Daemon:
    rules = rules_with_chain(tmp_path, ["number", "deduplicate", "route", "acknowledge"])
    d: Daemon = daemon_factory(rules=rules, test_clock=T0)
    return d


def case_show(d: Daemon, number: str) -> dict[str, str]:
    result = run_cli("cases", "show", number, "--config", str(d.config_path), cwd=REPO)
    assert result.returncode == 0, result.stderr
    return {line[:12].strip(): line[13:] for line in result.stdout.splitlines()
            if not line.startswith(" ")}


def test_seventy_customers_after_an_outage_all_get_one_acknowledgement(
        daemon: Daemon, sink: Sink) -> None:
    d = daemon

    def deliver(i: int) -> int:
        return d.send(message(i), mail_from=customer(i))[0]

    with ThreadPoolExecutor(max_workers=10) as pool:  # the flushed queue, ten at a time
        codes = list(pool.map(deliver, range(BURST)))
    assert codes == [250] * BURST
    sink.wait_for(BURST + 60, timeout=20)  # the 70 messages, and the first minute's acks
    d.settle()  # nothing else is due yet: the rest wait their turn
    # the pace is counted in the store: sessions deciding at the same instant may each
    # see room for one more, so a few more than 60 may leave at once, never all 70
    now = sum(acks_received(sink).values())
    assert 60 <= now < BURST
    planned = query(d.db, "SELECT next_attempt FROM outbox WHERE kind = 'ack'"
                    " AND state = 'ready' ORDER BY next_attempt")
    assert len(planned) == BURST - now
    assert planned[0][0] > T0 and planned[-1][0] <= T0 + 60  # within the next minute

    d.advance(61)  # a minute on: every one has had its turn
    acks = wait_for_acks(sink, BURST)
    assert acks == Counter({customer(i): 1 for i in range(BURST)})
    assert metric(d, "mailflow_acks_total") == BURST
    assert "ack_suppressed" not in d.log

    (number,), = query(d.db, "SELECT number FROM cases WHERE customer = ?", customer(69))
    assert case_show(d, number)["ack"].startswith("sent 2026-12-07 09:0")


def test_an_acknowledgement_past_its_maximum_age_expires_unsent(
        daemon: Daemon, sink: Sink) -> None:
    d = daemon
    sink.handler.rcpt_replies[customer(1)] = "451 4.3.0 Mailbox busy, try later"
    assert d.send(message(1), mail_from=customer(1))[0] == 250
    sink.wait_for(1)
    time.sleep(0.5)  # the outbox tries, and is refused
    (number,), = query(d.db, "SELECT number FROM cases WHERE customer = ?", customer(1))
    waiting = case_show(d, number)["ack"]
    assert waiting.startswith("waiting to be sent, next try 2026-12-07 09:0"), waiting
    assert "451 4.3.0 Mailbox busy" in waiting

    d.advance(2 * 3600 + 60)  # two hours of refusals: the promise is stale now
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and metric(
            d, "mailflow_outbox_failures_total", kind="ack", outcome="expired") < 1:
        time.sleep(0.1)
    assert metric(d, "mailflow_outbox_failures_total", kind="ack", outcome="expired") == 1
    sink.handler.rcpt_replies.clear()
    d.advance(3600)
    d.settle()
    assert not acks_received(sink)  # never sent late
    expired = case_show(d, number)["ack"]
    assert expired.startswith("expired: not sent by 2026-12-07 10:0"), expired
    assert "(last error: 451 4.3.0 Mailbox busy" in expired


def test_show_says_why_a_new_case_got_no_acknowledgement(daemon: Daemon, sink: Sink) -> None:
    d = daemon
    robot = ("From: <noreply@shop.test>\r\nTo: sav@example.com\r\nSubject: Commande 77\r\n"
             "Message-ID: <robot-1@shop.test>\r\n\r\nVotre commande 77 est prête.\r\n").encode()
    assert d.send(robot, mail_from="noreply@shop.test")[0] == 250
    sink.wait_for(1)
    d.settle()
    (number,), = query(d.db, "SELECT number FROM cases WHERE customer = 'noreply@shop.test'")
    shown = case_show(d, number)
    assert shown["ack"].startswith("not sent: "), shown
    assert "noreply" in shown["ack"]
    assert not acks_received(sink)
