"""SQLite store: the embedded default, one file under the state directory.

WAL mode, ``synchronous=FULL``. One writer thread owns the write connection
and groups the transactions that arrive together into one commit, each
inside its own SAVEPOINT so one failure never takes its neighbours with it.
That keeps "250 only once committed" at a few fsyncs per second instead of
one per message, and keeps every blocking call off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import select
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import structlog

from mailflow.clock import SYSTEM_CLOCK, Clock
from mailflow.store.base import StoreUnavailable, Transaction, WriteFn
from mailflow.store.operations import Dialect, SqlStore, manual_migration_refused
from mailflow.store.schema import ForgetFn, Schema
from mailflow.store.sqlite_schema import apply_schemas, behind

log = structlog.get_logger("mailflow.store")
T = TypeVar("T")

MAX_GROUP = 256  # transactions folded into one commit


class SqliteTransaction(Transaction):
    def __init__(self, conn: sqlite3.Connection, clock: Clock = SYSTEM_CLOCK,
                 forgetters: Sequence[ForgetFn] = ()) -> None:
        self.conn = conn
        self.clock = clock
        self.forgetters = forgetters

    def execute(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """``:name`` parameters from a mapping, or ``?`` ones from a sequence."""
        values = params if isinstance(params, Mapping) else tuple(params)
        return self.conn.execute(sql, values).fetchall()


def _connect(path: str, readonly: bool = False, busy_timeout: float = 5.0,
             durable: bool = True) -> sqlite3.Connection:
    busy = f"PRAGMA busy_timeout={int(busy_timeout * 1000)}"
    if readonly:
        # quoted: a '#', '?' or '%' in the path would otherwise end or alter the URI
        conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False, timeout=busy_timeout)
        conn.execute(busy)
        return conn
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=busy_timeout)
    conn.execute("PRAGMA journal_mode=WAL")
    # a scratch store (a replay's) may lose its last writes in a power cut: no fsync
    conn.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=OFF")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(busy)
    return conn


_Job = tuple[Callable[[Transaction], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]
_ReadJob = tuple[Callable[[], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


class SqliteStore(SqlStore):
    """The SQLite implementation of ``Store``: one writer, so a claim needs no row locks;
    leases run by the injected clock; a restart recovers every row left in flight."""

    dialect = Dialect(lease_clock=":now", skip_locked="", kinds_array=False,
                      node_scoped=False, apply_schemas=apply_schemas, behind=behind)

    def __init__(self, path: str, readonly: bool = False, busy_timeout: float = 5.0,
                 clock: Clock = SYSTEM_CLOCK, migrate: bool = True,
                 durable: bool = True) -> None:
        """``readonly`` opens an existing store for dry runs: reads work, writes refuse.
        ``busy_timeout``: seconds a locked database is waited for. ``migrate=False``:
        refuse a schema older than the code (``migrate: manual``). ``durable=False``: no
        fsync (a scratch store that is thrown away: ``mailflow replay``'s)."""
        super().__init__(f"sqlite:///{path}", readonly=readonly, clock=clock, migrate=migrate)
        self.path = path
        self.busy_timeout = busy_timeout
        self.durable = durable
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._turn: _WriterTurn | None = None
        self._readers = _Readers(READERS)
        self._local = threading.local()

    # -- lifecycle ----------------------------------------------------------

    async def open(self, schemas: Sequence[Schema]) -> None:
        if self.readonly:
            return
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = await asyncio.to_thread(_connect, self.path, False, self.busy_timeout,
                                           self.durable)
            # the writer's page cache holds the upper levels of every index it inserts in:
            # with a million cases (a 12 GB store) a message cost 14-17 % more than with a
            # thousand at SQLite's 2 MiB, 7-8 % at 8 MiB (make bench-store)
            conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
            self._turn = _WriterTurn(f"{self.path}-writer.lock", self.busy_timeout)
        except (OSError, sqlite3.Error) as exc:  # read-only folder, locked file, bad path
            raise StoreUnavailable(f"cannot open the store {self.path}: {exc}") from exc
        try:
            await asyncio.to_thread(self._migrate_now, conn, schemas)
        except StoreUnavailable:
            conn.close()
            self._close_turn()
            raise
        except sqlite3.Error as exc:
            conn.close()
            self._close_turn()
            raise StoreUnavailable(f"cannot prepare the store {self.path}: {exc}") from exc
        self._writer = threading.Thread(target=self._write_loop, args=(conn,),
                                        name="mailflow-store-writer", daemon=True)
        self._writer.start()

    def _migrate_now(self, conn: sqlite3.Connection, schemas: Sequence[Schema]) -> None:
        conn.execute("BEGIN IMMEDIATE")  # one migrator at a time, across processes
        try:
            if not self.auto_migrate:
                late = behind(self._transaction(conn), schemas)
                if late:
                    raise manual_migration_refused(late)
            apply_schemas(self._transaction(conn), schemas)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._remember(schemas)

    def _transaction(self, conn: sqlite3.Connection) -> SqliteTransaction:
        return SqliteTransaction(conn, self.clock, self._forgetters)

    async def close(self) -> None:
        if self._writer is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._writer.join, 10)
            self._writer = None
        self._close_turn()
        await asyncio.to_thread(self._readers.stop, 10)

    def _close_turn(self) -> None:
        if self._turn is not None:
            self._turn.close()
            self._turn = None

    # -- writes: grouped commits -------------------------------------------

    async def run_write(self, fn: WriteFn[T]) -> T:
        if self._writer is None:
            raise StoreUnavailable("store is read-only (dry run)" if self.readonly
                                   else "store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, future, loop))
        return await future

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        tx = self._transaction(conn)
        while True:
            job = self._jobs.get()
            if job is None:
                break
            batch = [job]
            stop = False
            while len(batch) < MAX_GROUP:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._commit_batch(conn, tx, batch)
            if stop:
                break
        conn.close()

    def _commit_batch(self, conn: sqlite3.Connection, tx: SqliteTransaction,
                      batch: list[_Job]) -> None:
        assert self._turn is not None
        with self._turn:
            self._commit_batch_in_turn(conn, tx, batch)

    def _commit_batch_in_turn(self, conn: sqlite3.Connection, tx: SqliteTransaction,
                              batch: list[_Job]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        failure: str | None = None
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, _, _ in batch:
                conn.execute("SAVEPOINT job")
                try:
                    result = fn(tx)
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((False, _unavailable(exc)))
                    if _store_fault(exc):
                        failure = str(exc)
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((True, result))
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            log.error("store_commit_failed", error=str(exc), transactions=len(batch))
            outcomes = [(False, _unavailable(exc))] * len(batch)
            failure = str(exc)
        self.error = failure
        for (_, future, loop), (ok, value) in zip(batch, outcomes, strict=True):
            loop.call_soon_threadsafe(_settle, future, ok, value)

    # -- reads ---------------------------------------------------------------

    def _read_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, self.readonly, self.busy_timeout)
            self._local.conn = conn
        return conn

    async def run_read(self, fn: WriteFn[T]) -> T:
        def job() -> T:
            conn = self._read_conn()
            conn.execute("BEGIN")
            try:
                return fn(self._transaction(conn))
            except sqlite3.Error as exc:
                raise _unavailable(exc) from exc
            finally:
                conn.execute("ROLLBACK")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._readers.put((job, future, loop))
        return await future


class _WriterTurn:
    """The daemon's workers take turns at writing: a lock on a file beside the store, and
    a FIFO on which the writer that gives its turn up says so.

    SQLite makes a writer that finds the store locked sleep and look again (1, 2, 5,
    10 … 100 ms): with two workers, each writer spent a third of its time asleep while
    the store was free. Here a writer that finds the turn taken sleeps on the FIFO and
    wakes the moment the other gives it up (at the latest `TURN_LOOK_AGAIN` later). A
    turn not had within ``wait`` (the other stuck in a write) is not waited for further:
    SQLite's own wait, and its error, decide, as they do for a process that takes no
    turn (a command). The lock is released by the kernel when its process dies. Opened
    by each process for itself: a lock on an inherited descriptor would be shared."""

    def __init__(self, path: str, wait: float) -> None:
        self.wait = wait
        self._held = False
        self._lock = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._fifo: int | None = None
        try:
            with contextlib.suppress(FileExistsError):
                os.mkfifo(f"{path}.fifo", 0o600)
            # read and write ends both: opening never blocks, writing never fails for
            # want of a reader
            self._fifo = os.open(f"{path}.fifo", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            self._said = select.poll()  # not select(): a descriptor may be past 1024
            self._said.register(self._fifo, select.POLLIN)
        except OSError as exc:  # a file system without FIFOs: look again every millisecond
            log.warning("store_writer_fifo_unavailable", path=f"{path}.fifo", error=str(exc))

    def _take(self) -> bool:
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._held = True
        return True

    def __enter__(self) -> None:
        deadline = time.monotonic() + self.wait
        while not self._take():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._fifo is None:
                time.sleep(min(left, TURN_LOOK_AGAIN / 10))
                continue
            self._said.poll(min(left, TURN_LOOK_AGAIN) * 1000)
            with contextlib.suppress(BlockingIOError):
                while os.read(self._fifo, 4096):  # what was said meanwhile, all of it
                    pass

    def __exit__(self, *exc: object) -> None:
        if not self._held:
            return
        self._held = False
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        if self._fifo is not None:
            with contextlib.suppress(BlockingIOError):  # full: nobody has listened for long
                os.write(self._fifo, b"\0")

    def close(self) -> None:
        if self._fifo is not None:
            os.close(self._fifo)
        os.close(self._lock)


#: at the latest, how soon a writer waiting for its turn looks again (a wake-up another
#: waiter took: with more than two workers)
TURN_LOOK_AGAIN = 0.01


#: reader threads, each with its connection: a slow read (a report) leaves one free
READERS = 2
#: the write connection's page cache (SQLite's default is 2 MiB)
WRITER_CACHE_KIB = 8192


class _Readers:
    """The threads running reads, taking them from one queue: an executor's futures and
    their wrapping cost about a quarter of a read's round trip, and every message makes
    a few.
    Started on the first read (so a daemon that forks workers starts them in each)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._jobs: queue.SimpleQueue[_ReadJob | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def put(self, job: _ReadJob) -> None:
        if len(self._threads) < self.count:
            with self._lock:
                while len(self._threads) < self.count:
                    thread = threading.Thread(target=self._run, daemon=True,
                                              name=f"mailflow-read_{len(self._threads)}")
                    thread.start()
                    self._threads.append(thread)
        self._jobs.put(job)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future, loop = job
            try:
                outcome = (True, fn())
            except BaseException as exc:  # handed to the waiter, raised there
                outcome = (False, exc)
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                loop.call_soon_threadsafe(_settle, future, *outcome)

    def stop(self, timeout: float) -> None:
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            thread.join(timeout)


def _unavailable(exc: BaseException) -> BaseException:
    """Map SQLite's errors (locked, full, read-only) to StoreUnavailable."""
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
        return StoreUnavailable(str(exc))
    return exc


#: SQLite's primary result codes that say the store, not the statement, is at fault:
#: BUSY, LOCKED, READONLY, IOERR, CORRUPT, FULL, CANTOPEN.
_STORE_FAULTS = frozenset({5, 6, 8, 10, 11, 13, 14})


def _store_fault(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in _STORE_FAULTS


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # the waiter was cancelled (client vanished): nothing to tell
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
