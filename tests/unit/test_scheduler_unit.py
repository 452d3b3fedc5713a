"""The scheduler against a real store (SQLite, and PostgreSQL): what commits with a timer,
and retries (the daemon end to end is tests/integration/test_scheduler.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from clirunner import run_cli
from mailflow.clock import (
    SYSTEM_CLOCK,
    FakeClock,
    FileClock,
    TestClockRefused,
    daemon_clock,
    write_clock_file,
)
from mailflow.config import SchedulerSettings
from mailflow.context import TimerContext, TimerHandler
from mailflow.metrics import Metrics
from mailflow.plugins import builtin_schemas
from mailflow.scheduler import Scheduler, backoff
from mailflow.store import Store, Transaction, open_store
from mailflow.store.migrations import CORE
from mailflow.store.schema import Schema
from mailflow.values import OutgoingMail, Timer
from stores import BACKENDS, store_url

T0 = 1_800_000_000.0
SETTINGS = SchedulerSettings(poll_interval=0.05, backoff_initial=10, backoff_max=40,
                             max_attempts=3)


def ping_mail(ctx: TimerContext) -> OutgoingMail:
    return OutgoingMail("ping", ("next@example.com",),
                        f"Subject: ping {ctx.timer.key}\r\n\r\nhi\r\n".encode())


def note(tx: Transaction, key: str) -> None:
    tx.execute("INSERT INTO sequences (name, value) VALUES (:name, 1)", {"name": key})


async def ping(ctx: TimerContext) -> None:
    """Queues a mail, writes a row, schedules a follow-up due at once."""
    ctx.queue_mail(ping_mail(ctx))
    ctx.write(lambda tx: note(tx, f"noted-{ctx.timer.key}"))
    if not ctx.timer.payload.get("last"):
        ctx.schedule_timer(Timer("test.ping", ctx.clock.now(), ctx.timer.key + "-next",
                                 {"last": True}))


class Flaky:
    """Fails ``failures`` times (after asking for mail and a write), then works."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self, ctx: TimerContext) -> None:
        self.calls += 1
        ctx.queue_mail(ping_mail(ctx))
        ctx.write(lambda tx: note(tx, f"flaky-{self.calls}"))
        if self.calls <= self.failures:
            raise RuntimeError(f"failure {self.calls}")


class Rig:
    def __init__(self, store: Store, clock: FakeClock) -> None:
        self.store = store
        self.clock = clock
        self.registry = CollectorRegistry()
        self.handlers: dict[str, TimerHandler] = {"test.ping": ping}
        self.commits = 0
        self.scheduler = Scheduler(store, SETTINGS, Metrics(self.registry),
                                   lambda: self.handlers, clock, on_commit=self._committed)

    def _committed(self) -> None:
        self.commits += 1

    async def schedule(self, kind: str = "test.ping", due: float = T0 + 3600,
                       key: str = "SAV-1") -> None:
        timer = Timer(kind, due, key)
        await self.store.write([lambda tx: tx.schedule_timer(timer, message=None, held=False)])

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return await self.store.run_read(lambda tx: tx.execute(sql))

    async def timers(self) -> list[tuple[Any, ...]]:
        return await self.rows("SELECT kind, key, state, attempts FROM timers ORDER BY id")

    async def mails(self) -> list[tuple[Any, ...]]:
        return await self.rows("SELECT kind, state, message FROM outbox ORDER BY id")

    async def notes(self) -> list[str]:
        return [name for (name,) in await self.rows("SELECT name FROM sequences ORDER BY name")]

    def metric(self, name: str, kind: str | None = None) -> float | None:
        return self.registry.get_sample_value(name, {"kind": kind} if kind else {})


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(request, tmp_path / "mailflow.sqlite3")


@pytest.fixture
async def rig(url: str) -> AsyncIterator[Rig]:
    clock = FakeClock(T0)
    store = open_store(url, clock=clock)
    await store.open(builtin_schemas())
    yield Rig(store, clock)
    await store.close()


async def test_a_timer_fires_only_once_due_and_its_effects_commit_with_done(rig: Rig) -> None:
    await rig.schedule()
    assert await rig.scheduler.run_once() == 0  # an hour early
    assert await rig.timers() == [("test.ping", "SAV-1", "active", 0)]
    rig.clock.advance(3600)
    assert await rig.scheduler.run_once() == 1
    assert await rig.timers() == [("test.ping", "SAV-1", "done", 0),
                                  ("test.ping", "SAV-1-next", "active", 0)]
    assert await rig.mails() == [("ping", "ready", None)]  # not held: no message owes it
    assert await rig.notes() == ["noted-SAV-1"]
    assert rig.commits == 1  # the outbox was woken
    assert rig.metric("mailflow_timers_fired_total", "test.ping") == 1
    # the follow-up is due now: the next round fires it, and the first never again
    assert await rig.scheduler.run_once() == 1
    assert await rig.scheduler.run_once() == 0
    assert [state for _, _, state, _ in await rig.timers()] == ["done", "done"]
    assert len(await rig.mails()) == 2


async def test_a_failing_handler_commits_nothing_and_is_retried_with_backoff(rig: Rig) -> None:
    flaky = Flaky(failures=2)
    rig.handlers["test.flaky"] = flaky
    await rig.schedule("test.flaky", due=T0)
    with capture_logs() as logs:
        assert await rig.scheduler.run_once() == 1
    assert await rig.mails() == [] and await rig.notes() == []
    assert await rig.timers() == [("test.flaky", "SAV-1", "active", 1)]
    assert [e["outcome"] for e in logs if e["event"] == "timer_failed"] == ["retry"]
    assert await rig.scheduler.run_once() == 0  # waiting out its back-off
    rig.clock.advance(backoff(1, SETTINGS) - 1)
    assert await rig.scheduler.run_once() == 0
    rig.clock.advance(1)
    assert await rig.scheduler.run_once() == 1  # second failure: waits twice as long
    rig.clock.advance(backoff(1, SETTINGS) * 2 - 1)
    assert await rig.scheduler.run_once() == 0
    rig.clock.advance(1)
    assert await rig.scheduler.run_once() == 1
    assert flaky.calls == 3
    assert await rig.mails() == [("ping", "ready", None)]  # one mail, from the run that worked
    assert await rig.notes() == ["flaky-3"]
    assert await rig.timers() == [("test.flaky", "SAV-1", "done", 2)]
    assert rig.metric("mailflow_timer_failures_total", "test.flaky") == 2
    assert rig.metric("mailflow_timers_fired_total", "test.flaky") == 1


async def test_a_handler_failing_every_time_is_given_up(rig: Rig) -> None:
    rig.handlers["test.flaky"] = Flaky(failures=99)
    await rig.schedule("test.flaky", due=T0)
    with capture_logs() as logs:
        for _ in range(SETTINGS.max_attempts):
            assert await rig.scheduler.run_once() == 1
            rig.clock.advance(SETTINGS.backoff_max)
        assert await rig.scheduler.run_once() == 0
    assert await rig.timers() == [("test.flaky", "SAV-1", "failed", 3)]
    assert [e["outcome"] for e in logs if e["event"] == "timer_failed"] == [
        "retry", "retry", "failed"]
    assert await rig.mails() == []


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(n, SETTINGS) for n in (1, 2, 3, 4)] == [10, 20, 40, 40]


async def test_a_kind_without_handler_stays_active_and_is_logged_once(rig: Rig) -> None:
    await rig.schedule("test.orphan", due=T0)
    with capture_logs() as logs:
        for _ in range(3):
            assert await rig.scheduler.run_once() == 0
    assert [e["kind"] for e in logs if e["event"] == "timer_kind_unhandled"] == ["test.orphan"]
    assert await rig.timers() == [("test.orphan", "SAV-1", "active", 0)]
    assert rig.metric("mailflow_timers_due") == 1
    assert rig.metric("mailflow_timers_unhandled") == 1
    rig.clock.advance(90)
    await rig.scheduler.observe()
    assert rig.metric("mailflow_scheduler_lag_seconds") == 0  # nothing it could fire waits
    await rig.schedule("test.ping", due=T0 + 30, key="SAV-2")
    await rig.scheduler.observe()
    assert rig.metric("mailflow_scheduler_lag_seconds") == 60  # SAV-2, due 60 s ago
    assert rig.metric("mailflow_timers_due") == 2
    rig.handlers["test.orphan"] = ping  # a reload brings a handler: it fires now
    assert await rig.scheduler.run_once() == 2
    assert [state for _, _, state, _ in await rig.timers()][:2] == ["done", "done"]
    assert rig.metric("mailflow_timers_unhandled") == 0


async def test_a_write_of_the_handler_that_fails_rolls_back_mail_and_done(rig: Rig) -> None:
    async def bad_write(ctx: TimerContext) -> None:
        ctx.queue_mail(ping_mail(ctx))
        ctx.write(lambda tx: tx.execute("INSERT INTO no_such_table VALUES (1)"))

    rig.handlers["test.bad"] = bad_write
    await rig.schedule("test.bad", due=T0)
    assert await rig.scheduler.run_once() == 1
    assert await rig.mails() == []
    assert await rig.timers() == [("test.bad", "SAV-1", "active", 1)]
    assert rig.metric("mailflow_timer_failures_total", "test.bad") == 1


async def test_a_timer_cancelled_while_its_handler_runs_commits_nothing(rig: Rig) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(ctx: TimerContext) -> None:
        ctx.queue_mail(ping_mail(ctx))
        started.set()
        await release.wait()

    rig.handlers["test.slow"] = slow
    await rig.schedule("test.slow", due=T0)
    running = asyncio.ensure_future(rig.scheduler.run_once())
    await asyncio.wait_for(started.wait(), 5)
    await rig.store.write([lambda tx: tx.cancel_timers("test.slow", "SAV-1")])
    release.set()
    with capture_logs() as logs:
        assert await running == 1
    assert [e["event"] for e in logs] == ["timer_not_fired"]
    assert await rig.mails() == []
    assert await rig.timers() == [("test.slow", "SAV-1", "cancelled", 0)]


async def test_a_timer_another_worker_took_over_commits_nothing(rig: Rig) -> None:
    """The lease expired while the handler ran, and another worker claimed the timer."""
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(ctx: TimerContext) -> None:
        ctx.queue_mail(ping_mail(ctx))
        started.set()
        await release.wait()

    rig.handlers["test.slow"] = slow
    await rig.schedule("test.slow", due=T0)
    running = asyncio.ensure_future(rig.scheduler.run_once())
    await asyncio.wait_for(started.wait(), 5)
    # its lease ran out (ended long ago, by either backend's clock: the injected one for
    # SQLite, the database's for PostgreSQL), and another worker claimed it
    await rig.store.write([lambda tx: tx.execute("UPDATE timers SET lease_until = 0")])
    (other,) = await rig.store.claim_timers("other", T0 + 10, 10, 60)
    release.set()
    assert await running == 1
    assert await rig.mails() == []
    assert other.timer.key == "SAV-1"


async def test_claims_only_kinds_it_handles(rig: Rig) -> None:
    await rig.schedule("test.orphan", due=T0, key="A")
    await rig.schedule("test.ping", due=T0, key="B")
    assert [r.timer.key for r in await rig.store.claim_timers("w", T0, 10, 60,
                                                               kinds=["test.ping"])] == ["B"]
    assert await rig.store.claim_timers("w", T0, 10, 60, kinds=[]) == []


async def test_a_timer_of_a_store_from_before_the_scheduler_fires(url: str) -> None:
    """Core version 1 had no retry columns: the additive migration keeps its timers."""
    clock = FakeClock(T0)
    old = open_store(url, clock=clock)
    await old.open([Schema("core", CORE.migrations[:1])])
    await old.write([lambda tx: tx.execute(
        "INSERT INTO timers (message, kind, key, due, payload, state)"
        " VALUES (NULL, 'test.ping', 'SAV-OLD', :due, '{}', 'active')", {"due": T0 - 60})])
    await old.close()
    store = open_store(url, clock=clock)
    await store.open(builtin_schemas())
    try:
        rig = Rig(store, clock)
        assert await rig.scheduler.run_once() == 1
        assert (await rig.timers())[0] == ("test.ping", "SAV-OLD", "done", 0)
        assert await rig.mails() == [("ping", "ready", None)]
    finally:
        await store.close()


# -- the test clock ------------------------------------------------------------------


def test_file_clock_follows_its_file_and_keeps_the_last_good_time(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    write_clock_file(path, T0)
    clock = FileClock(path)
    assert clock.now() == T0
    for step in range(1, 4):  # quick moves of the same length are all seen
        write_clock_file(path, T0 + step)
        assert clock.now() == T0 + step
    path.write_text("not a time", encoding="utf-8")
    assert clock.now() == T0 + 3
    path.unlink()
    assert clock.now() == T0 + 3
    clock.set(T0 + 86_400)
    assert clock.now() == T0 + 86_400
    assert json.loads(path.read_text(encoding="utf-8")) == T0 + 86_400


def test_the_test_clock_needs_the_explicit_flag(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    write_clock_file(path, T0)
    assert daemon_clock(None, allow_test_clock=False) is SYSTEM_CLOCK
    with pytest.raises(TestClockRefused, match="--allow-test-clock"):
        daemon_clock(str(path), allow_test_clock=False)
    with capture_logs() as logs:
        clock = daemon_clock(str(path), allow_test_clock=True)
    assert clock.now() == T0
    assert [(e["event"], e["log_level"], e["path"]) for e in logs] == [
        ("test_clock_in_use", "warning", str(path))]
    with pytest.raises(TestClockRefused, match="cannot read"):
        daemon_clock(str(tmp_path / "missing"), allow_test_clock=True)


def test_timers_commands_never_create_a_store(tmp_path: Path) -> None:
    result = run_cli("timers", "list", "--state-dir", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert "no store" in result.stderr
    assert not (tmp_path / "nowhere").exists()
