"""The store interface: what the framework and stages persist, whatever the backend.

All state changes of one message go through one call to ``Store.write``: one transaction,
committed before the next hop is told. Implementations group concurrent calls into one
commit (one fsync for many messages) without weakening that promise: ``write`` returns
only after *its* changes are durable.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from mailflow.clock import SYSTEM_CLOCK, Clock
from mailflow.store.schema import ForgetFn, Schema
from mailflow.values import OutgoingMail, Timer

T = TypeVar("T")


class StoreUnavailable(Exception):
    """The store cannot take writes now (locked, full, read-only): tempfail, don't crash."""


@dataclass(frozen=True)
class OutboxRow:
    """One queued outgoing message, leased to a sender."""

    id: int
    kind: str
    mail_from: str
    rcpt_to: tuple[str, ...]
    data: bytes
    attempts: int
    message: str | None
    expires_at: float | None = None


@dataclass(frozen=True)
class TimerRow:
    """One due timer, leased to this process."""

    id: int
    timer: Timer
    attempts: int = 0  # failed tries of its handler so far


class TimerLost(Exception):
    """The timer is no longer this worker's to finish (cancelled meanwhile, or its lease
    expired and another took it): the transaction of its effects must not commit."""


@dataclass(frozen=True)
class TimerInfo:
    """One timer as ``mailflow timers list`` shows it."""

    id: int
    kind: str
    key: str
    due: float
    state: str
    attempts: int
    next_attempt: float | None
    last_error: str | None
    payload: dict[str, Any]


class Transaction(abc.ABC):
    """Typed writes and reads inside one transaction; SQL stays inside the store.
    ``now()`` is the store's injected clock, so what a transaction records follows the
    time the decisions were made with (a fake one in tests)."""

    clock: Clock = SYSTEM_CLOCK
    #: the daemon's node id: a message in flight is its node's to recover after a crash
    node: str = ""
    #: each owner's ``forget`` (see ``Schema``), run by ``abandon_message``
    forgetters: Sequence[ForgetFn] = ()

    @abc.abstractmethod
    def execute(self, sql: str,
                params: Mapping[str, Any] | Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows, with named ``:name`` parameters
        from a mapping (portable to PostgreSQL drivers)."""

    def now(self) -> float:
        return self.clock.now()

    # messages -----------------------------------------------------------------

    def record_message(self, queue_id: str, *, message_id: str, mail_from: str,
                       rcpt_to: Sequence[str], state: str, verdict: str,
                       received_at: float, details: dict[str, Any]) -> None:
        self.execute(
            "INSERT INTO messages (queue_id, message_id, mail_from, rcpt_to, state, verdict,"
            " received_at, updated_at, details, node) VALUES (:queue_id, :message_id,"
            " :mail_from, :rcpt_to, :state, :verdict, :received_at, :now, :details, :node)",
            {"queue_id": queue_id, "message_id": message_id, "mail_from": mail_from,
             "node": self.node,
             "rcpt_to": json.dumps(list(rcpt_to)), "state": state, "verdict": verdict,
             "received_at": received_at, "now": self.now(),
             "details": json.dumps(details, default=str)})

    def set_message_state(self, queue_id: str, state: str) -> None:
        self.execute("UPDATE messages SET state = :state, updated_at = :now"
                     " WHERE queue_id = :queue_id",
                     {"state": state, "now": self.now(), "queue_id": queue_id})

    def abandon_message(self, queue_id: str) -> None:
        """Undo a message whose client never got a 250 (it will send again).

        The clean-up for a crash between commit and reply, when the stages'
        own undo operations are gone with the process: the core drops what
        the message held back, and each owner of tables forgets its rows.
        """
        self.set_message_state(queue_id, "aborted")
        self.cancel_outbox(queue_id)
        self.drop_held_timers(queue_id)
        for forget in self.forgetters:
            forget(self, queue_id)

    # sequences ----------------------------------------------------------------

    def next_value(self, name: str) -> int:
        """Take the next value of sequence ``name`` (1, 2, …)."""
        rows = self.execute(
            "INSERT INTO sequences (name, value) VALUES (:name, 1) ON CONFLICT (name)"
            " DO UPDATE SET value = sequences.value + 1 RETURNING value", {"name": name})
        return int(rows[0][0])

    def give_back(self, name: str, value: int) -> None:
        """Return ``value`` to sequence ``name`` if it is still the last one taken (a
        later taker keeps its own: never a duplicate, a gap at worst)."""
        self.execute("UPDATE sequences SET value = value - 1 WHERE name = :name"
                     " AND value = :value", {"name": name, "value": value})

    def peek_value(self, name: str) -> int:
        """The value ``next_value`` would give, taking nothing."""
        rows = self.execute("SELECT value FROM sequences WHERE name = :name", {"name": name})
        return int(rows[0][0]) + 1 if rows else 1

    # outbox -------------------------------------------------------------------

    def queue_outbox(self, mail: OutgoingMail, *, message: str | None, held: bool) -> None:
        """Queue ``mail``; a held row waits until its message is accepted downstream."""
        now = self.now()
        self.execute(
            "INSERT INTO outbox (message, kind, state, mail_from, rcpt_to, data, created_at,"
            " next_attempt, attempts, expires_at) VALUES (:message, :kind, :state, :mail_from,"
            " :rcpt_to, :data, :now, :next_attempt, 0, :expires_at)",
            {"message": message, "kind": mail.kind, "state": "held" if held else "ready",
             "mail_from": mail.mail_from, "rcpt_to": json.dumps(list(mail.rcpt_to)),
             "data": mail.data, "now": now, "next_attempt": max(mail.not_before, now),
             "expires_at": mail.expires_at})

    def release_outbox(self, message: str) -> None:
        self._settle_held("outbox", message, "ready")

    def cancel_outbox(self, message: str) -> None:
        self._settle_held("outbox", message, "cancelled")

    def _settle_held(self, table: str, message: str, state: str) -> None:
        """Move the rows of ``table`` (outbox or timers) held for ``message`` to ``state``."""
        self.execute(f"UPDATE {table} SET state = :state WHERE message = :message"
                     " AND state = 'held'", {"state": state, "message": message})

    # timers -------------------------------------------------------------------

    def schedule_timer(self, timer: Timer, *, message: str | None, held: bool) -> None:
        self.execute(
            "INSERT INTO timers (message, kind, key, due, payload, state)"
            " VALUES (:message, :kind, :key, :due, :payload, :state)",
            {"message": message, "kind": timer.kind, "key": timer.key, "due": timer.due,
             "payload": json.dumps(timer.payload), "state": "held" if held else "active"})

    def cancel_timers(self, kind: str, key: str) -> None:
        self.execute("UPDATE timers SET state = 'cancelled' WHERE kind = :kind AND key = :key"
                     " AND state IN ('active', 'held')", {"kind": kind, "key": key})

    def ensure_timer(self, timer: Timer) -> bool:
        """Schedule ``timer`` unless one of its kind and key is still to fire (a standing
        timer, made sure of at each start); True when it was scheduled."""
        if self.execute("SELECT 1 FROM timers WHERE kind = :kind AND key = :key"
                        " AND state IN ('active', 'held')",
                        {"kind": timer.kind, "key": timer.key}):
            return False
        self.schedule_timer(timer, message=None, held=False)
        return True

    def release_timers(self, message: str) -> None:
        self._settle_held("timers", message, "active")

    def drop_held_timers(self, message: str) -> None:
        self._settle_held("timers", message, "cancelled")

    def finish_timer(self, timer_id: int, owner: str) -> None:
        """Mark a fired timer done, in the transaction of its handler's effects; raises
        ``TimerLost`` (rolling all of it back) unless it is still active and ``owner``'s."""
        rows = self.execute(
            "UPDATE timers SET state = 'done', done_at = :now, lease_until = NULL"
            " WHERE id = :id AND state = 'active' AND lease_owner = :owner RETURNING id",
            {"now": self.now(), "id": timer_id, "owner": owner})
        if not rows:
            raise TimerLost(f"timer {timer_id} is no longer active and leased to {owner}")

    def retry_timer(self, timer_id: int, *, next_attempt: float, error: str,
                    give_up: bool) -> None:
        """Its handler failed: count the attempt, and try again at ``next_attempt`` (or
        give up: state ``failed``). A timer cancelled meanwhile stays cancelled."""
        self.execute(
            "UPDATE timers SET attempts = attempts + 1, next_attempt = :next_attempt,"
            " last_error = :error, lease_until = NULL, state = :state"
            " WHERE id = :id AND state = 'active'",
            {"next_attempt": next_attempt, "error": error[:1000], "id": timer_id,
             "state": "failed" if give_up else "active"})

    def release_timer(self, timer_id: int) -> None:
        """Give a claimed timer back untouched (its kind lost its handler meanwhile)."""
        self.execute("UPDATE timers SET lease_owner = NULL, lease_until = NULL"
                     " WHERE id = :id AND state = 'active'", {"id": timer_id})

    def list_timers(self, *, states: Sequence[str] | None = ("active", "held"),
                    key: str | None = None, kind: str | None = None) -> list[TimerInfo]:
        """Timers, the earliest due first: by default those still to fire."""
        where, params = _timer_filter(states, key, kind)
        rows = self.execute(
            "SELECT id, kind, key, due, state, attempts, next_attempt, last_error, payload"
            f" FROM timers{where} ORDER BY due, id", params)
        return [TimerInfo(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8]))
                for r in rows]

    def cancel_timer_ids(self, ids: Sequence[int]) -> list[int]:
        """Cancel these timers if they are still to fire; returns those cancelled."""
        cancelled = []
        for timer_id in ids:
            if self.execute("UPDATE timers SET state = 'cancelled' WHERE id = :id"
                            " AND state IN ('active', 'held') RETURNING id", {"id": timer_id}):
                cancelled.append(timer_id)
        return cancelled

    def due_timers(self, now: float) -> dict[str, tuple[int, float]]:
        """Active timers due by ``now``, per kind: how many, and the earliest time one was
        due (for the scheduler's gauges and its 'no handler' warning)."""
        rows = self.execute(
            "SELECT kind, count(*), min(COALESCE(next_attempt, due)) FROM timers"
            " WHERE state = 'active' AND COALESCE(next_attempt, due) <= :now GROUP BY kind",
            {"now": now})
        return {str(kind): (int(count), float(earliest)) for kind, count, earliest in rows}


def _timer_filter(states: Sequence[str] | None, key: str | None,
                  kind: str | None) -> tuple[str, dict[str, Any]]:
    """The WHERE clause (and its parameters) selecting timers by state, key and kind."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if states:
        names = [f"s{i}" for i in range(len(states))]
        clauses.append(f"state IN ({', '.join(':' + n for n in names)})")
        params.update(zip(names, states, strict=True))
    if key is not None:
        clauses.append("key = :key")
        params["key"] = key
    if kind is not None:
        clauses.append("kind = :kind")
        params["kind"] = kind
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


WriteFn = Callable[[Transaction], T]


class Store(abc.ABC):
    """A persistent store; ``open`` runs the schema migrations."""

    url: str
    node: str = ""
    #: Why writes fail now (locked, full, read-only), set as soon as one fails for such a
    #: reason and cleared by the next that commits: /healthz reports it at once.
    error: str | None = None

    @abc.abstractmethod
    async def open(self, schemas: Sequence[Schema]) -> None:
        """Open, and bring every owner's tables up to date: ``schemas`` are the core's and
        the stages' and plugins' (a runtime's ``schemas``, or ``builtin_schemas()`` of
        ``mailflow.plugins`` without rules). A read-only store migrates nothing: ``()``."""

    @abc.abstractmethod
    async def migrate(self, schemas: Sequence[Schema]) -> None:
        """Apply what ``schemas`` have that the store has not (a reload added a plugin)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def run_write(self, fn: WriteFn[T]) -> T:
        """Run ``fn`` in one write transaction, committed durably before returning."""

    @abc.abstractmethod
    async def run_read(self, fn: WriteFn[T]) -> T:
        """Run ``fn`` in a read-only snapshot."""

    async def write(self, ops: Sequence[Callable[[Transaction], object]]) -> None:
        """Apply ``ops`` in one transaction: all of them or none."""
        def apply(tx: Transaction) -> None:
            for op in ops:
                op(tx)
        await self.run_write(apply)

    async def next_value(self, name: str, *, peek: bool = False) -> int:
        """The next value of sequence ``name``, in its own tiny transaction (a number
        taken is never given again, even if its message is then refused: gaps, never
        duplicates). With ``peek`` (or on a read-only store), only look."""
        if peek or getattr(self, "readonly", False):
            return await self.run_read(lambda tx: tx.peek_value(name))
        return await self.run_write(lambda tx: tx.next_value(name))

    async def read_and_take(self, fn: Callable[[Transaction], tuple[T, str | None]], *,
                            peek: bool = False) -> tuple[T, int | None]:
        """``fn``'s reads, and the next value of the sequence it names (None: none), in
        one trip to the store: for a stage whose reads say whether it needs a value (a
        new case's number). The value is taken at once, as :meth:`next_value` takes it;
        with ``peek`` (or on a read-only store), only looked at."""
        def job(tx: Transaction, looking: bool) -> tuple[T, int | None]:
            found, sequence = fn(tx)
            if sequence is None:
                return found, None
            return found, tx.peek_value(sequence) if looking else tx.next_value(sequence)

        if peek or getattr(self, "readonly", False):
            return await self.run_read(lambda tx: job(tx, True))
        return await self.run_write(lambda tx: job(tx, False))

    @abc.abstractmethod
    async def claim_outbox(self, owner: str, limit: int, lease: float) -> list[OutboxRow]:
        """Lease up to ``limit`` due rows to ``owner`` so no other sender takes them."""

    @abc.abstractmethod
    async def outbox_sent(self, *row_ids: int) -> None:
        """Record rows as sent: the next hop took them (several in one transaction)."""

    @abc.abstractmethod
    async def outbox_retry(self, row_id: int, next_attempt: float, error: str,
                           give_up: bool) -> None: ...

    @abc.abstractmethod
    async def sweep_held(self, older_than: float) -> int:
        """Cancel rows held for messages whose fate was never decided (a crash mid-relay)."""

    @abc.abstractmethod
    async def recover(self) -> int:
        """At start, with no process of this daemon running: free the leases, and mark
        the messages caught between commit and the next hop's answer ``unknown`` (the
        next hop may have them: what they owe is released, and the client's retry joins
        their case as a marked copy). Returns how many messages were in flight."""

    @abc.abstractmethod
    async def claim_timers(self, owner: str, now: float, limit: int, lease: float,
                           kinds: Sequence[str] | None = None) -> list[TimerRow]:
        """Lease up to ``limit`` active timers due by ``now`` (their next attempt, for one
        whose handler failed) to ``owner``; only of ``kinds`` when given."""

    @abc.abstractmethod
    async def timer_done(self, timer_id: int) -> None: ...

    async def timer_retry(self, timer_id: int, next_attempt: float, error: str,
                          give_up: bool) -> None:
        await self.run_write(lambda tx: tx.retry_timer(
            timer_id, next_attempt=next_attempt, error=error, give_up=give_up))

    async def timer_release(self, timer_id: int) -> None:
        await self.run_write(lambda tx: tx.release_timer(timer_id))

    async def due_timers(self, now: float) -> dict[str, tuple[int, float]]:
        return await self.run_read(lambda tx: tx.due_timers(now))

    async def claim_node(self) -> None:
        """Hold this daemon's node id for its life; refused while another daemon holds it
        (a shared store only: one SQLite file has one daemon)."""
        return None

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store can be written now."""

    @abc.abstractmethod
    async def pending_outbox(self) -> int: ...
