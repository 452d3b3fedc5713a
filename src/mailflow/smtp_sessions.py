"""The open SMTP sessions of one process: how many (in all and per client), and the last
word each hears when the daemon stops.

RFC 5321 3.8: a server shut down "SHOULD attempt to send a line containing a 421
response code to the SMTP client before exiting". A session idle, between commands or
in the middle of DATA hears ``421 4.3.2`` at once and its half-sent message is dropped
(the client sends it again later); a message whose DATA has ended is finished first,
its client hears the real reply, then 421 to whatever it says next (QUIT still gets 221).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from typing import Protocol

#: RFC 3463 4.3.2 "System not accepting network messages"
SHUTTING_DOWN = "421 4.3.2 Service shutting down"
#: seconds a client that just heard its reply has to QUIT or go, once the daemon stops
LAST_WORD = 1.0


class Closable(Protocol):
    def shut_down(self, now: bool = False) -> None: ...


class SessionLimits:
    """Counts open sessions, in all and per client address, and tells them when we stop."""

    def __init__(self, total: int, per_client: int,
                 on_change: Callable[[int], None] | None = None,
                 unlimited: Callable[[str], bool] = lambda _client: False) -> None:
        self.total = total
        self.per_client = per_client
        self.on_change = on_change
        #: clients the per-client cap does not apply to: the trusted networks, where
        #: Postfix opens its many sessions from (its smtpd_client_event_limit_exceptions)
        self.unlimited = unlimited
        self.open = 0
        self.by_client: Counter[str] = Counter()
        self.sessions: set[Closable] = set()
        self.stopping = False
        self._none_open = asyncio.Event()
        self._none_open.set()

    def admit(self, client: str) -> str | None:
        if self.stopping:
            return SHUTTING_DOWN
        if self.open >= self.total:
            return "421 4.7.0 Too many connections, try again later"
        if self.by_client[client] >= self.per_client and not self.unlimited(client):
            return "421 4.7.0 Too many connections from your address, try again later"
        self.open += 1
        self.by_client[client] += 1
        self._none_open.clear()
        if self.on_change:
            self.on_change(self.open)
        return None

    def release(self, client: str) -> None:
        self.open -= 1
        self.by_client[client] -= 1
        if self.on_change:
            self.on_change(self.open)
        if self.by_client[client] <= 0:
            del self.by_client[client]
        if self.open == 0:
            self._none_open.set()

    def shut_down(self, now: bool = False) -> None:
        """Tell every session we stop (see the module's docstring); ``now``: even those
        whose message is still being processed (the grace is over)."""
        self.stopping = True
        for session in list(self.sessions):
            session.shut_down(now)

    async def closed(self, within: float = LAST_WORD) -> bool:
        """Wait until every session is gone, ``within`` seconds at most."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._none_open.wait()
        return self.open == 0
