"""The outbox worker: sends the mail mailflow writes itself, exactly once.

Rows are committed with the message that owes them and released only when
that message was accepted downstream. The worker leases due rows (so several
processes or daemons sharing a store never send one twice), hands them to the
next hop, and marks them sent, or retries with exponential back-off.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from datetime import UTC, datetime

import structlog

from mailflow.clock import SYSTEM_CLOCK, Clock
from mailflow.config import OutboxSettings
from mailflow.leased_queue import LeasedQueue
from mailflow.message.compose import utf8_headers
from mailflow.metrics import Metrics
from mailflow.relay import NextHopClient
from mailflow.store import OutboxRow, Store, StoreUnavailable, Transaction
from mailflow.store.operations import outbox_expire
from mailflow.write_batches import WriteBatches

log = structlog.get_logger("mailflow.outbox")

LEASE_SECONDS = 300.0
#: A message whose relay outcome is unknown this long is abandoned: its client got no 250.
STALE_PENDING_SECONDS = 900.0


def backoff(attempts: int, settings: OutboxSettings) -> float:
    """Seconds to wait after ``attempts`` failed tries: doubling, capped."""
    return float(min(settings.backoff_max, settings.backoff_initial * 2 ** max(0, attempts - 1)))


def needs_smtputf8(row: OutboxRow) -> bool:
    """A non-ASCII recipient, or mail we wrote with UTF-8 headers (an ack answering a
    non-ASCII Message-ID): RFC 6531/6532. A customer's message retried (``relay``) keeps
    its bytes, whose 8-bit headers are as often legacy charsets as UTF-8."""
    return not all(r.isascii() for r in row.rcpt_to) or (
        row.kind != "relay" and utf8_headers(row.data))


def backlog(tx: Transaction) -> tuple[int, float | None]:
    """(rows waiting to be sent, when the oldest of them was written)."""
    (waiting, oldest), = tx.execute("SELECT count(*), MIN(created_at) FROM outbox"
                                    " WHERE state = 'ready'")
    return int(waiting), None if oldest is None else float(oldest)


class OutboxWorker:
    """Background task draining the outbox through the next hop."""

    def __init__(self, store: Store, client: NextHopClient, settings: OutboxSettings,
                 metrics: Metrics, clock: Clock = SYSTEM_CLOCK) -> None:
        self.store = store
        self.client = client
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        # NODE:PID: a restarting node frees its own leases only (see Store.recover)
        self.owner = f"{store.node or socket.gethostname()}:{os.getpid()}"
        self.queue = LeasedQueue("outbox", self._claim, self._send, settings.poll_interval)
        self._sent = WriteBatches[int](lambda ids: store.outbox_sent(*ids))
        self._last_sweep = -float("inf")

    def wake(self) -> None:
        """New rows were released: look now rather than at the next poll."""
        self.queue.wake()

    async def run(self) -> None:
        await self.queue.run(before=self._housekeeping)

    async def run_once(self) -> int:
        """Send what is due now; returns how many rows were handled."""
        await self._housekeeping()
        return await self.queue.run_once()

    async def _housekeeping(self) -> None:
        """Once a minute, abandon messages whose relay never ended (a crash mid-relay)."""
        now = self.clock.now()
        if now - self._last_sweep > 60:
            self._last_sweep = now
            aborted = await self.store.sweep_held(now - STALE_PENDING_SECONDS)
            if aborted:
                log.warning("outbox_abandoned_pending", messages=aborted)

    async def _claim(self) -> list[OutboxRow]:
        rows = await self.store.claim_outbox(self.owner, self.settings.batch_size, LEASE_SECONDS)
        try:
            waiting, oldest = await self.store.run_read(backlog)
        except StoreUnavailable:  # the rows are leased to us now: send them, gauges later
            return rows
        self.metrics.outbox_pending.set(waiting)
        self.metrics.outbox_oldest_age.set(0.0 if oldest is None
                                           else max(0.0, self.clock.now() - oldest))
        return rows

    async def _expire(self, row: OutboxRow) -> None:
        """Past its maximum age (an acknowledgement whose promise went stale while it
        waited): recorded as expired, with the reason, and not sent."""
        assert row.expires_at is not None
        error = await self.store.run_read(lambda tx: tx.execute(
            "SELECT last_error FROM outbox WHERE id = :id", {"id": row.id}))
        last = error[0][0] if error and error[0][0] else None
        late = datetime.fromtimestamp(row.expires_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        reason = f"not sent by {late}" + (f" (last error: {last})" if last else "")
        await self.store.run_write(lambda tx: outbox_expire(tx, row.id, reason))
        self.metrics.outbox_failures.labels(kind=row.kind, outcome="expired").inc()
        log.warning("outbox_expired", id=row.id, kind=row.kind, rcpt_to=list(row.rcpt_to),
                    message=row.message, reason=reason)

    async def _record_sent(self, row: OutboxRow) -> None:
        """The next hop has it: keep trying to record that while the store is down (our
        lease keeps other senders off), or the row goes again when the lease ends."""
        give_up = time.monotonic() + LEASE_SECONDS / 2
        delay = 0.5
        while True:
            try:
                await self._sent.add(row.id)
                return
            except StoreUnavailable as exc:
                if time.monotonic() > give_up:
                    raise
                log.warning("outbox_sent_not_recorded", id=row.id, error=str(exc),
                            retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _send(self, row: OutboxRow) -> None:
        if row.expires_at is not None and self.clock.now() > row.expires_at:
            await self._expire(row)
            return
        result = await self.client.send(row.mail_from, list(row.rcpt_to), row.data,
                                        smtputf8=needs_smtputf8(row),
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
        await self.store.outbox_retry(row.id, self.clock.now() + delay,
                                      f"{result.code} {result.text}", give_up)
        outcome = "failed" if give_up else "retry"
        self.metrics.outbox_failures.labels(kind=row.kind, outcome=outcome).inc()
        log.warning("outbox_not_sent", id=row.id, kind=row.kind, code=result.code,
                    reply=result.text, attempts=attempts, outcome=outcome,
                    retry_in=None if give_up else delay)
