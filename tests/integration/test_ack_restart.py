"""kill -9 after the 250: every acknowledgement owed is still sent, exactly once.

The acknowledgement rows are committed (and released) before the client hears
250. Here the next hop refuses the acks for a while (a 4xx at RCPT, so the
outbox retries them), and the daemon is killed with SIGKILL right after each
message's 250 and the failed ack attempt, then started again on the same
state. Once the next hop takes acks again, each case gets exactly one.
"""

from __future__ import annotations

import email
import sqlite3
import time
from collections import Counter
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest

from conftest import NULL_SENDERS, Daemon, Sink, ack_case, rules_with_chain

pytestmark = pytest.mark.slow  # starts the daemon: `pytest -m 'not slow'` leaves it out

N = 5
BACKOFF = 2.0  # seconds between two attempts of one ack




def customer(i: int) -> str:
    return f"client{i}@client{i}.test"


def message(i: int) -> bytes:
    return (f"From: Client {i} <{customer(i)}>\r\nTo: sav@example.com\r\n"
            f"Subject: Commande {1000 + i}\r\nMessage-ID: <restart-{i}@client{i}.test>\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n"
            f"Bonjour, ma commande {1000 + i} n'est pas arrivée.\r\n").encode()


def outbox(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT id, state, attempts, lease_until, next_attempt, rcpt_to"
                            " FROM outbox ORDER BY id").fetchall()
    finally:
        conn.close()


def wait_until_refused_and_idle(db: Path, count: int, timeout: float = 10.0) -> None:
    """``count`` ack rows, each tried (and refused) at least once, none in flight or due soon.

    Killing the daemon while one is in flight would leave it leased by a dead
    process; this waits for a moment when every row sits in its back-off.
    """
    deadline = time.monotonic() + timeout
    rows: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline:
        rows = outbox(db)
        now = time.time()
        if len(rows) == count and all(
                state == "ready" and attempts >= 1 and lease is None and due > now + 0.4
                for _, state, attempts, lease, due, _ in rows):
            return
        time.sleep(0.02)
    raise AssertionError(f"outbox never idle: {rows}")


def acks(sink: Sink) -> list[tuple[list[str], str]]:
    found = []
    for m in sink.messages:
        if m.mail_from not in NULL_SENDERS:
            continue
        msg = email.message_from_bytes(m.data, policy=default_policy)
        if msg["Auto-Submitted"] == "auto-replied":
            found.append((m.rcpt_tos, ack_case(msg)))
    return found


def test_kill_9_after_each_250_still_acknowledges_each_case_once(
        daemon_factory: Any, sink: Sink, tmp_path: Path) -> None:
    daemon: Daemon = daemon_factory(
        rules=rules_with_chain(tmp_path, ["number", "deduplicate", "acknowledge"]), start=False,
        config={"outbox": {"poll_interval": 0.2, "backoff_initial": BACKOFF,
                           "backoff_max": BACKOFF}})
    db = daemon.tmp / "state" / "mailflow.sqlite3"
    refusal = "451 4.2.1 Mailbox busy, try again later"
    sink.handler.rcpt_replies = {customer(i): refusal for i in range(N)}

    for i in range(N):
        daemon.start()
        code, text = daemon.send(message(i), customer(i), ["sav@example.com"])
        assert code == 250, text
        wait_until_refused_and_idle(db, i + 1)
        daemon.kill()  # SIGKILL: no shutdown, nothing flushed

    relayed = [m for m in sink.messages if m.mail_from not in NULL_SENDERS]
    assert len(relayed) == N  # every customer message reached the next hop once
    assert acks(sink) == []  # and no ack could go out yet
    assert all(state == "ready" for _, state, *_ in outbox(db))

    sink.handler.rcpt_replies = {}  # the next hop takes acks again
    daemon.start()
    deadline = time.monotonic() + BACKOFF + 8
    while len(acks(sink)) < N and time.monotonic() < deadline:
        time.sleep(0.05)
    daemon.settle()  # nothing left to send: a second copy of any ack would be here
    got = acks(sink)
    per_case = Counter(case for _, case in got)
    cases = {m.data.split(b"X-Mailflow-Case: ", 1)[1].split(b"\r\n", 1)[0].decode()
             for m in relayed}
    assert set(per_case) == cases, (per_case, cases)
    assert all(count == 1 for count in per_case.values()), per_case
    assert sorted(rcpt for rcpt, _ in got) == sorted([customer(i)] for i in range(N))
    assert [state for _, state, *_ in outbox(db)] == ["sent"] * N
    daemon.stop()
