"""PostgreSQL store: several daemons sharing one database, ``store: postgresql://…``.

psycopg 3 with its connection pool. The stages' write functions are synchronous
(``fn(tx)``), so each transaction runs on a pool connection in a worker thread;
``run_write`` returns once PostgreSQL committed it (``synchronous_commit`` on: the
WAL is flushed). Concurrent commits share WAL flushes on the server, which is what
SQLite's grouped commits do by hand: "250 only once durable" at the same cost.

What the daemons share, PostgreSQL coordinates; nothing of our own:
- case numbers and other sequences: an atomic upsert counter (``sequences``);
- outbox rows and timers: ``SELECT … FOR UPDATE SKIP LOCKED`` under a lease that
  expires by the database's clock (the injected clock still says when a timer is due);
- a node's liveness: a session advisory lock held by the daemon's first worker for its
  whole life (released by the server the moment the process dies), and a heartbeat in
  ``nodes``; a restarting daemon recovers its own node's rows only, and the others
  recover a node silent for ``NODE_TIMEOUT`` seconds.

Errors of the server or the connection (restart, killed session, pool exhausted,
a unique constraint hit by two daemons at once) become ``StoreUnavailable``: the
client gets a 4xx and sends again; the pool reconnects by itself.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode

import psycopg
import structlog
from psycopg_pool import ConnectionPool, PoolTimeout

from mailflow.clock import SYSTEM_CLOCK, Clock
from mailflow.store import operations
from mailflow.store.base import StoreUnavailable, Transaction, WriteFn
from mailflow.store.operations import Dialect, SqlStore, manual_migration_refused
from mailflow.store.postgres_sql import apply_schemas, behind, db_now, to_pyformat
from mailflow.store.schema import ForgetFn, Schema

log = structlog.get_logger("mailflow.store")
T = TypeVar("T")

#: this process tree's instance of its node (workers fork after it is made: they share it)
INSTANCE = uuid.uuid4().hex
#: seconds without a heartbeat after which the other daemons recover a node's rows
NODE_TIMEOUT = 60.0
POOL_SIZE = 8
#: seconds after its last answer during which a pooled connection is handed out unchecked
FRESH_FOR = 1.0
#: seconds a node's lock is waited for: a daemon restarted at once after a crash (systemd,
#: kill -9) finds its predecessor's session still held until PostgreSQL sees it gone
NODE_LOCK_WAIT = 5.0


def split_url(url: str) -> tuple[str, int, float]:
    """(the URL for libpq, pool size, node timeout): mailflow's own query parameters,
    ``pool_size`` and ``node_timeout`` (seconds), are taken out; the rest is libpq's."""
    base, _, query = url.partition("?")
    options = parse_qs(query, keep_blank_values=True)
    try:
        pool_size = int(options.pop("pool_size", [str(POOL_SIZE)])[0])
        node_timeout = float(options.pop("node_timeout", [str(NODE_TIMEOUT)])[0])
    except ValueError:
        raise ValueError(f"'{url}': pool_size and node_timeout are numbers") from None
    if pool_size < 1 or node_timeout <= 0:
        raise ValueError(f"'{url}': pool_size and node_timeout must be positive")
    rest = urlencode(options, doseq=True)
    return (f"{base}?{rest}" if rest else base), pool_size, node_timeout


#: statements that may give rows back: the others, in a write, need no answer to go on
_GIVES_ROWS = re.compile(r"^\s*(?:SELECT|WITH|VALUES|SHOW)\b|\bRETURNING\b", re.IGNORECASE)


class PostgresTransaction(Transaction):
    """One transaction on one connection. In a write, ``pipeline`` (psycopg's pipeline
    mode) sends the statements whose rows nobody reads without waiting for each answer:
    a message's twenty-odd inserts and updates cost one round trip to the server, not
    one each. A statement that gives rows waits for everything before it; an error of
    any statement still fails the transaction, at the latest at its commit."""

    def __init__(self, conn: psycopg.Connection[Any], clock: Clock = SYSTEM_CLOCK,
                 forgetters: Sequence[ForgetFn] = (), node: str = "",
                 pipeline: psycopg.Pipeline | None = None) -> None:
        self.conn = conn
        self.clock = clock
        self.forgetters = forgetters
        self.node = node
        self.pipeline = pipeline

    def execute(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        values = params if isinstance(params, Mapping) else tuple(params)
        cursor = self.conn.execute(to_pyformat(sql), values)
        if self.pipeline is not None:
            if not _GIVES_ROWS.search(sql):
                return []
            self.pipeline.sync()  # its answer, and every one queued before it
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []


#: How long an operation waits for a connection while the last one found the database away.
OUTAGE_WAIT = 0.5


class PostgresStore(SqlStore):
    """The PostgreSQL implementation of ``Store``: claims skip the rows another daemon is
    claiming, leases run out by the database's clock, a restart recovers its own node's
    rows only (a node silent for ``NODE_TIMEOUT`` is recovered by :meth:`recover_dead`)."""

    dialect = Dialect(lease_clock=db_now(), skip_locked=" FOR UPDATE SKIP LOCKED",
                      kinds_array=True, node_scoped=True, apply_schemas=apply_schemas,
                      behind=behind)

    def __init__(self, url: str, *, readonly: bool = False, clock: Clock = SYSTEM_CLOCK,
                 node: str = "", pool_size: int = POOL_SIZE, migrate: bool = True,
                 node_timeout: float = NODE_TIMEOUT) -> None:
        super().__init__(url, readonly=readonly, clock=clock, node=node, migrate=migrate)
        self.pool_size = pool_size
        self.node_timeout = node_timeout
        self._pool: ConnectionPool[Any] | None = None
        self._read_pool: ConnectionPool[Any] | None = None
        self._threads = ThreadPoolExecutor(max_workers=pool_size + 2,
                                           thread_name_prefix="mailflow-pg")
        self._node_lock: psycopg.Connection[Any] | None = None
        #: when each pooled connection last answered (its next check may be skipped)
        self._answered: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = (
            weakref.WeakKeyDictionary())

    # -- lifecycle ----------------------------------------------------------

    async def open(self, schemas: Sequence[Schema]) -> None:
        pools = [self._new_pool(read_only=False), self._new_pool(read_only=True)]
        try:
            for pool in pools:
                await self._call(pool.open, True, 10.0)
        except (psycopg.Error, PoolTimeout) as exc:
            for pool in pools:
                await self._call(pool.close)
            raise StoreUnavailable(f"cannot reach the store {self._where()}: {exc}") from exc
        self._pool, self._read_pool = pools
        if self.readonly:
            self._remember(schemas)
            return
        if self.auto_migrate:
            await self.run_write(lambda tx: apply_schemas(tx, schemas))
        else:
            late = await self.run_read(lambda tx: behind(tx, schemas))
            if late:
                await self.close()
                raise manual_migration_refused(late)
        self._remember(schemas)

    def _new_pool(self, read_only: bool) -> ConnectionPool[Any]:
        """Reads run in autocommit (no BEGIN/COMMIT round trips) on connections the
        server itself keeps read-only, so a read can never persist a write."""
        kwargs: dict[str, Any] = {"connect_timeout": 5,
                                  "application_name": f"mailflow {self.node}"}
        if read_only:
            kwargs |= {"autocommit": True,
                       "options": "-c default_transaction_read_only=on"}
        return ConnectionPool(
            self.url, min_size=1, max_size=self.pool_size, open=False, timeout=5.0,
            kwargs=kwargs, check=self._check, reconnect_timeout=0)

    def _check(self, conn: psycopg.Connection[Any]) -> None:
        """The pool's check of a connection it hands out; a dead one means the database
        went away: say so (``/healthz``) and fail the next operations fast. The check is
        a round trip: a connection that answered within ``FRESH_FOR`` seconds is not
        asked again (under load, one round trip saved per transaction; a server that
        dies meanwhile fails that transaction, and the client sends again)."""
        if time.monotonic() - self._answered.get(conn, -FRESH_FOR) < FRESH_FOR:
            return
        try:
            ConnectionPool.check_connection(conn)
        except psycopg.Error as exc:
            self.error = f"database unavailable: {exc}".strip()
            raise
        self._answered[conn] = time.monotonic()

    async def close(self) -> None:
        if self._node_lock is not None:
            await self._call(self._node_lock.close)
            self._node_lock = None
        for pool in (self._pool, self._read_pool):
            if pool is not None:
                await self._call(pool.close)
        self._pool = self._read_pool = None
        self._threads.shutdown(wait=False)

    def _where(self) -> str:
        """The URL without its password, for messages and logs."""
        info = psycopg.conninfo.conninfo_to_dict(self.url)
        return f"postgresql://{info.get('host', '')}:{info.get('port', 5432)}/" \
               f"{info.get('dbname', '')}"

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)

    # -- transactions --------------------------------------------------------

    def _run(self, fn: WriteFn[T], read: bool) -> T:
        pool = self._read_pool if read else self._pool
        if pool is None:
            raise StoreUnavailable("store is not open")
        try:
            # while the database is known to be away, fail fast: the client hears its 4xx
            # now rather than after the pool's whole wait
            with pool.connection(timeout=OUTAGE_WAIT if self.error else None) as conn:
                if read:
                    result = fn(PostgresTransaction(conn, self.clock, self._forgetters,
                                                    self.node))
                else:
                    with conn.pipeline() as pipeline, conn.transaction():
                        result = fn(PostgresTransaction(conn, self.clock, self._forgetters,
                                                        self.node, pipeline))
                self._answered[conn] = time.monotonic()
            self.error = None
            return result
        except PoolTimeout as exc:
            self.error = f"no database connection: {exc}"
            raise StoreUnavailable(self.error) from exc
        except psycopg.OperationalError as exc:  # server gone, connection killed
            self.error = f"database unavailable: {exc}".strip()
            raise StoreUnavailable(self.error) from exc
        except psycopg.Error as exc:  # a conflict (two daemons, one message): try again
            raise StoreUnavailable(str(exc).strip()) from exc

    async def run_write(self, fn: WriteFn[T]) -> T:
        if self.readonly:
            raise StoreUnavailable("store is read-only (dry run)")
        if self._pool is None:  # closed: its threads are gone too
            raise StoreUnavailable("store is not open")
        result: T = await self._call(self._run, fn, False)
        return result

    async def run_read(self, fn: WriteFn[T]) -> T:
        if self._pool is None:
            raise StoreUnavailable("store is not open")
        result: T = await self._call(self._run, fn, True)
        return result

    # -- the node --------------------------------------------------------------

    async def claim_node(self) -> None:
        """Hold this node's advisory lock for the life of the daemon: refused when
        another live daemon holds it (the same ``node_id`` twice) for NODE_LOCK_WAIT."""
        def claim() -> None:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            deadline = time.monotonic() + NODE_LOCK_WAIT
            while True:
                (held,) = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))",
                                       (f"mailflow node {self.node}",)).fetchone() or (False,)
                if held or time.monotonic() >= deadline:
                    break
                time.sleep(0.25)
            if not held:
                conn.close()
                raise StoreUnavailable(
                    f"node id '{self.node}' is in use by another running daemon on this"
                    " database: give each daemon its own node_id")
            self._node_lock = conn
        try:
            await self._call(claim)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot reach the store {self._where()}: {exc}") from exc
        await self.run_write(self._heartbeat)

    def _lock_alive(self) -> bool:
        """Is the session holding this node's lock still there?"""
        conn = self._node_lock
        try:
            return conn is not None and not conn.closed and bool(conn.execute("SELECT 1"))
        except psycopg.Error:
            return False

    def _heartbeat(self, tx: Transaction) -> None:
        tx.execute(f"INSERT INTO nodes (node, instance, heartbeat) VALUES (:node, :instance,"
                   f" {db_now()}) ON CONFLICT (node) DO UPDATE SET instance = excluded.instance,"
                   " heartbeat = excluded.heartbeat", {"node": self.node, "instance": INSTANCE})

    # -- recovery and health ---------------------------------------------------

    async def recover_dead(self) -> int:
        """Recover the rows of nodes whose daemon stopped beating (and holds no lock)."""
        def recover(tx: Transaction) -> int:
            dead = tx.execute(f"SELECT node FROM nodes WHERE heartbeat < {db_now()} - :timeout"
                              " AND node <> :node AND pg_try_advisory_xact_lock("
                              "hashtext('mailflow node ' || node)) FOR UPDATE SKIP LOCKED",
                              {"timeout": self.node_timeout, "node": self.node})
            total = 0
            for (node,) in dead:
                total += operations.recover(tx, self.dialect, node=str(node))
                tx.execute("DELETE FROM nodes WHERE node = :node", {"node": node})
                log.warning("node_recovered", node=node, messages=total)
            return total
        return await self.run_write(recover)

    async def ping(self) -> None:
        """A write (the node's heartbeat, or the health row), and the dead nodes' rows."""
        if self._node_lock is not None:
            if not await self._call(self._lock_alive):
                # the server restarted: the lock went with the session; take it again
                # before anyone takes this node for dead
                await self._call(self._node_lock.close)
                await self.claim_node()
            await self.run_write(self._heartbeat)
            await self.recover_dead()
        else:
            await super().ping()

