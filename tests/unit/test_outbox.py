"""The outbox worker against a real store (SQLite, and PostgreSQL) and a scripted next hop,
on a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from mailflow.clock import FakeClock
from mailflow.config import OutboxSettings
from mailflow.metrics import Metrics
from mailflow.outbox import OutboxWorker, backoff
from mailflow.plugins import builtin_schemas
from mailflow.relay import DeliveryResult
from mailflow.store import Store, StoreUnavailable, open_store
from mailflow.values import OutgoingMail
from stores import BACKENDS, outlive_lease, store_url


class ScriptedHop:
    """A next hop that answers each send with the next scripted reply."""

    def __init__(self, *replies: DeliveryResult) -> None:
        self.replies = list(replies)
        self.sent: list[tuple[str, list[str], bytes]] = []

    async def send(self, mail_from: str, rcpt_to: list[str], data: bytes, *,
                   smtputf8: bool = False, body8bit: bool = False) -> DeliveryResult:
        self.sent.append((mail_from, rcpt_to, data))
        return self.replies.pop(0) if self.replies else DeliveryResult(250, "ok")

    async def close(self) -> None:
        pass


SETTINGS = OutboxSettings(backoff_initial=30, backoff_max=120, max_attempts=3)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path,
                clock: FakeClock) -> AsyncIterator[Store]:
    s = open_store(store_url(request, tmp_path / "mailflow.sqlite3"), clock=clock)
    await s.open(builtin_schemas())
    yield s
    await s.close()


def worker(store: Store, hop: ScriptedHop, clock: FakeClock) -> tuple[OutboxWorker, Metrics]:
    metrics = Metrics(CollectorRegistry())
    return OutboxWorker(store, hop, SETTINGS, metrics, clock), metrics


async def queue(store: Store, kind: str = "ack", held: bool = False,
                message: str | None = None) -> None:
    mail = OutgoingMail(kind, ("claire@client.test",), b"Subject: hi\r\n\r\nhello\r\n")
    await store.write([lambda tx: tx.queue_outbox(mail, message=message, held=held)])


async def states(store: Store) -> list[tuple[str, int]]:
    return [(str(s), int(a)) for s, a in await store.run_read(
        lambda tx: tx.execute("SELECT state, attempts FROM outbox ORDER BY id"))]


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff(n, SETTINGS) for n in (1, 2, 3, 4, 9)] == [30, 60, 120, 120, 120]


async def test_a_due_row_is_sent_once_and_marked(store: Store, clock: FakeClock) -> None:
    await queue(store)
    hop = ScriptedHop()
    outbox, metrics = worker(store, hop, clock)
    assert await outbox.run_once() == 1
    assert await outbox.run_once() == 0  # nothing sent twice
    assert [(f, r) for f, r, _ in hop.sent] == [("", ["claire@client.test"])]
    assert await states(store) == [("sent", 1)]
    assert metrics.outbox_sent.labels(kind="ack")._value.get() == 1


async def test_rows_sent_together_are_recorded_in_fewer_writes(store: Store,
                                                               clock: FakeClock) -> None:
    """The sends of one claim end close together: recorded as sent in a few writes, not
    one each, every row marked all the same."""
    for _ in range(6):
        await queue(store)
    writes: list[tuple[int, ...]] = []
    recorded = store.outbox_sent

    async def spy(*row_ids: int) -> None:
        writes.append(row_ids)
        await recorded(*row_ids)

    store.outbox_sent = spy  # type: ignore[method-assign]
    outbox, metrics = worker(store, ScriptedHop(), clock)
    assert await outbox.run_once() == 6
    assert await states(store) == [("sent", 1)] * 6
    assert sorted(i for ids in writes for i in ids) == list(range(1, 7))
    assert len(writes) < 6
    assert metrics.outbox_sent.labels(kind="ack")._value.get() == 6


async def test_a_held_row_waits_for_its_message(store: Store, clock: FakeClock) -> None:
    await queue(store, held=True, message="Q1")
    hop = ScriptedHop()
    outbox, _ = worker(store, hop, clock)
    assert await outbox.run_once() == 0 and hop.sent == []
    await store.write([lambda tx: tx.release_outbox("Q1")])
    assert await outbox.run_once() == 1 and len(hop.sent) == 1


async def test_a_tempfail_is_retried_after_the_backoff_on_the_clock(store: Store,
                                                                   clock: FakeClock) -> None:
    await queue(store)
    hop = ScriptedHop(DeliveryResult(451, "busy"))
    outbox, metrics = worker(store, hop, clock)
    assert await outbox.run_once() == 1
    assert await states(store) == [("ready", 1)]
    clock.advance(29)
    assert await outbox.run_once() == 0  # not due yet: the fake clock decides
    clock.advance(2)
    assert await outbox.run_once() == 1
    assert await states(store) == [("sent", 2)] and len(hop.sent) == 2
    assert metrics.outbox_failures.labels(kind="ack", outcome="retry")._value.get() == 1


async def test_a_permanent_refusal_or_the_last_attempt_gives_up(store: Store,
                                                                clock: FakeClock) -> None:
    await queue(store, kind="refused")
    await queue(store, kind="tired")
    hop = ScriptedHop(DeliveryResult(550, "no such user"), DeliveryResult(451, "busy"),
                      DeliveryResult(451, "busy"), DeliveryResult(451, "busy"))
    outbox, metrics = worker(store, hop, clock)
    for _ in range(3):
        await outbox.run_once()
        clock.advance(SETTINGS.backoff_max + 1)
    assert await states(store) == [("failed", 1), ("failed", 3)]
    assert await outbox.run_once() == 0
    assert metrics.outbox_failures.labels(kind="refused", outcome="failed")._value.get() == 1


async def test_an_expired_lease_gives_the_row_to_another_worker(store: Store,
                                                                 clock: FakeClock) -> None:
    await queue(store)
    claimed = await store.claim_outbox("crashed-worker", limit=10, lease=0.5)
    assert len(claimed) == 1
    hop = ScriptedHop()
    outbox, _ = worker(store, hop, clock)
    assert await outbox.run_once() == 0  # leased to the other one
    await outlive_lease(store, clock, 0.5)
    assert await outbox.run_once() == 1 and len(hop.sent) == 1


async def test_the_backlog_gauges_and_a_failing_look_at_them(
        store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    hop = ScriptedHop(DeliveryResult(451, "4.3.0 later"))
    outbox, metrics = worker(store, hop, clock)
    await queue(store)
    clock.advance(40)
    await queue(store)
    assert await outbox.run_once() == 2  # one refused (retry in 30 s), one sent
    assert await outbox.run_once() == 0  # the gauges are read at each look
    assert metrics.outbox_pending._value.get() == 1
    assert metrics.outbox_oldest_age._value.get() == 40.0  # the first, written 40 s ago

    async def away(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("database unavailable")

    clock.advance(31)
    monkeypatch.setattr(store, "run_read", away)
    # the row is leased by the claim: the gauges' failing read must not lose it
    assert await outbox.run_once() == 1
    monkeypatch.undo()
    assert await states(store) == [("sent", 2), ("sent", 1)]  # attempts: each claim
