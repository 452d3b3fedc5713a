"""When a run is over: every message, and all the mail the daemon wrote, at the sink.

mailflow answers 250 once the next hop took the customer's message, but what it writes
itself (acknowledgements, escalations) leaves later, from its outbox. So a run's clock
stops only when the outbox holds nothing left to send (no row 'ready' or 'held') and
the sink has counted the accepted messages plus every outbox row sent. Both are read
from other processes (smtp-sink's counter file, the daemon's store), which offer
nothing to await: they are polled, briefly and within a bound.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from procs import sink_messages

POLL = 0.02  # seconds between two looks
#: the rows queued since a mark (the id before the run: a key range, cheap in a big store)
COUNTS = "SELECT kind, state, count(*) FROM outbox WHERE id > {since} GROUP BY kind, state"
LAST_ID = "SELECT COALESCE(max(id), 0) FROM outbox"
PENDING = ("ready", "held")  # to be sent (held: its message not relayed yet)


@dataclass
class OutboxCounts:
    """Rows of the daemon's outbox by (kind, state): ack, escalation, relay, bounce…"""

    rows: Counter[tuple[str, str]] = field(default_factory=Counter)

    def states(self, *states: str) -> int:
        return sum(n for (_, state), n in self.rows.items() if state in states)

    def queued(self, kind: str) -> int:
        """Rows of ``kind`` the daemon queued (sent, still to send, or given up)."""
        return sum(n for (k, _), n in self.rows.items() if k == kind)

    @property
    def pending(self) -> int:
        return self.states(*PENDING)

    @property
    def sent(self) -> int:
        return self.states("sent")


class Outbox:
    """Reads a daemon's outbox: the SQLite file in its state folder (read-only) or the
    PostgreSQL database the daemons share."""

    def __init__(self, store: str | Path) -> None:
        self.store = str(store)
        self.conn: Any = None
        self.since = 0  # rows up to this id are not counted (a daemon that served before)

    def connect(self) -> Any:
        if self.conn is None:
            if self.store.startswith("postgresql://"):
                import psycopg

                self.conn = psycopg.connect(self.store, autocommit=True, connect_timeout=10)
            else:
                self.conn = sqlite3.connect(f"file:{self.store}?mode=ro", uri=True, timeout=5)
        return self.conn

    def mark(self) -> None:
        """Count only the rows queued from now on (all earlier ones are settled)."""
        self.since = int(self.connect().execute(LAST_ID).fetchall()[0][0])

    def counts(self) -> OutboxCounts:
        rows = self.connect().execute(COUNTS.format(since=int(self.since))).fetchall()
        return OutboxCounts(Counter({(kind, state): int(n) for kind, state, n in rows}))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class Settled:
    at: float  # time.perf_counter() of the last look
    sink: int  # messages the sink counted since the run began
    outbox: OutboxCounts
    complete: bool  # all there within the bound
    accepted: int = 0

    @property
    def expected(self) -> int:
        """What the sink should count: the accepted messages plus the outbox rows sent."""
        return self.accepted + self.outbox.sent


def settle(counter: Path, sink_before: int, accepted: int, outbox: Outbox | None,
           timeout: float) -> Settled:
    """Wait (up to ``timeout`` s) until the outbox has nothing to send and the sink has
    counted ``accepted`` messages plus the outbox rows sent; the last look either way."""
    deadline = time.monotonic() + timeout
    while True:
        sink = sink_messages(counter) - sink_before
        counts = outbox.counts() if outbox is not None else OutboxCounts()
        now = time.perf_counter()
        complete = counts.pending == 0 and sink >= accepted + counts.sent
        if complete or time.monotonic() >= deadline:
            return Settled(now, sink, counts, complete, accepted)
        time.sleep(POLL)
