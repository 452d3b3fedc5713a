"""The outbox worker: sends the mail mailflow writes itself, exactly once.

Rows are committed with the message that owes them and released only when
that message was accepted downstream. The worker leases due rows (so several
processes or daemons sharing a store never send one twice), hands them to the
next hop, and marks them sent, or retries with exponential back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time

import structlog

from mailflow.config import OutboxSettings
from mailflow.metrics import Metrics
from mailflow.relay import NextHopClient
from mailflow.store import OutboxRow, Store, StoreUnavailable

log = structlog.get_logger("mailflow.outbox")

LEASE_SECONDS = 300.0
#: A message whose relay outcome is unknown this long is abandoned: its client got no 250.
STALE_PENDING_SECONDS = 900.0


def backoff(attempts: int, settings: OutboxSettings) -> float:
    """Seconds to wait after ``attempts`` failed tries: doubling, capped."""
    return float(min(settings.backoff_max, settings.backoff_initial * 2 ** max(0, attempts - 1)))


class OutboxWorker:
    """Background task draining the outbox through the next hop."""

    def __init__(self, store: Store, client: NextHopClient, settings: OutboxSettings,
                 metrics: Metrics) -> None:
        self.store = store
        self.client = client
        self.settings = settings
        self.metrics = metrics
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._wake = asyncio.Event()
        self._last_sweep = 0.0

    def wake(self) -> None:
        """New rows were released: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                sent = await self.run_once()
            except StoreUnavailable as exc:
                log.warning("outbox_store_unavailable", error=str(exc))
                sent = 0
            except Exception:  # one bad row must not stop the outbox until a restart
                log.exception("outbox_error")
                sent = 0
            if sent:
                continue
            self._wake.clear()
            # not asyncio.wait_for: on Python 3.11 it swallows a cancel that lands as the
            # event is set (gh-86296), and the daemon then never stops on SIGTERM
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll_interval):
                    await self._wake.wait()

    async def run_once(self) -> int:
        """Send what is due now; returns how many rows were handled."""
        now = time.time()
        if now - self._last_sweep > 60:
            self._last_sweep = now
            aborted = await self.store.sweep_held(now - STALE_PENDING_SECONDS)
            if aborted:
                log.warning("outbox_abandoned_pending", messages=aborted)
        rows = await self.store.claim_outbox(self.owner, self.settings.batch_size, LEASE_SECONDS)
        if rows:
            await asyncio.gather(*(self._send(row) for row in rows))
        self.metrics.outbox_pending.set(await self.store.pending_outbox())
        return len(rows)

    async def _record_sent(self, row: OutboxRow) -> None:
        """The next hop has it: keep trying to record that while the store is down (our
        lease keeps other senders off), or the row goes again when the lease ends."""
        give_up = time.monotonic() + LEASE_SECONDS / 2
        delay = 0.5
        while True:
            try:
                await self.store.outbox_sent(row.id)
                return
            except StoreUnavailable as exc:
                if time.monotonic() > give_up:
                    raise
                log.warning("outbox_sent_not_recorded", id=row.id, error=str(exc),
                            retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _send(self, row: OutboxRow) -> None:
        result = await self.client.send(row.mail_from, list(row.rcpt_to), row.data,
                                        smtputf8=not all(r.isascii() for r in row.rcpt_to),
                                        body8bit=not row.data.isascii())
        if result.ok:
            await self._record_sent(row)
            self.metrics.outbox_sent.labels(kind=row.kind).inc()
            log.info("outbox_sent", id=row.id, kind=row.kind, rcpt_to=list(row.rcpt_to),
                     message=row.message)
            return
        attempts = row.attempts + 1
        give_up = result.permanent or attempts >= self.settings.max_attempts
        delay = backoff(attempts, self.settings)
        await self.store.outbox_retry(row.id, time.time() + delay, f"{result.code} {result.text}",
                                      give_up)
        outcome = "failed" if give_up else "retry"
        self.metrics.outbox_failures.labels(kind=row.kind, outcome=outcome).inc()
        log.warning("outbox_not_sent", id=row.id, kind=row.kind, code=result.code,
                    reply=result.text, attempts=attempts, outcome=outcome,
                    retry_in=None if give_up else delay)
