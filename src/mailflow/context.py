"""The message context: what stages read, share and ask for, for one message.

Stages never touch the wire or the store directly: they *ask* through the
context (add a header, rewrite recipients, queue mail, schedule a timer, give
a verdict) and the framework carries everything out in one store transaction,
only if the message is accepted. That is what makes dry runs exact.

State shared between stages is typed: the case (``ctx.case``), the triage
(``ctx.triage``, changed only through ``ctx.add_signal``), the direction, and
the facts computed once (``ctx.automatic``, ``ctx.language``,
``ctx.customer_text``: :mod:`mailflow.facts`). A plugin keeps its own
per-message state under a typed key (``ctx.stash[KEY]``, like pytest's
``StashKey``). Caches of the framework live in ``ctx.cache``, apart from what
``mailflow try`` shows. Stages meet through case events (``await
ctx.emit(...)``, :mod:`mailflow.events`) and services, not imports.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from email.header import Header as EmailHeader
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from mailflow.automatic.verdict import Automatic
from mailflow.clock import SYSTEM_CLOCK, Clock
from mailflow.events import NO_LISTENERS, CaseEvent, EventBus
from mailflow.facts import MessageFacts
from mailflow.language import LanguageGuess
from mailflow.stash import Stash, StashKey
from mailflow.triage import DEFAULT_SCALE, Scale, Signal, Triage
from mailflow.values import CaseStatus, Direction, OutgoingMail, Priority, Timer, Verdict

if TYPE_CHECKING:
    from mailflow.host import Host
    from mailflow.message import Message
    from mailflow.store.base import Transaction

__all__ = ["CaseInfo", "Decision", "Effects", "MessageContext", "Signal", "StageStore",
           "Stash", "StashKey", "TimerContext", "TimerHandler", "Triage", "WriteOp",
           "safe_header_value"]

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

    async def read_and_take(self, fn: Callable[[Transaction], tuple[T, str | None]], *,
                            peek: bool = False) -> tuple[T, int | None]:
        """``fn``'s reads and, if it names a sequence, that sequence's next value (taken
        as ``next_value`` takes it), in one trip."""


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
    store: StageStore | None = None
    clock: Clock = SYSTEM_CLOCK
    #: the message this work is for (its writes are undone if the next hop refuses it)
    queue_id: str | None = None
    #: the listeners of case events (the chain's stages')
    events: EventBus = field(default=NO_LISTENERS, repr=False)

    async def emit(self, event: CaseEvent) -> None:
        """Raise a case event: its listeners run now, on this context, and what they ask
        for commits with the rest of this work."""
        await self.events.emit(self, event)

    def queue_mail(self, mail: OutgoingMail) -> None:
        """Send mail through the outbox once this work is safely committed."""
        self.outgoing.append(mail)

    def schedule_timer(self, timer: Timer, *, replace: bool = False) -> None:
        """Fire ``timer`` at ``timer.due`` (through the handler of its kind), once this work
        is committed. ``replace``: the timers of its kind and key still to fire are
        cancelled first (a standing timer's next run, a deadline moved)."""
        if replace:
            self.cancel_timers(timer.kind, timer.key)
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
    trusted: bool = False
    dry_run: bool = False
    received_at: float = 0.0  # the clock's time when the message arrived (set if left 0)
    direction: Direction = Direction.INBOUND
    direction_reason: str = ""
    author: str | None = None  # for a reply: the agent who wrote it
    #: for a reply: the rules' name of that agent ("other": one they do not name), for
    #: statistics, which never label a series with an address
    agent_label: str = "other"
    #: for a reply: the team of the agent who wrote it (the rules' name)
    team: str | None = None
    mailbox: str = ""  # for inbound mail: the service mailbox it was written to
    case: CaseInfo | None = None
    #: the priority and the signals that make it: change it with ``add_signal`` only
    triage: Triage | None = None
    #: the thresholds of the levels (the ``prioritise`` stage's, else the defaults)
    scale: Scale = DEFAULT_SCALE
    #: facts computed once: automatic or not, language, the customer's own text
    #: (judged with the shipped signs when not given, as a test's hand-built context is)
    facts: MessageFacts = field(default=cast("MessageFacts", None), repr=False)
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
        if self.facts is None:  # a context built by hand (a test): judged as shipped
            from mailflow.automatic import SHIPPED

            self.facts = MessageFacts(self.message, SHIPPED)

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

    @property
    def automatic(self) -> Automatic | None:
        """Why the message is automatic (a bounce, an out-of-office, a list…), or None:
        decided once, by the rules' ``automatic:`` signs."""
        return self.facts.automatic

    @property
    def language(self) -> LanguageGuess:
        """The language of the customer's words, with why (computed once, when asked)."""
        return self.facts.language

    @property
    def customer_text(self) -> str:
        """The body without quoted history, signature or disclaimer (computed once)."""
        return self.facts.customer_text

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

    async def read_and_take(self, fn: Callable[[Transaction], tuple[T, str | None]],
                            ) -> tuple[T, int | None]:
        """``fn``'s reads and, if it names a sequence, that sequence's next value, in one
        trip to the store; a dry run only peeks at it."""
        if self.store is None:
            raise ValueError("no store: sequences need one")
        return await self.store.read_and_take(fn, peek=self.dry_run)

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

    def add_signal(self, name: str, weight: float, why: str = "") -> Triage:
        """Add one triage signal (a second of the same ``name`` replaces the first): the
        priority, its headers and, at the end of the chain, the case's recorded priority
        follow."""
        return self.add_signals([Signal(name, weight, why)])

    def add_signals(self, signals: Iterable[Signal]) -> Triage:
        """Add several signals at once (none: the message is triaged, score 0)."""
        base = self.triage or Triage.of((), self.scale)
        self.triage = base.adding(signals, self.scale)
        self.set_header("X-Mailflow-Priority", self.triage.priority)
        self.set_header("X-Mailflow-Score", f"{self.triage.score:g}")
        return self.triage

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
    """What a timer handler gets: the timer, the store view, the clock, the stage API, and
    the plugin's own view of the daemon (``host``) and rules section (``options``: the one
    in force, validated; None without one)."""

    timer: Timer
    store: StageStore
    host: Host | None = None
    options: Any = None


TimerHandler = Callable[[TimerContext], Awaitable[None]]
