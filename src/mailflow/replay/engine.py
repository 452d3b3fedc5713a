"""The replay: an archive through the daemon's own path, on a scratch store and a clock
that follows the archive, with a next hop that keeps nothing.

Each message is received as the SMTP listener receives it (:class:`Pipeline.handle`:
the reception, the chain, commit, relay, release), at the time it arrived; the
timers due before it fire first, in order, each at its own time, through the
scheduler and its handlers (on the rules' calendars: a reminder due at night waits
for the morning, as it would have). The mail the daemon writes (acknowledgements,
forwards, reminders, notices) stays in the scratch store's outbox: nothing is sent,
and the real store is never opened.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry

from mailflow.clock import FakeClock
from mailflow.config import Settings
from mailflow.host import DaemonHost
from mailflow.metrics import MetricFactory, Metrics
from mailflow.pipeline import Pipeline
from mailflow.plugins import call_one
from mailflow.reception import Door
from mailflow.relay import CapturingClient
from mailflow.replay.archive import Archived
from mailflow.replay.rows import Row, row_of
from mailflow.runtime import Runtime, load_runtime
from mailflow.scheduler import Scheduler
from mailflow.store import Store, open_store


@dataclass
class Tally:
    """What the replayed period would have had, besides each message's row."""

    timers: dict[str, int] = field(default_factory=dict)  # fired, by kind
    mail: dict[str, int] = field(default_factory=dict)  # written by mailflow, by kind


class Replay:
    """One replay of an archive through one rules folder (``settings.rules``);
    ``async with``. ``workdir`` holds its scratch store (kept for ``--html``)."""

    def __init__(self, settings: Settings, workdir: Path, start: float) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.settings = settings.model_copy(update={
            "store": f"sqlite:///{workdir / 'replay.sqlite3'}?durable=no", "test_clock": None})
        self.clock = FakeClock(start)
        registry = CollectorRegistry()
        self.factory = MetricFactory(registry)
        self.metrics = Metrics(registry)
        self.runtime: Runtime = load_runtime(self.settings, self.factory, self.clock)
        self.store: Store = open_store(self.settings.store_url, clock=self.clock)
        self.hop = CapturingClient()
        self.host = DaemonHost(settings=self.settings, store=self.store, metrics=self.factory,
                               rules=lambda: self.runtime.rules, clock=self.clock)
        self.pipeline = Pipeline(self.settings, self.store, self.hop, self.metrics,
                                 lambda: self.runtime.chain, lambda: None, self.clock)
        self.scheduler = Scheduler(self.store, self.settings.scheduler, self.metrics,
                                   lambda: self.runtime.timer_handlers, self.clock,
                                   events=lambda: self.runtime.chain.events,
                                   handler_view=self._handler_view)
        self.tally = Tally()
        self._exit = contextlib.AsyncExitStack()

    def _handler_view(self, kind: str) -> tuple[DaemonHost, Any]:
        owner = self.runtime.timer_owners.get(kind, "")
        return self.host.for_plugin(owner), self.runtime.plugin_options.get(owner)

    async def __aenter__(self) -> Replay:
        await self.store.open(self.runtime.schemas)
        self._exit.push_async_callback(self.store.close)
        for name in self.runtime.plugins:  # a plugin's standing timers, as at a start
            await call_one(self.runtime.pm, "mailflow_startup", name,
                           host=self.host.for_plugin(name),
                           options=self.runtime.plugin_options.get(name))
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._exit.aclose()

    async def feed(self, item: Archived, index: int) -> Row:
        """The timers due before ``item``, then ``item`` itself, at its time."""
        await self.fire_until(item.at)
        self.clock.set(max(self.clock.now(), item.at))
        outcome, ctx = await self.pipeline.handle(item.raw, item.envelope, Door(item.sent))
        for mail in (ctx.outgoing if ctx is not None and outcome.reply[:1] == "2" else ()):
            self.tally.mail[mail.kind] = self.tally.mail.get(mail.kind, 0) + 1
        return row_of(index, item, outcome.reply, ctx)

    async def fire_until(self, when: float) -> None:
        """Fire every timer due by ``when``, in order, each at its own due time."""
        kinds = sorted(self.runtime.timer_handlers)
        while kinds:
            due = await self.store.run_read(lambda tx: _next_due(tx, kinds))
            if due is None or due > when:
                return
            self.clock.set(max(self.clock.now(), due))
            fired = await self.scheduler.queue.claim()
            if not fired:
                return
            for row in fired:
                await self.scheduler.queue.work(row)
                self.tally.timers[row.timer.kind] = self.tally.timers.get(row.timer.kind,
                                                                          0) + 1

    async def deadlines(self) -> dict[str, str]:
        """case -> the state of its first-response deadline, as the replay left it."""
        rows = await self.store.run_read(lambda tx: tx.execute(
            "SELECT case_number, met_at, due, breached_at, cancelled_at FROM sla_deadlines"
            " WHERE kind = 'first_response'"))
        states = {}
        for case, met, due, breached, cancelled in rows:
            states[str(case)] = ("met" if met is not None and met <= due else "breached"
                                 if breached is not None or met is not None else
                                 "cancelled" if cancelled is not None else "pending")
        return states


def _next_due(tx: Any, kinds: list[str]) -> float | None:
    names = ", ".join(f":k{i}" for i in range(len(kinds)))
    ((due,),) = tx.execute("SELECT MIN(COALESCE(next_attempt, due)) FROM timers"
                           f" WHERE state = 'active' AND kind IN ({names})",
                           {f"k{i}": kind for i, kind in enumerate(kinds)})
    return float(due) if due is not None else None
