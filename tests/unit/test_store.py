"""The store's contract on both backends, SQLite on a file and a fresh PostgreSQL database:
migrations, durable and all-or-nothing writes, leases, held rows, recovery.

What only SQLite has (old files adopted, grouped commits, locks, file modes) is in
test_store_sqlite.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from mailflow.clock import FakeClock
from mailflow.plugins import builtin_schemas
from mailflow.stage import OutgoingMail, Timer
from mailflow.store import Store, StoreUnavailable, Transaction, open_store
from mailflow.store.postgres import NODE_TIMEOUT, POOL_SIZE, PostgresStore
from mailflow.store.schema import Schema, check_schemas
from mailflow.store.sqlite import SqliteStore
from stores import BACKENDS, LATEST, Gate, is_postgres, mail, pending, rows, store_url


@dataclass(frozen=True)
class Backend:
    """Where a test's store lives; each ``open`` is another handle on that same store."""

    url: str

    async def open(self, schemas: Sequence[Schema] | None = None, **options: Any) -> Store:
        """Another handle, with ``schemas`` (the built-in ones unless given)."""
        store = open_store(self.url, **options)
        await store.open(builtin_schemas() if schemas is None else schemas)
        return store


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend(store_url(request, tmp_path / "state" / "mailflow.sqlite3"))


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    s = await backend.open()
    yield s
    await s.close()


async def eventually(probe: Callable[[], Awaitable[Any]], expected: Any,
                     within: float = 5.0) -> Any:
    """What ``probe`` returns once it is ``expected`` (or at the deadline)."""
    deadline = time.monotonic() + within
    while (got := await probe()) != expected and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    return got


# -- migrations ----------------------------------------------------------------------

TABLES = ("messages", "outbox", "timers", "quarantine", "health", "sequences", "nodes",
          "cases", "case_messages", "acks", "agents")


async def column_types(store: Store, table: str) -> dict[str, str]:
    sql = ("SELECT column_name, data_type FROM information_schema.columns"
           " WHERE table_schema = current_schema() AND table_name = :table"
           if is_postgres(store) else "SELECT name, type FROM pragma_table_info(:table)")
    return {str(name): str(kind).lower() for name, kind in await rows(store, sql,
                                                                      {"table": table})}


async def test_new_store_is_migrated_to_the_latest_version(store: Store) -> None:
    assert dict(await rows(store, "SELECT owner, version FROM schema_versions")) == LATEST
    for table in TABLES:
        assert await rows(store, f"SELECT count(*) FROM {table}") == [(0,)], table
    # times are 8-byte floats whatever the backend; binary data is the backend's own
    outbox = await column_types(store, "outbox")
    assert (outbox["created_at"], outbox["data"]) == (
        "double precision", "bytea" if is_postgres(store) else "blob")


async def test_reopening_runs_no_migration_again(backend: Backend) -> None:
    with capture_logs() as first:
        s = await backend.open()
    await s.run_write(lambda tx: pending(tx, "Q1"))
    await s.close()
    with capture_logs() as second:
        again = await backend.open()
    try:
        assert {e["owner"] for e in first if e["event"] == "store_migrated"} == set(LATEST)
        assert [e for e in second if e["event"] == "store_migrated"] == []
        assert dict(await rows(again, "SELECT owner, version FROM schema_versions")) == LATEST
        assert await rows(again, "SELECT queue_id FROM messages") == [("Q1",)]
    finally:
        await again.close()


def _forget_notes(tx: Transaction, queue_id: str) -> None:
    tx.execute("DELETE FROM vip_notes WHERE queue_id = :queue_id", {"queue_id": queue_id})


NOTES = Schema("vip", (
    ("CREATE TABLE vip_notes (id {id}, queue_id TEXT NOT NULL, body {bytes})",),
    ("ALTER TABLE vip_notes ADD COLUMN at DOUBLE PRECISION",),
), forget=_forget_notes)


async def test_a_plugin_schema_is_versioned_on_its_own_and_forgets_its_rows(
        backend: Backend) -> None:
    s = await backend.open([*builtin_schemas(),
                            Schema("vip", NOTES.migrations[:1], NOTES.forget)])
    try:
        await s.migrate([NOTES])  # the plugin's next release, on reload
        versions = dict(await rows(s, "SELECT owner, version FROM schema_versions"))
        assert versions == {**LATEST, "vip": 2}
        await s.write([lambda tx: pending(tx, "Q1"), lambda tx: pending(tx, "Q2"),
                       lambda tx: tx.execute("INSERT INTO vip_notes (queue_id, body, at)"
                                             " VALUES ('Q1', :body, 1.5), ('Q2', NULL, 2)",
                                             {"body": b"\x00\xff"})])
        assert await rows(s, "SELECT body, at FROM vip_notes WHERE queue_id = 'Q1'") == [
            (b"\x00\xff", 1.5)]
        await s.write([lambda tx: tx.abandon_message("Q1")])
        assert await rows(s, "SELECT queue_id FROM vip_notes") == [("Q2",)]  # by its owner
        await s.write([lambda tx: tx.abandon_message("Q2")])
        assert await rows(s, "SELECT count(*) FROM vip_notes") == [(0,)]
    finally:
        await s.close()


async def test_recovery_keeps_what_the_next_hop_may_have(store: Store) -> None:
    """Killed between commit and the next hop's answer: the message is kept as
    ``unknown`` and what it owes is released (its ack goes out once)."""
    await store.write([lambda tx: pending(tx, "Q1"),
                       lambda tx: tx.queue_outbox(mail("ack"), message="Q1", held=True)])
    assert await store.recover() == 1
    assert await rows(store, "SELECT state FROM messages") == [("unknown",)]
    assert await rows(store, "SELECT state FROM outbox") == [("ready",)]
    assert await store.recover() == 0  # once


def test_one_owner_claimed_by_two_schemas_is_refused() -> None:
    assert check_schemas([NOTES, NOTES]) == []
    assert check_schemas([NOTES, Schema("vip", ())]) == ["schema owner 'vip' is claimed twice"]


def test_open_store_urls(tmp_path: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    assert isinstance(s, SqliteStore) and s.path == str(tmp_path / "x.db")
    pg = open_store("postgresql://mf@db.example/mailflow?pool_size=3&node_timeout=5",
                    node="n1")
    assert isinstance(pg, PostgresStore)  # nothing connects before open()
    assert (pg.url, pg.pool_size, pg.node_timeout, pg.node) == (
        "postgresql://mf@db.example/mailflow", 3, 5.0, "n1")
    short = open_store("postgres://db.example/mailflow?sslmode=require&pool_size=2")
    assert isinstance(short, PostgresStore)  # libpq's own parameters stay
    assert (short.url, short.pool_size) == ("postgres://db.example/mailflow?sslmode=require", 2)
    plain = open_store("postgresql://db.example/mailflow")
    assert isinstance(plain, PostgresStore)
    assert (plain.pool_size, plain.node_timeout) == (POOL_SIZE, NODE_TIMEOUT)
    for url in ("mysql://db.example/mailflow", "sqlite://relative.db", "mailflow.sqlite3"):
        with pytest.raises(ValueError, match="unsupported store"):
            open_store(url)
    with pytest.raises(ValueError, match="positive"):
        open_store("postgresql://db.example/mailflow?pool_size=0")
    with pytest.raises(ValueError, match="numbers"):
        open_store("postgresql://db.example/mailflow?node_timeout=soon")


# -- writes ---------------------------------------------------------------------------


async def test_concurrent_writes_are_all_durable(store: Store, backend: Backend) -> None:
    await asyncio.gather(*(
        store.write([lambda tx, i=i: pending(tx, f"Q{i:03d}"),
                     lambda tx, i=i: tx.queue_outbox(mail(), message=f"Q{i:03d}", held=False)])
        for i in range(200)))
    await store.close()
    # durable: visible from a brand-new handle on the same store
    again = await backend.open()
    try:
        assert await rows(again, "SELECT count(*) FROM messages") == [(200,)]
        assert await rows(again, "SELECT count(*) FROM outbox WHERE state = 'ready'") == [(200,)]
    finally:
        await again.close()


async def test_a_failing_transaction_does_not_fail_the_others(store: Store) -> None:
    gate = Gate()
    held = await gate.close_on(store)

    def half_then_fail(tx: Transaction) -> None:
        pending(tx, "BAD")
        raise RuntimeError("stage bug")

    def duplicate_key(tx: Transaction) -> None:
        pending(tx, "DUP")
        pending(tx, "DUP")

    tasks = [asyncio.ensure_future(store.write([lambda tx: pending(tx, "OK1")])),
             asyncio.ensure_future(store.run_write(half_then_fail)),
             asyncio.ensure_future(store.run_write(duplicate_key)),
             asyncio.ensure_future(store.run_write(lambda tx: pending(tx, "OK2") or 42))]
    await asyncio.sleep(0.05)
    gate.release.set()
    await held
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] is None
    assert isinstance(results[1], RuntimeError) and str(results[1]) == "stage bug"
    assert isinstance(results[2], StoreUnavailable)  # database errors never crash the caller
    assert results[3] == 42
    assert await rows(store, "SELECT queue_id FROM messages ORDER BY queue_id") == [
        ("OK1",), ("OK2",)]


async def test_write_is_all_or_nothing(store: Store) -> None:
    def boom(tx: Transaction) -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await store.write([lambda tx: pending(tx, "A"), boom, lambda tx: pending(tx, "B")])
    assert await rows(store, "SELECT count(*) FROM messages") == [(0,)]
    await store.write([lambda tx: pending(tx, "A"), lambda tx: pending(tx, "B")])
    assert await rows(store, "SELECT count(*) FROM messages") == [(2,)]


async def test_a_write_reads_what_it_wrote_before(store: Store) -> None:
    """PostgreSQL sends a write's statements without waiting for each answer: a read in
    the same transaction still sees every statement before it."""
    def write_then_read(tx: Transaction) -> list[tuple[object, ...]]:
        pending(tx, "B")
        pending(tx, "A")
        tx.execute("UPDATE messages SET verdict = 'read' WHERE queue_id = 'A'")
        return tx.execute("SELECT queue_id, verdict FROM messages ORDER BY queue_id")

    assert await store.run_write(write_then_read) == [("A", "read"), ("B", "deliver")]


async def test_write_whose_caller_went_away_still_commits(store: Store) -> None:
    gate = Gate()
    orphan = await gate.close_on(store, lambda tx: pending(tx, "ORPHAN"))
    orphan.cancel()  # the SMTP client vanished while its transaction ran
    gate.release.set()
    with pytest.raises(asyncio.CancelledError):
        await orphan
    await store.write([lambda tx: pending(tx, "NEXT")])  # the store still takes writes
    committed = await eventually(
        lambda: rows(store, "SELECT queue_id FROM messages ORDER BY queue_id"),
        [("NEXT",), ("ORPHAN",)])
    assert committed == [("NEXT",), ("ORPHAN",)]


async def test_reads_do_not_persist_writes(store: Store) -> None:
    with contextlib.suppress(StoreUnavailable):  # refused (PostgreSQL) or rolled back
        await store.run_read(lambda tx: pending(tx, "R"))
    assert await rows(store, "SELECT count(*) FROM messages") == [(0,)]


async def test_closed_store_refuses_writes(backend: Backend) -> None:
    s = await backend.open()
    await s.close()
    with pytest.raises(StoreUnavailable, match="not open"):
        await s.run_write(lambda tx: None)


async def test_a_read_takes_a_sequence_value_only_when_it_names_one(store: Store) -> None:
    """``read_and_take``: the read's result, and the sequence's next value when the read
    asks for one (taken for good, as next_value takes it); a peek takes nothing."""
    def asking(sequence: str | None) -> Callable[[Transaction], tuple[int, str | None]]:
        def read(tx: Transaction) -> tuple[int, str | None]:
            return len(tx.execute("SELECT name FROM sequences")), sequence
        return read

    assert await store.read_and_take(asking(None)) == (0, None)
    assert await store.read_and_take(asking("SAV-1")) == (0, 1)
    assert await store.read_and_take(asking("SAV-1")) == (1, 2)
    assert await store.read_and_take(asking("SAV-1"), peek=True) == (1, 3)
    assert await store.next_value("SAV-1") == 3  # the peek took nothing
    assert await store.read_and_take(asking("SAV-2")) == (1, 1)


# -- outbox and timers: leases --------------------------------------------------------


async def test_claim_leases_rows_until_the_lease_expires(store: Store) -> None:
    await store.write([lambda tx: tx.queue_outbox(mail("ack"), message=None, held=False),
                       lambda tx: tx.queue_outbox(mail("fwd"), message=None, held=False),
                       lambda tx: tx.queue_outbox(mail("later", time.time() + 3600),
                                                  message=None, held=False)])
    first = await store.claim_outbox("worker-1", limit=10, lease=0.5)
    assert sorted(r.kind for r in first) == ["ack", "fwd"]  # "later" is not due
    row = next(r for r in first if r.kind == "ack")
    assert row.rcpt_to == ("claire@client.test",)
    assert row.data == b"Subject: ack\r\n\r\nhello\r\n"
    assert (row.attempts, row.message, row.mail_from) == (0, None, "")
    assert await store.claim_outbox("worker-2", limit=10, lease=0.5) == []
    await asyncio.sleep(0.6)
    second = await store.claim_outbox("worker-2", limit=1, lease=30)
    assert len(second) == 1 and second[0].id in {r.id for r in first}
    owners = await rows(store, "SELECT lease_owner FROM outbox WHERE id = :id",
                        {"id": second[0].id})
    assert owners == [("worker-2",)]


async def test_a_lease_runs_out_by_the_stores_clock(backend: Backend) -> None:
    """PostgreSQL's leases run by the database's clock (daemons on several hosts agree on
    it), SQLite's by the store's injected one: here it stands still while time passes."""
    clock = FakeClock(time.time())
    s = await backend.open(clock=clock)
    try:
        await s.write([lambda tx: tx.queue_outbox(mail(), message=None, held=False),
                       lambda tx: tx.schedule_timer(Timer("remind", clock.now() - 1, "K"),
                                                    message=None, held=False)])
        (row,) = await s.claim_outbox("w1", 10, lease=0.5)
        (timer,) = await s.claim_timers("w1", clock.now(), 10, lease=0.5)
        assert await s.claim_outbox("w2", 10, lease=30) == []
        assert await s.claim_timers("w2", clock.now(), 10, lease=30) == []
        await asyncio.sleep(0.6)
        if not is_postgres(s):  # the injected clock has not moved: still w1's, until it does
            assert await s.claim_outbox("w2", 10, lease=30) == []
            assert await s.claim_timers("w2", clock.now(), 10, lease=30) == []
            clock.advance(1)
        assert [r.id for r in await s.claim_outbox("w2", 10, lease=30)] == [row.id]
        assert [t.id for t in await s.claim_timers("w2", clock.now(), 10, lease=30)] == [
            timer.id]
    finally:
        await s.close()


async def test_concurrent_claimers_never_share_a_row(store: Store) -> None:
    await store.write([lambda tx, i=i: tx.queue_outbox(mail(f"m{i}"), message=None,
                                                       held=False) for i in range(50)])
    claims = await asyncio.gather(*(store.claim_outbox(f"sender-{n}", limit=5, lease=60)
                                    for n in range(10)))
    # one that found rows locked by the others skips them: what is left goes next round
    rest = await store.claim_outbox("sender-last", limit=50, lease=60)
    taken = {f"sender-{n}": got for n, got in enumerate(claims)} | {"sender-last": rest}
    counts = Counter(r.id for got in taken.values() for r in got)
    assert len(counts) == 50 and set(counts.values()) == {1}  # each row exactly once
    assert all(len(got) <= 5 for got in claims)
    owners = dict(await rows(store, "SELECT id, lease_owner FROM outbox"))
    assert owners == {r.id: owner for owner, got in taken.items() for r in got}


async def test_sent_and_retried_rows(store: Store) -> None:
    await store.write([lambda tx: tx.queue_outbox(mail("a"), message=None, held=False),
                       lambda tx: tx.queue_outbox(mail("b"), message=None, held=False),
                       lambda tx: tx.queue_outbox(mail("c"), message=None, held=False)])
    assert await store.pending_outbox() == 3
    claimed = {r.kind: r for r in await store.claim_outbox("w", 10, lease=60)}
    await store.outbox_sent(claimed["a"].id)
    await store.outbox_retry(claimed["b"].id, time.time() - 1, "451 busy", give_up=False)
    await store.outbox_retry(claimed["c"].id, time.time() - 1, "550 no such user", give_up=True)
    assert await store.pending_outbox() == 1
    states = dict(await rows(store, "SELECT kind, state FROM outbox"))
    assert states == {"a": "sent", "b": "ready", "c": "failed"}
    again = await store.claim_outbox("w2", 10, lease=60)
    assert [(r.kind, r.attempts) for r in again] == [("b", 1)]
    assert await rows(store, "SELECT last_error FROM outbox WHERE kind = 'c'") == [
        ("550 no such user",)]


async def test_held_rows_wait_for_release_or_cancel(store: Store) -> None:
    await store.write([
        lambda tx: pending(tx, "M1"), lambda tx: pending(tx, "M2"),
        lambda tx: tx.queue_outbox(mail("m1"), message="M1", held=True),
        lambda tx: tx.queue_outbox(mail("m2"), message="M2", held=True),
        lambda tx: tx.schedule_timer(Timer("remind", time.time() - 1, "K1"), message="M1",
                                     held=True),
        lambda tx: tx.schedule_timer(Timer("remind", time.time() - 1, "K2"), message="M2",
                                     held=True),
    ])
    assert await store.claim_outbox("w", 10, lease=60) == []
    assert await store.claim_timers("w", time.time(), 10, lease=60) == []
    await store.write([lambda tx: tx.release_outbox("M1"), lambda tx: tx.release_timers("M1"),
                       lambda tx: tx.cancel_outbox("M2"), lambda tx: tx.drop_held_timers("M2")])
    assert [r.kind for r in await store.claim_outbox("w", 10, lease=60)] == ["m1"]
    timers = await store.claim_timers("w", time.time(), 10, lease=60)
    assert [t.timer.key for t in timers] == ["K1"]
    # a cancelled row cannot be released afterwards
    await store.write([lambda tx: tx.release_outbox("M2"), lambda tx: tx.release_timers("M2")])
    assert dict(await rows(store, "SELECT message, state FROM outbox")) == {
        "M1": "ready", "M2": "cancelled"}
    assert dict(await rows(store, "SELECT key, state FROM timers")) == {
        "K1": "active", "K2": "cancelled"}


async def test_sweep_held_cancels_what_a_crash_left_undecided(store: Store) -> None:
    await store.write([
        lambda tx: pending(tx, "STUCK"), lambda tx: pending(tx, "DONE"),
        lambda tx: tx.queue_outbox(mail("stuck"), message="STUCK", held=True),
        lambda tx: tx.queue_outbox(mail("done"), message="DONE", held=True),
        lambda tx: tx.schedule_timer(Timer("remind", time.time() + 60, "S"), message="STUCK",
                                     held=True),
    ])
    await store.write([lambda tx: tx.set_message_state("DONE", "delivered"),
                       lambda tx: tx.release_outbox("DONE")])
    assert await store.sweep_held(older_than=time.time() - 3600) == 0  # too recent
    assert await store.sweep_held(older_than=time.time() + 1) == 1
    assert dict(await rows(store, "SELECT queue_id, state FROM messages")) == {
        "STUCK": "aborted", "DONE": "delivered"}
    assert dict(await rows(store, "SELECT message, state FROM outbox")) == {
        "STUCK": "cancelled", "DONE": "ready"}
    assert await rows(store, "SELECT state FROM timers") == [("cancelled",)]
    assert await store.sweep_held(older_than=time.time() + 1) == 0


async def test_timers_claim_lease_and_done(store: Store) -> None:
    now = time.time()
    await store.write([
        lambda tx: tx.schedule_timer(Timer("remind", now - 5, "A", {"n": 1}), message=None,
                                     held=False),
        lambda tx: tx.schedule_timer(Timer("remind", now + 3600, "B"), message=None,
                                     held=False),
        lambda tx: tx.schedule_timer(Timer("escalate", now - 5, "C"), message=None,
                                     held=False),
        lambda tx: tx.cancel_timers("escalate", "C"),
    ])
    (due,) = await store.claim_timers("w1", now, 10, lease=60)
    assert (due.timer.kind, due.timer.key, due.timer.payload) == ("remind", "A", {"n": 1})
    assert await store.claim_timers("w2", now, 10, lease=60) == []
    await store.timer_done(due.id)
    assert await store.claim_timers("w2", now + 120, 10, lease=60) == []
    assert dict(await rows(store, "SELECT key, state FROM timers")) == {
        "A": "done", "B": "active", "C": "cancelled"}


async def test_queued_payloads_round_trip(store: Store) -> None:
    await store.write([lambda tx: tx.queue_outbox(
        OutgoingMail("fwd", ("a@x.test", "b@x.test"), b"\x00\xff binary", mail_from="me@x"),
        message="Q", held=False)])
    (row,) = await store.claim_outbox("w", 1, 60)
    assert (row.rcpt_to, row.data, row.mail_from, row.message) == (
        ("a@x.test", "b@x.test"), b"\x00\xff binary", "me@x", "Q")
    assert json.loads((await rows(store, "SELECT rcpt_to FROM outbox"))[0][0]) == [
        "a@x.test", "b@x.test"]


# -- read-only ---------------------------------------------------------------------------


async def test_read_only_store_reads_but_refuses_writes(store: Store, backend: Backend) -> None:
    await store.write([lambda tx: pending(tx, "Q1")])
    ro = await backend.open(readonly=True)
    try:
        assert await rows(ro, "SELECT queue_id FROM messages") == [("Q1",)]
        with pytest.raises(StoreUnavailable, match="read-only"):
            await ro.write([lambda tx: pending(tx, "Q2")])
        with pytest.raises(StoreUnavailable, match="read-only"):
            await ro.ping()
        with pytest.raises(StoreUnavailable, match=r"read-?only"):  # even through a read
            await ro.run_read(lambda tx: pending(tx, "Q3"))
    finally:
        await ro.close()
    assert await rows(store, "SELECT count(*) FROM messages") == [(1,)]
