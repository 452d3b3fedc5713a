"""What follows a relay the next hop accepted: the message marked delivered, what it owes
released (its acknowledgement, its timers), what the next hop refused of it queued.

The next hop has the message: a 4xx now would make the client send it again, and the
next hop would get it twice. So these writes are tried hard, and when the store stays
down the client still hears 250 and the release is retried in the background, well
before the sweeper would abandon the message. Releases of messages relayed at about the
same time go in one transaction (each message's operations all together, as alone).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import structlog

from mailflow.outbox import STALE_PENDING_SECONDS
from mailflow.store import Store, StoreUnavailable, Transaction
from mailflow.write_batches import WriteBatches

log = structlog.get_logger("mailflow.message")

WriteOps = list[Callable[[Transaction], object]]


class AfterRelay:
    """Writes what follows a relay, for one pipeline; ``on_release`` is told each time
    what a message owed was released (the outbox looks at once)."""

    def __init__(self, store: Store, on_release: Callable[[], None]) -> None:
        self.store = store
        self.on_release = on_release
        self._releases = WriteBatches[WriteOps](self._write_releases)
        self._later: set[asyncio.Task[None]] = set()

    async def _write_releases(self, batch: Sequence[WriteOps]) -> None:
        await self.store.write([op for ops in batch for op in ops])

    async def write(self, queue_id: str, ops: WriteOps, *, batched: bool = False) -> None:
        """Record ``ops``, trying hard (``batched``: core operations only, written with
        the other releases that arrive while one is being written)."""
        write = self._releases.add if batched else self.store.write
        for attempt in range(3):  # the next hop has it: try hard not to lose what it owes
            try:
                await write(ops)
                break
            except StoreUnavailable as exc:
                if attempt == 2:
                    # It is delivered and all it owes is committed (held): say 250,
                    # release when writes work.
                    log.error("release_deferred", queue_id=queue_id, error=str(exc))
                    self._defer(queue_id, ops)
                    return
                await asyncio.sleep(0.2 * (attempt + 1))
        self.on_release()

    def _defer(self, queue_id: str, ops: WriteOps) -> None:
        task = asyncio.get_running_loop().create_task(self._release_later(queue_id, ops))
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    async def _release_later(self, queue_id: str, ops: WriteOps) -> None:
        """Retry a release until the store takes it, well before the sweeper would
        abandon the message as never answered (``STALE_PENDING_SECONDS``)."""
        give_up = time.monotonic() + STALE_PENDING_SECONDS / 2
        delay = 1.0
        while True:
            try:
                await asyncio.sleep(delay)
                await self.store.write(ops)
            except asyncio.CancelledError:  # stopping: recover() will abandon it at start
                log.error("release_lost", queue_id=queue_id, error="daemon stopped")
                raise
            except StoreUnavailable as exc:
                if time.monotonic() > give_up:
                    log.error("release_lost", queue_id=queue_id, error=str(exc))
                    return
                delay = min(delay * 2, 30.0)
                continue
            log.info("release_recorded", queue_id=queue_id)
            self.on_release()
            return
