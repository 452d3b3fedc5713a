"""What the scheduler's loop keeps up besides timers: the gauges the store holds the
truth of, and the purge of old message records (``statistics.retention``).

Both are read from, or done in, the store, so they are right after a restart
and the same whichever daemon of a shared database does them: every daemon
exports the open cases it reads (aggregate with ``max``), and purging twice
deletes nothing more.
"""

from __future__ import annotations

import structlog

from mailflow.host import Host, Housekeeping
from mailflow.stats.metrics import label
from mailflow.stats.store import open_cases
from mailflow.store import Transaction

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
    """The statistics' housekeeping jobs for one daemon (``mailflow_housekeeping``)."""

    def __init__(self, host: Host) -> None:
        self.store = host.store
        self.retention = host.settings.statistics.retention
        self.clock = host.clock
        self.gauge = host.metrics.gauge(
            "mailflow_cases_open", "Cases not closed, by route, priority and status, as the"
            " store holds them (every daemon on a shared database exports the same figure:"
            " aggregate with max)", ["route", "priority", "status"],
            multiprocess_mode="livemax")
        self._shown: set[tuple[str, str, str]] = set()

    def jobs(self) -> list[Housekeeping]:
        jobs = [Housekeeping("open-cases gauge", GAUGE_EVERY, self.refresh_gauges)]
        if self.retention is not None:
            jobs.append(Housekeeping("retention purge", PURGE_EVERY, self._purge))
        return jobs

    async def refresh_gauges(self) -> None:
        rows = await self.store.run_read(open_cases)
        shown = {(label(route), label(priority), status) for route, priority, status, _ in rows}
        for gone in self._shown - shown:
            self.gauge.remove(*gone)
        for route, priority, status, count in rows:
            self.gauge.labels(route=label(route), priority=label(priority),
                              status=status).set(count)
        self._shown = shown

    async def purge(self) -> dict[str, int]:
        assert self.retention is not None
        cutoff = self.clock.now() - self.retention
        deleted = await self.store.run_write(lambda tx: purge(tx, cutoff))
        if deleted:
            log.info("retention_purged", older_than=cutoff, **deleted)
        return deleted

    async def _purge(self) -> None:
        await self.purge()
