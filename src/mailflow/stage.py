"""What a chain stage is, and the context it works on.

A stage is a plain object with a ``name``, a ``description``, an ``Options``
model for its rules section and ``async def process(ctx)``. It never touches
the wire or the store directly: it *asks* through the context (add a header,
rewrite recipients, queue mail, schedule a timer, give a verdict) and the
framework carries everything out in one store transaction, only if the
message is accepted. That is what makes dry runs (``mailflow try``) exact.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.header import Header as EmailHeader
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from mailflow.config import Model

if TYPE_CHECKING:
    from mailflow.config import Settings
    from mailflow.message import Message
    from mailflow.metrics import MetricFactory
    from mailflow.rules import RuleSet
    from mailflow.store.base import Store, Transaction
    from mailflow.textmatch import TermIndex


class Verdict(enum.StrEnum):
    """What happens to the message after the chain."""

    DELIVER = "deliver"
    DISCARD = "discard"
    REJECT = "reject"
    TEMPFAIL = "tempfail"
    QUARANTINE = "quarantine"


FailurePolicy = Literal["tempfail", "skip"]


class StageOptions(Model):
    """Options every stage accepts in its rules section."""

    timeout: float = Field(10.0, gt=0, description="seconds before the stage is abandoned")
    on_error: FailurePolicy | None = Field(
        None, description="tempfail the message (default) or skip the stage when it fails")


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


@dataclass(frozen=True)
class OutgoingMail:
    """A message mailflow writes itself (acknowledgement, forward, reminder)."""

    kind: str
    rcpt_to: tuple[str, ...]
    data: bytes
    mail_from: str = ""  # null sender by default: no robot answers it
    not_before: float = 0.0


@dataclass(frozen=True)
class Timer:
    """A follow-up the scheduler fires later, even across restarts."""

    kind: str
    due: float
    key: str  # what the timer is about (a case number…); cancel by kind and key
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decision:
    """What one stage decided, for logs, metrics and ``mailflow try``."""

    stage: str
    outcome: str = "ok"  # ok | verdict | error | timeout | skipped
    verdict: Verdict | None = None
    reason: str = ""
    notes: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


WriteOp = Callable[["Transaction"], object]


@dataclass
class MessageContext:
    """Everything a stage may read and ask for, for one message."""

    message: Message
    queue_id: str
    recipients: list[str]
    store: Store | None
    trusted: bool = False
    dry_run: bool = False
    received_at: float = field(default_factory=time.time)
    added_headers: list[tuple[str, str]] = field(default_factory=list)
    outgoing: list[OutgoingMail] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    cancelled_timers: list[tuple[str, str]] = field(default_factory=list)
    writes: list[tuple[WriteOp, WriteOp | None]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    verdict: Verdict = Verdict.DELIVER
    reply: str | None = None  # an SMTP reply chosen by a stage for reject/tempfail
    attributes: dict[str, Any] = field(default_factory=dict)  # shared between stages
    subject_tag: str | None = None  # e.g. "[SAV-…]": prefixed to the relayed Subject
    current: Decision | None = None

    # -- what stages ask for ------------------------------------------------

    def set_header(self, name: str, value: str) -> None:
        """Add a header to the relayed message (replacing one mailflow added before)."""
        if not _HEADER_NAME.fullmatch(name):  # "$" would let a final "\n" through
            raise ValueError(f"invalid header name {name!r}")
        self.added_headers = [(n, v) for n, v in self.added_headers if n.lower() != name.lower()]
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

    def queue_mail(self, mail: OutgoingMail) -> None:
        """Send mail through the outbox once this message is safely accepted."""
        self.outgoing.append(mail)

    def schedule_timer(self, timer: Timer) -> None:
        self.timers.append(timer)

    def cancel_timers(self, kind: str, key: str) -> None:
        self.cancelled_timers.append((kind, key))

    def write(self, op: WriteOp, undo: WriteOp | None = None) -> None:
        """Run ``op`` inside the message's one store transaction.

        ``undo`` runs instead if the next hop then refuses the message, so a
        message the client will send again leaves nothing half-done behind.
        """
        self.writes.append((op, undo))

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


class Stage:
    """Base class for chain stages; subclass it in a plugin.

    Class attributes: ``name`` (as written in ``chain:``), ``description``
    (one line), ``Options`` (a pydantic model for the rules section),
    ``on_error`` (the default failure policy).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type[StageOptions]] = StageOptions
    on_error: ClassVar[FailurePolicy] = "tempfail"
    #: stages that must run earlier in the chain for this one to make sense
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: StageOptions, env: StageEnv) -> None:
        self.options = options
        self.env = env

    @property
    def timeout(self) -> float:
        return self.options.timeout

    @property
    def failure_policy(self) -> FailurePolicy:
        return self.options.on_error or self.on_error

    async def process(self, ctx: MessageContext) -> None:
        raise NotImplementedError


def _term_index() -> TermIndex:
    from mailflow.textmatch import TermIndex

    return TermIndex()


@dataclass(frozen=True)
class StageEnv:
    """What a stage gets at load time: the rules and settings it may consult."""

    rules: RuleSet
    settings: Settings
    metrics: MetricFactory
    #: every stage's keywords in one automaton: each message's text is scanned once
    terms: TermIndex = field(default_factory=lambda: _term_index())
