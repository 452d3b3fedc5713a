"""The SQLite store, on real files: migrations, group commits, leases, failures."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailflow.plugins import builtin_schemas
from mailflow.stage import OutgoingMail, Timer
from mailflow.store import StoreUnavailable, Transaction, open_store
from mailflow.store.schema import Schema, check_schemas
from mailflow.store.sqlite import SqliteStore, SqliteTransaction


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "mailflow.sqlite3"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(str(db))
    await s.open()
    yield s
    await s.close()


async def reopened(db: Path) -> SqliteStore:
    s = SqliteStore(str(db))
    await s.open()
    return s


def mail(kind: str = "ack", not_before: float = 0.0) -> OutgoingMail:
    return OutgoingMail(kind, ("claire@client.test",), b"Subject: ack\r\n\r\nhello\r\n",
                        not_before=not_before)


async def rows(store: SqliteStore, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    return await store.run_read(lambda tx: tx.execute(sql, params))


def pending(tx: Transaction, queue_id: str) -> None:
    tx.record_message(queue_id, message_id=f"{queue_id}@client.test",
                      mail_from="claire@client.test", rcpt_to=["sav@example.com"],
                      state="pending", verdict="deliver", received_at=time.time(), details={})


class Gate:
    """Holds the writer thread inside a job, so the next writes pile up into one batch."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, tx: Transaction) -> None:
        self.entered.set()
        assert self.release.wait(10), "gate never released"

    async def close_on(self, store: SqliteStore) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(store.run_write(self))
        assert await asyncio.to_thread(self.entered.wait, 5)
        return task


# -- migrations ----------------------------------------------------------------------


#: each built-in owner at its latest version (core 2: the scheduler's retry columns)
LATEST = {"core": 2, "cases": 1, "acknowledge": 1, "agents": 1,
          **{s.owner: s.version for s in builtin_schemas()
             if s.owner not in ("core", "cases", "acknowledge", "agents")}}


async def test_new_store_is_migrated_to_the_latest_version(store: SqliteStore,
                                                           db: Path) -> None:
    assert await asyncio.to_thread(db.exists)
    conn = sqlite3.connect(db)
    try:
        assert dict(conn.execute("SELECT owner, version FROM schema_versions")) == LATEST
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        # times are 8-byte floats whatever the backend (REAL affinity here)
        outbox = {r[1]: r[2] for r in conn.execute("PRAGMA table_info(outbox)")}
    finally:
        conn.close()
    assert {"messages", "outbox", "timers", "quarantine", "health", "cases",
            "case_messages", "sequences", "acks", "agents"} <= tables
    assert outbox["created_at"] == "DOUBLE PRECISION" and outbox["data"] == "BLOB"


async def test_reopening_runs_no_migration_again(store: SqliteStore, db: Path) -> None:
    await store.run_write(lambda tx: pending(tx, "Q1"))
    await store.close()
    again = await reopened(db)
    try:
        assert dict(await rows(again, "SELECT owner, version FROM schema_versions")) == LATEST
        assert await rows(again, "SELECT queue_id FROM messages") == [("Q1",)]
    finally:
        await again.close()


#: What a store of one ``PRAGMA user_version`` lacked: version 1 had only the core's tables
#: (no sequences), version 2 added cases and acks, version 3 the agents and an index.
MISSING = {1: ("sequences", "cases", "case_messages", "fingerprints", "acks", "ack_bounces",
               "agents"),
           3: ()}


@pytest.mark.parametrize("user_version", [1, 3])
async def test_a_store_of_one_user_version_is_adopted(db: Path, user_version: int) -> None:
    """Stores from before per-owner schemas: what they lack is created, their tables
    become version 1 of each owner, data kept."""
    s = SqliteStore(str(db))
    await s.open()
    await s.close()
    conn = sqlite3.connect(db, isolation_level=None)  # made as the old code made it
    conn.execute("DROP TABLE schema_versions")
    for table in MISSING[user_version]:
        conn.execute(f"DROP TABLE {table}")
    conn.execute(f"PRAGMA user_version = {user_version}")
    conn.execute("INSERT INTO health (id, at) VALUES (1, 1.0)")
    conn.close()
    s = await reopened(db)
    try:
        assert dict(await rows(s, "SELECT owner, version FROM schema_versions")) == LATEST
        assert await rows(s, "SELECT count(*) FROM cases") == [(0,)]
        assert await rows(s, "SELECT at FROM health") == [(1.0,)]  # data kept
        assert await s.run_write(lambda tx: tx.next_value("SAV")) == 1  # and usable
    finally:
        await s.close()


def _forget_notes(tx: Transaction, queue_id: str) -> None:
    tx.execute("DELETE FROM vip_notes WHERE queue_id = :queue_id", {"queue_id": queue_id})


NOTES = Schema("vip", (
    ("CREATE TABLE vip_notes (id {id}, queue_id TEXT NOT NULL, body {bytes})",),
    ("ALTER TABLE vip_notes ADD COLUMN at DOUBLE PRECISION",),
), forget=_forget_notes)


async def test_a_plugin_schema_is_versioned_on_its_own_and_forgets_its_rows(db: Path) -> None:
    s = SqliteStore(str(db))
    await s.open([*builtin_schemas(), Schema("vip", NOTES.migrations[:1], NOTES.forget)])
    try:
        await s.migrate([NOTES])  # the plugin's next release, on reload
        versions = dict(await rows(s, "SELECT owner, version FROM schema_versions"))
        assert versions == {**LATEST, "vip": 2}
        await s.write([lambda tx: pending(tx, "Q1"), lambda tx: pending(tx, "Q2"),
                       lambda tx: tx.execute("INSERT INTO vip_notes (queue_id, body, at)"
                                             " VALUES ('Q1', x'00ff', 1.5), ('Q2', NULL, 2)")])
        await s.write([lambda tx: tx.abandon_message("Q1"), lambda tx: tx.abandon_message("Q2")])
        assert await rows(s, "SELECT count(*) FROM vip_notes") == [(0,)]  # forgotten by it
    finally:
        await s.close()


async def test_recovery_keeps_what_the_next_hop_may_have(db: Path) -> None:
    """Killed between commit and the next hop's answer: the message is kept as
    ``unknown`` and what it owes is released (its ack goes out once)."""
    s = SqliteStore(str(db))
    await s.open(builtin_schemas())
    try:
        await s.write([lambda tx: pending(tx, "Q1"),
                       lambda tx: tx.queue_outbox(mail("ack"), message="Q1", held=True)])
        assert await s.recover() == 1
        assert await rows(s, "SELECT state FROM messages") == [("unknown",)]
        assert await rows(s, "SELECT state FROM outbox") == [("ready",)]
        assert await s.recover() == 0  # once
    finally:
        await s.close()


def test_one_owner_claimed_by_two_schemas_is_refused() -> None:
    assert check_schemas([NOTES, NOTES]) == []
    assert check_schemas([NOTES, Schema("vip", ())]) == ["schema owner 'vip' is claimed twice"]


def test_open_store_urls(tmp_path: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    assert isinstance(s, SqliteStore) and s.path == str(tmp_path / "x.db")
    with pytest.raises(ValueError, match="unsupported store"):
        open_store("postgresql://db/mailflow")


# -- writes ---------------------------------------------------------------------------


async def test_concurrent_writes_are_grouped_and_all_durable(store: SqliteStore,
                                                             db: Path) -> None:
    statements: list[str] = []

    def trace(tx: Transaction) -> None:
        assert isinstance(tx, SqliteTransaction)
        tx.conn.set_trace_callback(statements.append)

    await store.run_write(trace)
    gate = Gate()
    held = await gate.close_on(store)
    writes = [store.write([lambda tx, i=i: pending(tx, f"Q{i:03d}"),
                           lambda tx, i=i: tx.queue_outbox(mail(), message=f"Q{i:03d}",
                                                           held=False)])
              for i in range(200)]
    tasks = [asyncio.ensure_future(w) for w in writes]
    await asyncio.sleep(0.05)  # all 200 are queued behind the gate
    gate.release.set()
    await held
    await asyncio.gather(*tasks)
    commits = [s for s in statements if s.strip().upper() == "COMMIT"]
    assert 1 <= len(commits) <= 3, commits  # 200 transactions, a handful of fsyncs
    await store.close()
    # durable: visible from a brand-new store on the same file
    again = await reopened(db)
    try:
        assert await rows(again, "SELECT count(*) FROM messages") == [(200,)]
        assert await rows(again, "SELECT count(*) FROM outbox WHERE state = 'ready'") == [(200,)]
    finally:
        await again.close()


async def test_a_failing_transaction_does_not_fail_its_batch(store: SqliteStore) -> None:
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
    assert isinstance(results[2], StoreUnavailable)  # SQLite errors never crash the caller
    assert results[3] == 42
    assert await rows(store, "SELECT queue_id FROM messages ORDER BY queue_id") == [
        ("OK1",), ("OK2",)]


async def test_write_is_all_or_nothing(store: SqliteStore) -> None:
    def boom(tx: Transaction) -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await store.write([lambda tx: pending(tx, "A"), boom, lambda tx: pending(tx, "B")])
    assert await rows(store, "SELECT count(*) FROM messages") == [(0,)]
    await store.write([lambda tx: pending(tx, "A"), lambda tx: pending(tx, "B")])
    assert await rows(store, "SELECT count(*) FROM messages") == [(2,)]


async def test_write_whose_caller_went_away_still_commits(store: SqliteStore) -> None:
    gate = Gate()
    held = await gate.close_on(store)
    orphan = asyncio.ensure_future(store.write([lambda tx: pending(tx, "ORPHAN")]))
    await asyncio.sleep(0.05)
    orphan.cancel()  # the SMTP client vanished while its transaction was queued
    gate.release.set()
    await held
    with pytest.raises(asyncio.CancelledError):
        await orphan
    await store.write([lambda tx: pending(tx, "NEXT")])  # the writer is still alive
    assert await rows(store, "SELECT queue_id FROM messages ORDER BY queue_id") == [
        ("NEXT",), ("ORPHAN",)]


async def test_reads_do_not_persist_writes(store: SqliteStore) -> None:
    await store.run_read(lambda tx: pending(tx, "R"))
    assert await rows(store, "SELECT count(*) FROM messages") == [(0,)]


async def test_closed_store_refuses_writes(db: Path) -> None:
    s = await reopened(db)
    await s.close()
    with pytest.raises(StoreUnavailable, match="not open"):
        await s.run_write(lambda tx: None)


# -- outbox ---------------------------------------------------------------------------


async def test_claim_leases_rows_until_the_lease_expires(store: SqliteStore) -> None:
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
    owners = await rows(store, "SELECT lease_owner FROM outbox WHERE id = ?", (second[0].id,))
    assert owners == [("worker-2",)]


async def test_sent_and_retried_rows(store: SqliteStore) -> None:
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


async def test_held_rows_wait_for_release_or_cancel(store: SqliteStore) -> None:
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


async def test_sweep_held_cancels_what_a_crash_left_undecided(store: SqliteStore) -> None:
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


async def test_timers_claim_lease_and_done(store: SqliteStore) -> None:
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


async def test_queued_payloads_round_trip(store: SqliteStore) -> None:
    await store.write([lambda tx: tx.queue_outbox(
        OutgoingMail("fwd", ("a@x.test", "b@x.test"), b"\x00\xff binary", mail_from="me@x"),
        message="Q", held=False)])
    (row,) = await store.claim_outbox("w", 1, 60)
    assert (row.rcpt_to, row.data, row.mail_from, row.message) == (
        ("a@x.test", "b@x.test"), b"\x00\xff binary", "me@x", "Q")
    assert json.loads((await rows(store, "SELECT rcpt_to FROM outbox"))[0][0]) == [
        "a@x.test", "b@x.test"]


# -- read-only and unavailable -----------------------------------------------------------


async def test_read_only_store_reads_but_refuses_writes(store: SqliteStore, db: Path) -> None:
    await store.write([lambda tx: pending(tx, "Q1")])
    ro = SqliteStore(str(db), readonly=True)
    await ro.open()
    try:
        assert await rows(ro, "SELECT queue_id FROM messages") == [("Q1",)]
        with pytest.raises(StoreUnavailable, match="read-only"):
            await ro.write([lambda tx: pending(tx, "Q2")])
        with pytest.raises(StoreUnavailable, match="read-only"):
            await ro.ping()
        with pytest.raises(StoreUnavailable, match="readonly"):  # even through a read
            await ro.run_read(lambda tx: pending(tx, "Q3"))
    finally:
        await ro.close()
    assert await rows(store, "SELECT count(*) FROM messages") == [(1,)]


async def test_read_only_store_with_uri_characters_in_its_path(tmp_path: Path) -> None:
    path = tmp_path / "odd #1 ?x=%41" / "mailflow.sqlite3"
    s = await reopened(path)
    await s.write([lambda tx: pending(tx, "Q1")])
    await s.close()
    ro = SqliteStore(str(path), readonly=True)
    await ro.open()
    try:
        assert await rows(ro, "SELECT queue_id FROM messages") == [("Q1",)]
        with pytest.raises(StoreUnavailable, match="readonly"):
            await ro.run_read(lambda tx: pending(tx, "Q2"))
    finally:
        await ro.close()
    # the dry run opened that very file, and created nothing beside it
    assert await asyncio.to_thread(os.listdir, tmp_path) == ["odd #1 ?x=%41"]


async def _probe(path: Path) -> str:
    store = SqliteStore(str(path))
    try:
        await store.open()
        await store.ping()
        return "WRITABLE"
    except StoreUnavailable as exc:
        return f"UNAVAILABLE {exc}"
    finally:
        await store.close()


def probe(path: Path) -> str:
    """Open the store at ``path`` in a forked child without root's powers; say how it went.

    Root ignores file modes, so as root the child becomes ``nobody`` (forked, not
    exec'd: the interpreter may live where ``nobody`` cannot read).
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        status = 1
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            result = asyncio.run(_probe(path))
            os.write(write_end, result.encode())
            status = 0
        except BaseException as exc:
            os.write(write_end, f"CHILD FAILED {exc!r}".encode())
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output
    return output


@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder ``nobody`` can reach (pytest's tmp_path is private to root)."""
    if os.geteuid() != 0:
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="mailflow-store-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_unavailable_when_the_folder_is_read_only(shared_dir: Path) -> None:
    # not a coroutine: the forked child runs its own event loop
    folder = shared_dir / "ro"
    folder.mkdir()
    existing = folder / "existing.sqlite3"
    assert asyncio.run(_probe(existing)) == "WRITABLE"  # created while the folder was writable
    for name in os.listdir(folder):
        (folder / name).chmod(0o666)
    writable = shared_dir / "writable"
    writable.mkdir()
    writable.chmod(0o777)
    folder.chmod(0o555)
    try:
        assert probe(folder / "new.sqlite3").startswith("UNAVAILABLE ")
        assert probe(folder / "sub" / "new.sqlite3").startswith("UNAVAILABLE ")
        assert probe(existing).startswith("UNAVAILABLE ")
        # control: the same child can open a store where it may write
        assert probe(writable / "ok.sqlite3") == "WRITABLE"
    finally:
        folder.chmod(0o755)


async def test_unavailable_while_another_connection_holds_an_exclusive_lock(db: Path) -> None:
    db.parent.mkdir(parents=True)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            await reopened(db)
    finally:
        other.execute("ROLLBACK")
        other.close()


async def test_writes_fail_cleanly_while_locked_then_recover(store: SqliteStore,
                                                             db: Path) -> None:
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.write([lambda tx: pending(tx, "LOCKED")])
    finally:
        other.execute("ROLLBACK")
        other.close()
    await store.ping()
    await store.write([lambda tx: pending(tx, "AFTER")])
    assert await rows(store, "SELECT queue_id FROM messages") == [("AFTER",)]
