"""What both backends do the same way: the leased queues (outbox and timers), sweeping,
recovery, the health row and migrations, written once over a :class:`Dialect`.

A dialect says only what really differs between SQLite and PostgreSQL: the clock a
lease runs by, whether a claim skips the rows another writer holds, how a list of kinds
is passed, whether a restart recovers only its own node's rows, and how each migrates.
How transactions are run (SQLite's grouped commits, PostgreSQL's pools) stays in each
backend.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from mailflow.clock import SYSTEM_CLOCK, Clock
from mailflow.store.base import OutboxRow, Store, StoreUnavailable, TimerRow, Transaction
from mailflow.store.schema import ForgetFn, Schema
from mailflow.values import Timer


@dataclass(frozen=True)
class Dialect:
    """How one backend spells what the shared operations leave open."""

    #: the clock leases run by, an SQL expression: the injected clock's ``:now`` (one
    #: SQLite file, one daemon) or the database's own (daemons on several machines)
    lease_clock: str
    #: appended to a query selecting rows to change: another writer's are skipped, not
    #: waited for ("" for SQLite's single writer)
    skip_locked: str
    #: the kinds to claim as one array parameter (``= ANY(:kinds)``), or an ``IN`` list
    kinds_array: bool
    #: a restart recovers only the rows its own node left in flight (a shared database)
    node_scoped: bool
    #: bring each owner's tables up to date inside the caller's transaction
    apply_schemas: Callable[[Transaction, Sequence[Schema]], object]
    #: the owners whose tables are older than this code's
    behind: Callable[[Transaction, Sequence[Schema]], list[str]]

    def only_kinds(self, kinds: Sequence[str]) -> tuple[str, dict[str, Any]]:
        """The condition (and its parameters) taking only rows of ``kinds``."""
        if self.kinds_array:
            return " AND kind = ANY(:kinds)", {"kinds": list(kinds)}
        names = {f"k{i}": kind for i, kind in enumerate(kinds)}
        return f" AND kind IN ({', '.join(':' + name for name in names)})", names


def manual_migration_refused(late: Sequence[str]) -> StoreUnavailable:
    """What opening a store older than the code says under ``migrate: manual``."""
    return StoreUnavailable(
        f"the store's schema is older than this mailflow ({', '.join(late)})"
        " and migrate is manual: run 'mailflow migrate' first")


def claim(tx: Transaction, dialect: Dialect, table: str, due: str, state: str, *,
          now: float, owner: str, limit: int, lease: float, columns: str,
          kinds: Sequence[str] | None = None) -> list[tuple[Any, ...]]:
    """Lease up to ``limit`` due rows of ``table`` (outbox or timers) to ``owner``, in one
    statement, and return ``id, columns`` of each, the earliest due first. A row whose
    lease has expired is due again: its owner died or hung. ``kinds``: only those (all
    when empty or None)."""
    only, params = dialect.only_kinds(kinds) if kinds else ("", {})
    clock = dialect.lease_clock
    rows = tx.execute(
        f"UPDATE {table} SET lease_owner = :owner, lease_until = {clock} + :lease"
        f" WHERE id IN (SELECT id FROM {table} WHERE state = :state AND {due} <= :now{only}"
        f" AND (lease_until IS NULL OR lease_until < {clock}) ORDER BY {due}"
        f" LIMIT :limit{dialect.skip_locked}) RETURNING {due}, id, {columns}",
        {"owner": owner, "lease": lease, "state": state, "now": now, "limit": limit,
         **params})
    return [row[1:] for row in sorted(rows, key=lambda row: (row[0], row[1]))]


def claim_outbox(tx: Transaction, dialect: Dialect, *, owner: str, limit: int,
                 lease: float) -> list[OutboxRow]:
    rows = claim(tx, dialect, "outbox", "next_attempt", "ready", now=tx.now(), owner=owner,
                 limit=limit, lease=lease,
                 columns="kind, mail_from, rcpt_to, data, attempts, message, expires_at")
    return [OutboxRow(r[0], r[1], r[2], tuple(json.loads(r[3])), bytes(r[4]), r[5], r[6],
                      None if r[7] is None else float(r[7])) for r in rows]


def claim_timers(tx: Transaction, dialect: Dialect, *, owner: str, now: float, limit: int,
                 lease: float, kinds: Sequence[str] | None) -> list[TimerRow]:
    rows = claim(tx, dialect, "timers", "COALESCE(next_attempt, due)", "active", now=now,
                 owner=owner, limit=limit, lease=lease,
                 columns="kind, key, due, payload, attempts", kinds=kinds)
    return [TimerRow(r[0], Timer(r[1], r[3], r[2], json.loads(r[4])), r[5]) for r in rows]


def sweep_held(tx: Transaction, dialect: Dialect, *, older_than: float) -> int:
    """Abandon the messages left pending since before ``older_than``."""
    rows = tx.execute("SELECT queue_id FROM messages WHERE state = 'pending'"
                      f" AND updated_at < :older_than{dialect.skip_locked}",
                      {"older_than": older_than})
    for (queue_id,) in rows:
        tx.abandon_message(queue_id)
    return len(rows)


def recover(tx: Transaction, dialect: Dialect, *, node: str) -> int:
    """Free the leases, and mark the messages caught between commit and the next hop's
    answer ``unknown`` (see ``Store.recover``): ``node``'s only on a node-scoped backend,
    all of them otherwise."""
    if dialect.node_scoped:
        # owners are NODE:PID (outbox) and NODE:PID:scheduler
        leased = "left(lease_owner, length(:prefix)) = :prefix"
        mine: dict[str, Any] = {"prefix": f"{node}:"}
        pending, theirs = " AND node = :node", {"node": node}
    else:
        leased, mine, pending, theirs = "lease_until IS NOT NULL", {}, "", {}
    for table, state in (("outbox", "ready"), ("timers", "active")):
        tx.execute(f"UPDATE {table} SET lease_owner = NULL, lease_until = NULL"
                   f" WHERE {leased} AND state = '{state}'", mine)
    rows = tx.execute(f"SELECT queue_id FROM messages WHERE state = 'pending'{pending}",
                      theirs)
    for (queue_id,) in rows:
        # killed between committing and hearing the next hop: it may have the message.
        # The case and what it owes stand; the client's retry is delivered as a marked
        # copy in the same case (see ``unknown``)
        tx.set_message_state(queue_id, "unknown")
        tx.release_outbox(queue_id)
        tx.release_timers(queue_id)
    return len(rows)


def outbox_sent(tx: Transaction, row_id: int) -> None:
    tx.execute("UPDATE outbox SET state = 'sent', sent_at = :now, lease_until = NULL,"
               " attempts = attempts + 1 WHERE id = :id", {"now": tx.now(), "id": row_id})


def outbox_retry(tx: Transaction, row_id: int, next_attempt: float, error: str,
                 give_up: bool) -> None:
    tx.execute("UPDATE outbox SET state = :state, next_attempt = :next_attempt,"
               " last_error = :error, lease_until = NULL, attempts = attempts + 1"
               " WHERE id = :id",
               {"state": "failed" if give_up else "ready", "next_attempt": next_attempt,
                "error": error[:1000], "id": row_id})


def outbox_expire(tx: Transaction, row_id: int, reason: str) -> None:
    """Not sent, and never to be: it would arrive too late to mean what it says."""
    tx.execute("UPDATE outbox SET state = 'expired', last_error = :reason, lease_until = NULL"
               " WHERE id = :id", {"reason": reason[:1000], "id": row_id})


def timer_done(tx: Transaction, timer_id: int) -> None:
    tx.execute("UPDATE timers SET state = 'done', done_at = :now, lease_until = NULL"
               " WHERE id = :id", {"now": tx.now(), "id": timer_id})


def touch_health(tx: Transaction) -> None:
    """The health row: a write that proves the store takes writes."""
    tx.execute("INSERT INTO health (id, at) VALUES (1, :now) ON CONFLICT (id)"
               " DO UPDATE SET at = excluded.at", {"now": tx.now()})


def pending_outbox(tx: Transaction) -> int:
    return int(tx.execute("SELECT count(*) FROM outbox WHERE state = 'ready'")[0][0])


class SqlStore(Store):
    """The ``Store`` operations both backends share, over their ``dialect``; a backend
    brings its connections and how it runs a transaction (``run_write``, ``run_read``)."""

    dialect: Dialect

    def __init__(self, url: str, *, readonly: bool, clock: Clock = SYSTEM_CLOCK,
                 node: str = "", migrate: bool = True) -> None:
        self.url = url
        self.readonly = readonly
        self.clock = clock
        self.node = node
        self.auto_migrate = migrate
        self._schemas: dict[str, Schema] = {}
        self._forgetters: list[ForgetFn] = []  # shared with every transaction

    async def migrate(self, schemas: Sequence[Schema]) -> None:
        if self.readonly:
            return
        await self.run_write(lambda tx: self.dialect.apply_schemas(tx, schemas))
        self._remember(schemas)

    def _remember(self, schemas: Sequence[Schema]) -> None:
        for schema in schemas:
            if schema.owner not in self._schemas:
                self._schemas[schema.owner] = schema
                if schema.forget is not None:
                    self._forgetters.append(schema.forget)

    # -- outbox ---------------------------------------------------------------

    async def claim_outbox(self, owner: str, limit: int, lease: float) -> list[OutboxRow]:
        return await self.run_write(partial(claim_outbox, dialect=self.dialect, owner=owner,
                                            limit=limit, lease=lease))

    async def outbox_sent(self, *row_ids: int) -> None:
        def record(tx: Transaction) -> None:
            for row_id in row_ids:
                outbox_sent(tx, row_id)
        await self.run_write(record)

    async def outbox_retry(self, row_id: int, next_attempt: float, error: str,
                           give_up: bool) -> None:
        await self.run_write(lambda tx: outbox_retry(tx, row_id, next_attempt, error, give_up))

    async def sweep_held(self, older_than: float) -> int:
        return await self.run_write(partial(sweep_held, dialect=self.dialect,
                                            older_than=older_than))

    async def recover(self) -> int:
        """On a node-scoped backend (PostgreSQL), this node's rows only: the other
        daemons' leases and messages in flight are theirs."""
        return await self.run_write(partial(recover, dialect=self.dialect, node=self.node))

    async def pending_outbox(self) -> int:
        return await self.run_read(pending_outbox)

    # -- timers ----------------------------------------------------------------

    async def claim_timers(self, owner: str, now: float, limit: int, lease: float,
                           kinds: Sequence[str] | None = None) -> list[TimerRow]:
        if kinds is not None and not kinds:
            return []
        return await self.run_write(partial(claim_timers, dialect=self.dialect, owner=owner,
                                            now=now, limit=limit, lease=lease, kinds=kinds))

    async def timer_done(self, timer_id: int) -> None:
        await self.run_write(lambda tx: timer_done(tx, timer_id))

    async def ping(self) -> None:
        await self.run_write(touch_health)
