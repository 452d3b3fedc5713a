"""The leased-queue loop: claim due rows under a lease, work them, sleep until due or woken.

The outbox drains through it, and the scheduler will fire timers through it:
the store's claim leases each row to one worker (an expired lease gives the
row back, so a crashed worker's rows are picked up); the loop only decides
when to look again. A failing claim or piece of work is logged and the loop
goes on: one bad row must never stop a queue until a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import structlog

from mailflow.store import StoreUnavailable

log = structlog.get_logger("mailflow.queue")

RowT = TypeVar("RowT")


class LeasedQueue(Generic[RowT]):
    """Runs ``claim`` then ``work`` on each claimed row, concurrently, until cancelled."""

    def __init__(self, name: str, claim: Callable[[], Awaitable[Sequence[RowT]]],
                 work: Callable[[RowT], Awaitable[None]], poll_interval: float) -> None:
        self.name = name
        self.claim = claim
        self.work = work
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """New rows are due now: look at once rather than at the next poll."""
        self._wake.set()

    async def run_once(self) -> int:
        """Claim and work what is due now; returns how many rows were claimed."""
        rows = await self.claim()
        if rows:
            await asyncio.gather(*(self.work(row) for row in rows))
        return len(rows)

    async def run(self, before: Callable[[], Awaitable[None]] | None = None) -> None:
        """Loop forever; ``before`` runs ahead of each claim (house-keeping, metrics)."""
        while True:
            try:
                if before is not None:
                    await before()
                handled = await self.run_once()
            except StoreUnavailable as exc:
                log.warning(f"{self.name}_store_unavailable", error=str(exc))
                handled = 0
            except Exception:
                log.exception(f"{self.name}_error")
                handled = 0
            if handled:
                continue  # more may be due: no sleep while there is work
            self._wake.clear()
            # not asyncio.wait_for: on Python 3.11 it swallows a cancel that lands as the
            # event is set (gh-86296), and the daemon then never stops on SIGTERM
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
