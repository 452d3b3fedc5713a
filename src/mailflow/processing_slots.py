"""At most so many messages in the works at once in a process; the others wait after DATA.

Beyond a few dozen messages at once, a process gets no more done a second: they queue
for the same CPU and the store's threads, each holding its parsed message and its
context. Under a burst (hundreds of sessions from Postfix at once) memory would grow
with the sessions. A message waits for a slot holding only its bytes; its wait is taken
from the chain's time (``chain_timeout``), so the SMTP deadlines hold as configured, and
one that waits all of it gets ``451 4.3.2`` (Postfix sends it again later).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar

#: when the chain of the message in hand must have ended (the event loop's time), its
#: wait for a slot counted in; None outside a slot (``try``, replay: the chain's own)
CHAIN_DEADLINE: ContextVar[float | None] = ContextVar("chain_deadline", default=None)
TOO_BUSY = "451 4.3.2 Too busy, try again later"


class ProcessingSlots:
    """``slots`` messages at once; each waits at most ``budget`` seconds for its turn."""

    def __init__(self, slots: int, budget: float) -> None:
        self._free = asyncio.Semaphore(slots)
        self.budget = budget
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[bool]:
        """Yields True once the message may go on, False if its time ran out waiting."""
        deadline = asyncio.get_running_loop().time() + self.budget
        if self._free.locked():  # rarely: only then pay for a timer
            self.waiting += 1
            try:
                async with asyncio.timeout_at(deadline):
                    await self._free.acquire()
            except TimeoutError:
                yield False
                return
            finally:
                self.waiting -= 1
        else:
            await self._free.acquire()
        token = CHAIN_DEADLINE.set(deadline)
        try:
            yield True
        finally:
            CHAIN_DEADLINE.reset(token)
            self._free.release()
