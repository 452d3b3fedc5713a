"""The store interface: what the framework and stages persist, whatever the backend.

All state changes of one message go through one call to ``Store.write``:
one transaction, committed before the next hop is told. Implementations
group concurrent calls into one commit (one fsync for many messages) without
weakening that promise: ``write`` returns only after *its* changes are durable.
"""

from __future__ import annotations

import abc
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs

from mailflow.clock import SYSTEM_CLOCK, Clock
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


@dataclass(frozen=True)
class TimerRow:
    """One due timer, leased to this process."""

    id: int
    timer: Timer


class Transaction(abc.ABC):
    """Typed writes and reads inside one transaction; SQL stays inside the store."""

    @abc.abstractmethod
    def execute(self, sql: str,
                params: Mapping[str, Any] | Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows. Stages and plugins write named
        ``:name`` parameters with a mapping (portable to PostgreSQL drivers)."""

    # messages -----------------------------------------------------------------

    def record_message(self, queue_id: str, *, message_id: str, mail_from: str,
                       rcpt_to: Sequence[str], state: str, verdict: str,
                       received_at: float, details: dict[str, Any]) -> None:
        self.execute(
            "INSERT INTO messages (queue_id, message_id, mail_from, rcpt_to, state, verdict,"
            " received_at, updated_at, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (queue_id, message_id, mail_from, json.dumps(list(rcpt_to)), state, verdict,
             received_at, time.time(), json.dumps(details, default=str)))

    def set_message_state(self, queue_id: str, state: str) -> None:
        self.execute("UPDATE messages SET state = ?, updated_at = ? WHERE queue_id = ?",
                     (state, time.time(), queue_id))

    def abandon_message(self, queue_id: str) -> None:
        """Undo a message whose client never got a 250 (it will send again).

        Generic clean-up for a crash between commit and reply, when the
        stages' own undo operations are gone with the process.
        """
        self.set_message_state(queue_id, "aborted")
        self.cancel_outbox(queue_id)
        self.drop_held_timers(queue_id)
        self.execute("DELETE FROM cases WHERE number IN (SELECT case_number FROM case_messages"
                     " WHERE queue_id = ? AND role = 'customer') AND NOT EXISTS (SELECT 1 FROM"
                     " case_messages m WHERE m.case_number = cases.number AND m.queue_id <> ?)",
                     (queue_id, queue_id))
        for table in ("case_messages", "fingerprints", "acks"):
            self.execute(f"DELETE FROM {table} WHERE queue_id = ?", (queue_id,))

    # sequences ----------------------------------------------------------------

    def next_value(self, name: str) -> int:
        """Take the next value of sequence ``name`` (1, 2, …)."""
        rows = self.execute(
            "INSERT INTO sequences (name, value) VALUES (:name, 1) ON CONFLICT (name)"
            " DO UPDATE SET value = sequences.value + 1 RETURNING value", {"name": name})
        return int(rows[0][0])

    def peek_value(self, name: str) -> int:
        """The value ``next_value`` would give, taking nothing."""
        rows = self.execute("SELECT value FROM sequences WHERE name = :name", {"name": name})
        return int(rows[0][0]) + 1 if rows else 1

    # outbox -------------------------------------------------------------------

    def queue_outbox(self, mail: OutgoingMail, *, message: str | None, held: bool) -> None:
        """Queue ``mail``; a held row waits until its message is accepted downstream."""
        self.execute(
            "INSERT INTO outbox (message, kind, state, mail_from, rcpt_to, data, created_at,"
            " next_attempt, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
            (message, mail.kind, "held" if held else "ready", mail.mail_from,
             json.dumps(list(mail.rcpt_to)), mail.data, time.time(),
             max(mail.not_before, time.time())))

    def release_outbox(self, message: str) -> None:
        self.execute("UPDATE outbox SET state = 'ready' WHERE message = ? AND state = 'held'",
                     (message,))

    def cancel_outbox(self, message: str) -> None:
        self.execute("UPDATE outbox SET state = 'cancelled' WHERE message = ? AND state = 'held'",
                     (message,))

    # timers -------------------------------------------------------------------

    def schedule_timer(self, timer: Timer, *, message: str | None, held: bool) -> None:
        self.execute(
            "INSERT INTO timers (message, kind, key, due, payload, state)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (message, timer.kind, timer.key, timer.due, json.dumps(timer.payload),
             "held" if held else "active"))

    def cancel_timers(self, kind: str, key: str) -> None:
        self.execute("UPDATE timers SET state = 'cancelled' WHERE kind = ? AND key = ?"
                     " AND state IN ('active', 'held')", (kind, key))

    def release_timers(self, message: str) -> None:
        self.execute("UPDATE timers SET state = 'active' WHERE message = ? AND state = 'held'",
                     (message,))

    def drop_held_timers(self, message: str) -> None:
        self.execute("UPDATE timers SET state = 'cancelled' WHERE message = ? AND state = 'held'",
                     (message,))


WriteFn = Callable[[Transaction], T]


class Store(abc.ABC):
    """A persistent store; ``open`` runs the schema migrations."""

    url: str
    #: Why writes fail now (locked, full, read-only), set as soon as one fails for such a
    #: reason and cleared by the next that commits: /healthz reports it at once.
    error: str | None = None

    @abc.abstractmethod
    async def open(self) -> None: ...

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

    @abc.abstractmethod
    async def claim_outbox(self, owner: str, limit: int, lease: float) -> list[OutboxRow]:
        """Lease up to ``limit`` due rows to ``owner`` so no other sender takes them."""

    @abc.abstractmethod
    async def outbox_sent(self, row_id: int) -> None: ...

    @abc.abstractmethod
    async def outbox_retry(self, row_id: int, next_attempt: float, error: str,
                           give_up: bool) -> None: ...

    @abc.abstractmethod
    async def sweep_held(self, older_than: float) -> int:
        """Cancel rows held for messages whose fate was never decided (a crash mid-relay)."""

    @abc.abstractmethod
    async def recover(self) -> int:
        """At start, with no process of this daemon running: abandon what was in flight
        (pending messages, leases). Returns how many messages were abandoned."""

    @abc.abstractmethod
    async def claim_timers(self, owner: str, now: float, limit: int,
                           lease: float) -> list[TimerRow]: ...

    @abc.abstractmethod
    async def timer_done(self, timer_id: int) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store can be written now."""

    @abc.abstractmethod
    async def pending_outbox(self) -> int: ...


def open_store(url: str, *, readonly: bool = False, clock: Clock = SYSTEM_CLOCK) -> Store:
    """The store for ``url``: ``sqlite:///PATH[?busy_timeout=SECONDS]`` (the embedded
    default). ``readonly`` is the dry-run mode of ``mailflow try``: reads, never writes."""
    if url.startswith("sqlite:///"):
        from mailflow.store.sqlite import SqliteStore

        path, _, query = url.removeprefix("sqlite:///").partition("?")
        options = parse_qs(query)
        try:
            busy = float(options.get("busy_timeout", ["5"])[0])
        except ValueError:
            raise ValueError(f"'{url}': busy_timeout is a number of seconds") from None
        return SqliteStore(path or "mailflow.sqlite3", readonly=readonly, busy_timeout=busy,
                           clock=clock)
    raise ValueError(f"unsupported store '{url}' (use sqlite:///PATH)")
