"""What only the SQLite store has, on real files: old stores adopted, grouped commits,
WAL, URI characters in a path, file modes and locks (the contract of both backends is
test_store.py)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from mailflow.plugins import builtin_schemas
from mailflow.store import StoreUnavailable, Transaction
from mailflow.store.sqlite import SqliteStore, SqliteTransaction
from stores import LATEST, Gate, mail, pending, rows


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "mailflow.sqlite3"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(str(db))
    await s.open(builtin_schemas())
    yield s
    await s.close()


async def reopened(db: Path) -> SqliteStore:
    s = SqliteStore(str(db))
    await s.open(builtin_schemas())
    return s


async def test_a_new_store_is_a_wal_file(store: SqliteStore, db: Path) -> None:
    assert await asyncio.to_thread(db.exists)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


#: What a store of one ``PRAGMA user_version`` lacked: version 1 had only the core's tables
#: (no sequences), version 2 added cases and acks, version 3 the agents and an index; none
#: had the nodes of a shared database (core 3, after per-owner versions).
MISSING = {1: ("sequences", "cases", "case_messages", "fingerprints", "acks", "ack_bounces",
               "agents", "nodes"),
           3: ("nodes",)}


@pytest.mark.parametrize("user_version", [1, 3])
async def test_a_store_of_one_user_version_is_adopted(db: Path, user_version: int) -> None:
    """Stores from before per-owner schemas: what they lack is created, their tables
    become version 1 of each owner, data kept."""
    s = SqliteStore(str(db))
    await s.open(builtin_schemas())
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


async def test_concurrent_writes_are_grouped_into_a_few_commits(store: SqliteStore) -> None:
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
    assert await rows(store, "SELECT count(*) FROM messages") == [(200,)]


async def test_read_only_store_with_uri_characters_in_its_path(tmp_path: Path) -> None:
    path = tmp_path / "odd #1 ?x=%41" / "mailflow.sqlite3"
    s = await reopened(path)
    await s.write([lambda tx: pending(tx, "Q1")])
    await s.close()
    ro = SqliteStore(str(path), readonly=True)
    await ro.open(())
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
        await store.open(builtin_schemas())
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


# -- the workers' turns at writing ---------------------------------------------------


def hold_turn(db: Path) -> int:
    """Take the writers' turn as another worker would (its own descriptor)."""
    fd = os.open(f"{db}-writer.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def give_turn_up(db: Path, fd: int) -> None:
    """Give it up as a worker does: unlock, and say so on the FIFO."""
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    fifo = os.open(f"{db}-writer.lock.fifo", os.O_RDWR | os.O_NONBLOCK)
    os.write(fifo, b"\0")
    os.close(fifo)


async def test_a_writer_waits_for_its_turn_and_takes_it_at_once(store: SqliteStore,
                                                                  db: Path) -> None:
    """Workers on one store take turns at writing: a writer whose turn another holds
    waits, and writes as soon as it is given up, not after a sleep of SQLite's."""
    fd = hold_turn(db)
    write = asyncio.ensure_future(store.write([lambda tx: pending(tx, "Q-TURN")]))
    await asyncio.sleep(0.3)
    assert not write.done()  # waiting for its turn
    released = time.monotonic()
    give_turn_up(db, fd)
    await write
    assert time.monotonic() - released < 0.2
    assert await rows(store, "SELECT queue_id FROM messages") == [("Q-TURN",)]


async def test_a_turn_held_too_long_is_not_waited_for(db: Path) -> None:
    """Another worker stuck holding the turn: after the store's busy timeout the writer
    goes on without it (SQLite's own lock decides, and the store is free)."""
    store = SqliteStore(str(db), busy_timeout=0.3)
    await store.open(builtin_schemas())
    fd = hold_turn(db)
    try:
        started = time.monotonic()
        await store.write([lambda tx: pending(tx, "Q-LATE")])
        assert 0.3 <= time.monotonic() - started < 2.0
        assert await rows(store, "SELECT queue_id FROM messages") == [("Q-LATE",)]
    finally:
        os.close(fd)
        await store.close()


async def test_without_a_fifo_a_writer_still_takes_its_turn_when_given_up(db: Path) -> None:
    """A file system without FIFOs (here: a folder where the FIFO would be): the writer
    looks for its turn again every millisecond instead, and says why in the log."""
    db.parent.mkdir(parents=True)
    os.mkdir(f"{db}-writer.lock.fifo")
    with capture_logs() as logs:
        store = await reopened(db)
    assert [e for e in logs if e["event"] == "store_writer_fifo_unavailable"]
    try:
        fd = hold_turn(db)
        write = asyncio.ensure_future(store.write([lambda tx: pending(tx, "Q-NOFIFO")]))
        await asyncio.sleep(0.2)
        assert not write.done()
        released = time.monotonic()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        await write
        assert time.monotonic() - released < 0.2
    finally:
        await store.close()
