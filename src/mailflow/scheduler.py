"""The scheduler: fires due timers through their kind's handler, exactly once.

The outbox's sibling on the same leased-queue loop: due timers are leased
to this process, each is handed to the one handler of its kind with a
:class:`~mailflow.context.TimerContext`, and everything the handler asked
for (mail, timers, writes) commits in ONE transaction with the timer's
``done`` mark. A crash before that commit leaves the timer active (fired
again after the restart, nothing of the first run kept); after it, the
timer is done and its mail in the outbox: never twice, never lost.

A handler that raises commits nothing; the timer is retried with doubling
back-off and given up (state ``failed``) after ``max_attempts``. A timer
whose kind has no handler (its plugin removed) stays active, untouched,
until one is registered again.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from mailflow.clock import SYSTEM_CLOCK, Clock
from mailflow.config import SchedulerSettings
from mailflow.context import TimerContext, TimerHandler
from mailflow.events import NO_LISTENERS, EventBus
from mailflow.host import Host, Housekeeping
from mailflow.leased_queue import LeasedQueue
from mailflow.metrics import Metrics
from mailflow.store import Store, StoreUnavailable, TimerLost, TimerRow

log = structlog.get_logger("mailflow.scheduler")

#: a claimed timer is this process's for this long; a crashed owner's comes back after it
LEASE_SECONDS = 300.0
#: a handler still running after this is cancelled (and retried), well inside its lease
HANDLER_TIMEOUT = LEASE_SECONDS / 2


def backoff(attempts: int, settings: SchedulerSettings) -> float:
    """Seconds to wait after ``attempts`` failed runs: doubling, capped."""
    return float(min(settings.backoff_max, settings.backoff_initial * 2 ** max(0, attempts - 1)))


class Scheduler:
    """Background task firing due timers; ``handlers`` is asked each time (a reload
    replaces them), ``on_commit`` runs after effects commit (wakes the outbox)."""

    def __init__(self, store: Store, settings: SchedulerSettings, metrics: Metrics,
                 handlers: Callable[[], Mapping[str, TimerHandler]],
                 clock: Clock = SYSTEM_CLOCK,
                 on_commit: Callable[[], None] | None = None,
                 housekeeping: Callable[[], Sequence[Housekeeping]] = tuple,
                 events: Callable[[], EventBus] = lambda: NO_LISTENERS,
                 handler_view: Callable[[str], tuple[Host | None, Any]] = lambda kind: (
                     None, None)) -> None:
        """``handler_view(kind)``: the host and the rules section of the plugin whose handler
        fires timers of ``kind`` (given to it on its context)."""
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.handlers = handlers
        self.events = events
        self.handler_view = handler_view
        self.clock = clock
        self.on_commit = on_commit
        self.owner = f"{store.node or socket.gethostname()}:{os.getpid()}:scheduler"
        self.queue = LeasedQueue("scheduler", self._claim, self._fire, settings.poll_interval)
        self._unhandled: set[str] = set()  # kinds already logged as having no handler
        self.housekeeping = housekeeping
        self._kept: dict[str, float] = {}  # job name -> time.monotonic() of its last run
        #: time.monotonic() of the loop's last pass (/healthz: a stalled scheduler)
        self.last_pass = time.monotonic()

    def wake(self) -> None:
        """A timer may be due now: look at once rather than at the next poll."""
        self.queue.wake()

    async def run(self) -> None:
        await self.queue.run(before=self.observe)

    async def run_once(self) -> int:
        """Fire what is due now; returns how many timers were claimed."""
        await self.observe()
        return await self.queue.run_once()

    async def observe(self) -> None:
        """Gauges, and one warning per kind due with no handler to fire it."""
        self.last_pass = time.monotonic()
        self.metrics.scheduler_heartbeat.set(time.time())
        await self.keep_house()
        now = self.clock.now()
        due = await self.store.due_timers(now)
        handled = self.handlers()
        unhandled = {kind: count for kind, (count, _) in due.items() if kind not in handled}
        waiting = [earliest for kind, (_, earliest) in due.items() if kind in handled]
        self.metrics.timers_due.set(sum(count for count, _ in due.values()))
        self.metrics.timers_unhandled.set(sum(unhandled.values()))
        self.metrics.scheduler_lag.set(max(0.0, now - min(waiting)) if waiting else 0.0)
        for kind, count in unhandled.items():
            if kind not in self._unhandled:
                log.warning("timer_kind_unhandled", kind=kind, due=count,
                            detail="no plugin handles this kind: its timers wait, untouched")
        self._unhandled = set(unhandled)  # handled again, or gone: log it again if it returns

    async def keep_house(self) -> None:
        """The plugins' housekeeping jobs whose time has come (each at start, then every
        ``every`` seconds); one that fails is logged and tried again next time."""
        for job in self.housekeeping():
            now = time.monotonic()
            if now - self._kept.get(job.name, float("-inf")) < job.every:
                continue
            self._kept[job.name] = now
            try:
                await job.run()
            except StoreUnavailable as exc:  # the store's own health says it
                log.warning("housekeeping_failed", job=job.name, error=str(exc))
            except Exception:
                log.exception("housekeeping_failed", job=job.name)

    async def _claim(self) -> list[TimerRow]:
        return await self.store.claim_timers(self.owner, self.clock.now(),
                                             self.settings.batch_size, LEASE_SECONDS,
                                             kinds=sorted(self.handlers()))

    async def _fire(self, row: TimerRow) -> None:
        kind = row.timer.kind
        handler = self.handlers().get(kind)
        if handler is None:  # a reload removed it between claim and fire
            await self.store.timer_release(row.id)
            return
        host, options = self.handler_view(kind)
        ctx = TimerContext(timer=row.timer, store=self.store, clock=self.clock,
                           events=self.events(), host=host, options=options)
        try:
            async with asyncio.timeout(HANDLER_TIMEOUT):
                await handler(ctx)
        except Exception as exc:
            await self._failed(row, exc)
            return
        # done first: a handler may cancel the timers of its own kind and key (a closed
        # case's), this one aside
        ops = [lambda tx: tx.finish_timer(row.id, self.owner),
               *ctx.commit_ops(message=None, held=False)]
        try:
            await self.store.write(ops)
        except TimerLost:
            log.warning("timer_not_fired", id=row.id, kind=kind, key=row.timer.key,
                        detail="cancelled or taken over while its handler ran: nothing kept")
            return
        except Exception as exc:  # the store down, or one of the handler's writes failed
            await self._failed(row, exc)
            return
        self.metrics.timers_fired.labels(kind=kind).inc()
        log.info("timer_fired", id=row.id, kind=kind, key=row.timer.key,
                 mails=len(ctx.outgoing), timers=len(ctx.timers),
                 cancelled=len(ctx.cancelled_timers), attempts=row.attempts + 1)
        if self.on_commit is not None and ctx.outgoing:
            self.on_commit()
        if any(t.due <= self.clock.now() for t in ctx.timers):
            self.wake()

    async def _failed(self, row: TimerRow, exc: BaseException) -> None:
        """Nothing of this run was committed: count it, and retry later or give up."""
        kind = row.timer.kind
        attempts = row.attempts + 1
        give_up = attempts >= self.settings.max_attempts
        delay = backoff(attempts, self.settings)
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self.metrics.timer_failures.labels(kind=kind).inc()
        log.warning("timer_failed", id=row.id, kind=kind, key=row.timer.key, error=error,
                    attempts=attempts, outcome="failed" if give_up else "retry",
                    retry_in=None if give_up else delay,
                    exc_info=not isinstance(exc, StoreUnavailable | TimeoutError))
        await self.store.timer_retry(row.id, self.clock.now() + delay, error, give_up)
