"""The open-cases gauge, read from the store: the statistics' housekeeping.

Read from the store, so it is right after a restart and the same whichever
daemon of a shared database reads it: every daemon exports the open cases it
reads (aggregate with ``max``). The purge of old records is the framework's
(:mod:`mailflow.retention`).
"""

from __future__ import annotations

from mailflow.host import Host, Housekeeping
from mailflow.stats.metrics import label
from mailflow.stats.store import open_cases

#: seconds between two looks at the open cases (a scrape every 15 s sees them change)
GAUGE_EVERY = 30.0


class Upkeep:
    """The statistics' housekeeping jobs for one daemon (``mailflow_housekeeping``)."""

    def __init__(self, host: Host) -> None:
        self.store = host.store
        self.gauge = host.metrics.gauge(
            "mailflow_cases_open", "Cases not closed, by route, priority and status, as the"
            " store holds them (every daemon on a shared database exports the same figure:"
            " aggregate with max)", ["route", "priority", "status"],
            multiprocess_mode="livemax")
        self._shown: set[tuple[str, str, str]] = set()

    def jobs(self) -> list[Housekeeping]:
        return [Housekeeping("open-cases gauge", GAUGE_EVERY, self.refresh_gauges)]

    async def refresh_gauges(self) -> None:
        rows = await self.store.run_read(open_cases)
        shown = {(label(route), label(priority), status) for route, priority, status, _ in rows}
        for gone in self._shown - shown:  # none left: 0, as the rules' known series start
            self.gauge.labels(*gone).set(0)
        for route, priority, status, count in rows:
            self.gauge.labels(route=label(route), priority=label(priority),
                              status=status).set(count)
        self._shown = shown
