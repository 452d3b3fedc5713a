"""Writes of one kind that arrive while one is in flight, made as one.

The store's writer already folds concurrent transactions into one commit; each one
still costs a trip to the writer's thread (its queue, its savepoint, the answer handed
back to the event loop), which under load costs more than a one-row UPDATE. The
acknowledgements one claim sends reach the next hop within milliseconds of one another,
and recording each as sent took a write of its own: 0.7 writes a message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")


class WriteBatches(Generic[K]):
    """Items written by ``write``, those that arrive while one write is in flight
    together in the next: no wait when idle, fewer writes under load."""

    def __init__(self, write: Callable[[Sequence[K]], Awaitable[None]]) -> None:
        self._write = write
        self._waiting: list[K] = []
        self._next: asyncio.Future[None] | None = None
        self._drainer: asyncio.Task[None] | None = None

    async def add(self, item: K) -> None:
        """Write ``item`` (with the others of its batch); returns once it is written, and
        raises what its batch's write raised. A caller cancelled leaves the batch be."""
        loop = asyncio.get_running_loop()
        if self._next is None:
            self._next = loop.create_future()
            self._next.add_done_callback(_retrieved)
        written = self._next
        self._waiting.append(item)
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        await asyncio.shield(written)

    async def _drain(self) -> None:
        written: asyncio.Future[None] | None = None
        try:
            while self._waiting:
                items, self._waiting = self._waiting, []
                written, self._next = self._next, None
                assert written is not None
                try:
                    await self._write(items)
                except Exception as exc:
                    written.set_exception(exc)
                else:
                    written.set_result(None)
        finally:  # stopping (cancelled): nobody is left to write what waits
            for future in (written, self._next):
                if future is not None and not future.done():
                    future.cancel()
            self._waiting, self._next, self._drainer = [], None, None


def _retrieved(future: asyncio.Future[None]) -> None:
    """Every waiter may have gone (cancelled): the error is theirs, not asyncio's to log."""
    if not future.cancelled():
        future.exception()
