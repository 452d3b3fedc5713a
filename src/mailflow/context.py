"""The message context: what stages read, share and ask for, for one message.

Stages never touch the wire or the store directly: they *ask* through the
context (add a header, rewrite recipients, queue mail, schedule a timer, give
a verdict) and the framework carries everything out in one store transaction,
only if the message is accepted. That is what makes dry runs exact.

State shared between stages is typed: the case (``ctx.case``), the triage
result (``ctx.triage``), the direction. A plugin keeps its own per-message
state under a typed key (``ctx.stash[KEY]``, like pytest's ``StashKey``).
Caches of the framework live in ``ctx.cache``, apart from what
``mailflow try`` shows.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from email.header import Header as EmailHeader
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast, overload

from mailflow.clock import SYSTEM_CLOCK, Clock
from mailflow.values import CaseStatus, Direction, OutgoingMail, Priority, Timer, Verdict

if TYPE_CHECKING:
    from mailflow.message import Message
    from mailflow.store.base import Transaction

T = TypeVar("T")
WriteOp = Callable[["Transaction"], object]


def _nothing(tx: Transaction) -> None:
    """The write of a value already taken: only its undo (give it back) matters."""


class StageStore(Protocol):
    """What a stage may do with the store itself: read, and take sequence values.

    Writes go through ``ctx.write``: committed with the message, or not at all.
    """

    async def run_read(self, fn: Callable[[Transaction], T]) -> T: ...

    async def next_value(self, name: str, *, peek: bool = False) -> int:
        """The next value of sequence ``name`` (1, 2, …), taken at once and never given
        twice; with ``peek``, the value the next call would give, taking nothing."""


class StashKey(Generic[T]):
    """A typed key into a :class:`Stash`; create one per module, at import time.

    ``name`` (optional) is what ``mailflow try`` shows the value under.
    """

    __slots__ = ("name",)

    def __init__(self, name: str = "") -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"StashKey({self.name!r})" if self.name else super().__repr__()


class Stash:
    """Per-message state of plugins, under typed keys. Store values you replace, not mutate:
    the chain restores the stash as it was when a stage fails."""

    __slots__ = ("_items",)

    def __init__(self, items: dict[StashKey[Any], Any] | None = None) -> None:
        self._items: dict[StashKey[Any], Any] = dict(items or {})

    def __getitem__(self, key: StashKey[T]) -> T:
        return cast(T, self._items[key])

    def __setitem__(self, key: StashKey[T], value: T) -> None:
        self._items[key] = value

    def __delitem__(self, key: StashKey[Any]) -> None:
        del self._items[key]

    def __contains__(self, key: StashKey[Any]) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[StashKey[Any]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def get(self, key: StashKey[T]) -> T | None: ...

    @overload
    def get(self, key: StashKey[T], default: T) -> T: ...

    def get(self, key: StashKey[T], default: T | None = None) -> T | None:
        return cast("T | None", self._items.get(key, default))

    def setdefault(self, key: StashKey[T], default: T) -> T:
        return cast(T, self._items.setdefault(key, default))

    def copy(self) -> Stash:
        return Stash(self._items)

    def named(self) -> dict[str, Any]:
        """The entries whose key has a name, for ``mailflow try``."""
        return {k.name: v for k, v in self._items.items() if k.name}


@dataclass(frozen=True)
class CaseInfo:
    """The case a message belongs to, as the ``number`` stage found it.

    Frozen: a stage that changes it sets a new one (``ctx.update_case``), so a
    failed stage's change is undone with the rest.
    """

    number: str
    status: CaseStatus
    customer: str  # lower-case address of the person behind the message
    customer_name: str = ""
    mailbox: str = ""  # the local address written to
    route: str | None = None
    assignee: str | None = None
    parent: str | None = None  # the closed case a new one continues
    promised_at: float | None = None

    @property
    def duplicate_of(self) -> str | None:
        return self.number if self.status.is_duplicate else None


@dataclass(frozen=True)
class Triage:
    """The priority level and what scored it (set by ``prioritise``)."""

    priority: Priority
    score: float = 0.0


@dataclass
class Decision:
    """What one stage decided, for logs, metrics and ``mailflow try``."""

    stage: str
    outcome: str = "ok"  # ok | verdict | error | timeout | skipped
    verdict: Verdict | None = None
    reason: str = ""
    notes: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext: printable, no colon (fullmatch)


def safe_header_value(value: str, name: str = "X") -> str:
    """One header line, whatever the value holds: no CR/LF can start a new header.

    Control characters become spaces; non-ASCII is RFC 2047-encoded and the
    result folded at 78 columns by the stdlib, never by string surgery.
    """
    flat = re.sub(r"[\x00-\x1f\x7f]+", " ", value).strip()
    if flat.isascii() and len(flat) + len(name) + 2 <= 998:
        return flat
    return EmailHeader(flat, "utf-8", header_name=name).encode(linesep="\r\n")


@dataclass
class Effects:
    """What a stage (or a timer handler) asks for; the framework commits it, all or nothing."""

    outgoing: list[OutgoingMail] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    cancelled_timers: list[tuple[str, str]] = field(default_factory=list)
    writes: list[tuple[WriteOp, WriteOp | None]] = field(default_factory=list)

    def queue_mail(self, mail: OutgoingMail) -> None:
        """Send mail through the outbox once this work is safely committed."""
        self.outgoing.append(mail)

    def schedule_timer(self, timer: Timer) -> None:
        self.timers.append(timer)

    def cancel_timers(self, kind: str, key: str) -> None:
        self.cancelled_timers.append((kind, key))

    def write(self, op: WriteOp, undo: WriteOp | None = None) -> None:
        """Run ``op`` inside the one store transaction of this work.

        ``undo`` runs instead if the next hop then refuses the message, so a
        message the client will send again leaves nothing half-done behind.
        """
        self.writes.append((op, undo))

    def commit_ops(self, *, message: str | None, held: bool) -> list[WriteOp]:
        """Everything asked for, as the operations of one store transaction: the writes,
        the mail (``held`` until ``message`` is accepted downstream), the cancelled and
        the new timers. The one way a message's or a timer's effects are committed."""
        ops: list[WriteOp] = [op for op, _ in self.writes]
        ops.extend(partial(_queue_mail, mail=m, message=message, held=held)
                   for m in self.outgoing)
        ops.extend(partial(_cancel_timers, kind=k, key=y) for k, y in self.cancelled_timers)
        ops.extend(partial(_schedule_timer, timer=t, message=message, held=held)
                   for t in self.timers)
        return ops


def _queue_mail(tx: Transaction, *, mail: OutgoingMail, message: str | None,
                held: bool) -> None:
    tx.queue_outbox(mail, message=message, held=held)


def _cancel_timers(tx: Transaction, *, kind: str, key: str) -> None:
    tx.cancel_timers(kind, key)


def _schedule_timer(tx: Transaction, *, timer: Timer, message: str | None,
                    held: bool) -> None:
    tx.schedule_timer(timer, message=message, held=held)


@dataclass(kw_only=True)
class MessageContext(Effects):
    """Everything a stage may read and ask for, for one message."""

    message: Message
    queue_id: str
    recipients: list[str] = field(default_factory=list)
    store: StageStore | None = None
    trusted: bool = False
    dry_run: bool = False
    clock: Clock = SYSTEM_CLOCK
    received_at: float = 0.0  # the clock's time when the message arrived (set if left 0)
    direction: Direction = Direction.INBOUND
    direction_reason: str = ""
    author: str | None = None  # for a reply: the agent who wrote it
    #: for a reply: the rules' name of that agent ("other": one they do not name), for
    #: statistics, which never label a series with an address
    agent_label: str = "other"
    mailbox: str = ""  # for inbound mail: the service mailbox it was written to
    case: CaseInfo | None = None
    triage: Triage | None = None
    stash: Stash = field(default_factory=Stash)
    #: the framework's own per-message caches (folded text, keyword scans): not shown
    cache: Stash = field(default_factory=Stash, repr=False)
    added_headers: list[tuple[str, str]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    verdict: Verdict = Verdict.DELIVER
    reply: str | None = None  # an SMTP reply chosen by a stage for reject/tempfail
    subject_tag: str | None = None  # e.g. "[SAV-…]": prefixed to the relayed Subject
    current: Decision | None = None

    def __post_init__(self) -> None:
        if not self.received_at:
            self.received_at = self.clock.now()

    # -- what stages read ---------------------------------------------------

    @property
    def customer(self) -> str:
        """The person behind the message: the case's customer, else the envelope sender."""
        if self.case is not None and self.case.customer:
            return self.case.customer
        return self.message.envelope.mail_from.lower()

    @property
    def priority(self) -> Priority:
        return self.triage.priority if self.triage is not None else "normal"

    async def next_value(self, name: str, *, give_back: bool = False) -> int:
        """The next value of sequence ``name``; a dry run only peeks at it.

        With ``give_back`` (a routing turn), a message then refused or tempfailed
        returns the value, so its retry takes the same turn again.
        """
        if self.store is None:
            raise ValueError("no store: sequences need one")
        value = await self.store.next_value(name, peek=self.dry_run)
        if give_back and not self.dry_run:
            self.write(_nothing, undo=lambda tx: tx.give_back(name, value))
        return value

    def update_case(self, **changes: Any) -> CaseInfo:
        """Replace fields of ``ctx.case`` (undone with the rest if the stage fails)."""
        if self.case is None:
            raise ValueError("no case: put 'number' earlier in the chain")
        self.case = replace(self.case, **changes)
        return self.case

    # -- what stages ask for ------------------------------------------------

    def set_header(self, name: str, value: str) -> None:
        """Add a header to the relayed message (replacing one mailflow added before)."""
        if not _HEADER_NAME.fullmatch(name):  # "$" would let a final "\n" through
            raise ValueError(f"invalid header name {name!r}")
        lower = name.lower()
        self.added_headers = [(n, v) for n, v in self.added_headers if n.lower() != lower]
        self.added_headers.append((name, safe_header_value(value, name)))

    def header(self, name: str) -> str | None:
        """A header mailflow added in this run, if any."""
        for n, v in self.added_headers:
            if n.lower() == name.lower():
                return v
        return None

    def set_recipients(self, recipients: list[str]) -> None:
        """Rewrite the envelope recipients the next hop will see."""
        if not recipients:
            raise ValueError("a message needs at least one recipient; use discard instead")
        self.recipients = list(dict.fromkeys(recipients))

    def note(self, **details: Any) -> None:
        """Explain a decision: shown by ``mailflow try`` and logged."""
        if self.current is not None:
            self.current.notes.update(details)

    def set_verdict(self, verdict: Verdict, reason: str = "", reply: str | None = None) -> None:
        """Decide the message's fate; later stages still see it and may refine it."""
        self.verdict = verdict
        self.reply = reply
        if self.current is not None:
            self.current.outcome = "verdict"
            self.current.verdict = verdict
            self.current.reason = reason


@dataclass(kw_only=True)
class TimerContext(Effects):
    """What a timer handler gets: the timer, the store view, the clock, and the stage API."""

    timer: Timer
    store: StageStore
    clock: Clock = SYSTEM_CLOCK


TimerHandler = Callable[[TimerContext], Awaitable[None]]
