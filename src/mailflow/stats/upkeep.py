"""What the scheduler's loop keeps up besides timers: the gauges the store holds the
truth of, and the purge of old message records (``statistics.retention``).

Both are read from, or done in, the store, so they are right after a restart
and the same whichever daemon of a shared database does them: every daemon
exports the open cases it reads (aggregate with ``max``), and purging twice
deletes nothing more.
"""

from __future__ import annotations

import time

import structlog

from mailflow.clock import SYSTEM_CLOCK, Clock
from mailflow.metrics import Metrics
from mailflow.stats.metrics import label
from mailflow.stats.store import open_cases
from mailflow.store import Store, StoreUnavailable, Transaction

log = structlog.get_logger("mailflow.stats")

#: seconds between two looks at the open cases (a scrape every 15 s sees them change)
GAUGE_EVERY = 30.0
#: seconds between two purges
PURGE_EVERY = 3600.0

#: what the purge deletes, in this order: (table, condition); the closed cases' own rows
#: first, then the cases, then the message records of every kind
_CLOSED = "SELECT number FROM cases WHERE status = 'closed' AND updated_at < :cutoff"
PURGES = (
    ("case_messages", f"case_number IN ({_CLOSED})"),
    ("sla_deadlines", f"case_number IN ({_CLOSED})"),
    ("escalations", f"case_number IN ({_CLOSED})"),
    ("acks", f"case_number IN ({_CLOSED})"),
    ("cases", "status = 'closed' AND updated_at < :cutoff"),
    ("messages", "state <> 'pending' AND updated_at < :cutoff"),
    ("outbox", "state NOT IN ('ready', 'held') AND created_at < :cutoff"),
    ("timers", "state NOT IN ('active', 'held') AND due < :cutoff"),
    ("quarantine", "created_at < :cutoff"),
    ("fingerprints", "created_at < :cutoff"),
    ("ack_bounces", "at < :cutoff"),
)


def purge(tx: Transaction, cutoff: float) -> dict[str, int]:
    """Delete what is older than ``cutoff``; rows deleted per table."""
    deleted: dict[str, int] = {}
    for table, condition in PURGES:
        (before,), = tx.execute(f"SELECT count(*) FROM {table} WHERE {condition}",
                                {"cutoff": cutoff})
        if before:
            tx.execute(f"DELETE FROM {table} WHERE {condition}", {"cutoff": cutoff})
            deleted[table] = int(before)
    return deleted


class Upkeep:
    """Called at each pass of the scheduler; does each job when its time has come."""

    def __init__(self, store: Store, metrics: Metrics, retention: float | None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.store = store
        self.metrics = metrics
        self.retention = retention
        self.clock = clock
        self._gauges_at = self._purged_at = float("-inf")  # monotonic: both at the start
        self._shown: set[tuple[str, str, str]] = set()

    async def run(self) -> None:
        self.metrics.scheduler_heartbeat.set(time.time())
        now = time.monotonic()
        try:
            if now - self._gauges_at >= GAUGE_EVERY:
                self._gauges_at = now
                await self.refresh_gauges()
            if self.retention is not None and now - self._purged_at >= PURGE_EVERY:
                self._purged_at = now
                await self.purge()
        except StoreUnavailable as exc:  # the store's own health says it; try next time
            log.warning("statistics_upkeep_failed", error=str(exc))

    async def refresh_gauges(self) -> None:
        rows = await self.store.run_read(open_cases)
        gauge = self.metrics.cases_open
        shown = {(label(route), label(priority), status) for route, priority, status, _ in rows}
        for gone in self._shown - shown:
            gauge.remove(*gone)
        for route, priority, status, count in rows:
            gauge.labels(route=label(route), priority=label(priority), status=status).set(count)
        self._shown = shown

    async def purge(self) -> dict[str, int]:
        assert self.retention is not None
        cutoff = self.clock.now() - self.retention
        deleted = await self.store.run_write(lambda tx: purge(tx, cutoff))
        if deleted:
            log.info("retention_purged", older_than=cutoff, **deleted)
        return deleted
