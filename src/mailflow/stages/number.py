"""Stage ``number``: give every new conversation a case number; join follow-ups to theirs.

Which case a message belongs to, in order:

1. its own Message-ID is already in a case: a copy (``deduplicate`` decides its fate);
2. ``In-Reply-To`` / ``References`` name any message of a case (the customer's,
   our acknowledgement, a forward to an expert): a follow-up;
3. a case number in the Subject, whatever the reply prefixes, *if* its check
   digit is right and the sender took part in that case: a follow-up;
4. the same sender sent the same text (quotes and signature ignored) within
   ``resend_window_hours``: a resend, treated as a copy;
5. otherwise a new case, its number allocated atomically in the store.

A reply to a closed case reopens it, or opens a new case linked to it
(``on_closed``, or ``on_closed_by_route`` for the route the case took);
automatic mail (an out-of-office, a bounce) joins it and leaves it closed.
Adds ``X-Mailflow-Case``; with ``tag_subject`` the relayed Subject gets
``[NUMBER]`` too (off by default: it breaks DKIM signatures).

The stage owns the cases' records: it raises ``CaseOpened`` and
``CaseReopened`` (:mod:`mailflow.events`), and records the priority, route and
assignee each customer message ends its chain with (``CaseSettled``: a
follow-up may make a case more urgent, never less), whichever stage set them.

Attributes set for later stages: ``case``, ``case_status`` (new, followup,
reopened, copy, resend), ``duplicate_of``, ``customer``, ``customer_name``,
``mailbox`` (the local address written to).

Configuration (rules section ``number``)::

    number:
      prefix: CASE                   # default prefix
      prefix_by_recipient: {sav@example.com: SAV}
      date_format: "%Y%m%d"          # "" for none
      digits: 5
      timezone: Europe/Paris         # for the date part; unset: the default calendar's
      form_senders: [web@example.com]  # customer address from Reply-To / form field
      resend_window_hours: 24
      on_closed: reopen              # or: new (a new case linked to the closed one)
      on_closed_by_route: {sales: new}  # per route of the closed case
      tag_subject: false

Metrics: ``mailflow_cases_total{status}``. Log events: ``case_number_refused``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from functools import partial
from typing import Any, Literal
from zoneinfo import ZoneInfo

import structlog
from pydantic import Field, field_validator

from mailflow import cases
from mailflow.config import TimeZoneName
from mailflow.context import Effects
from mailflow.events import CaseEvent, CaseOpened, CaseReopened, CaseSettled, Listener
from mailflow.facts import EMPTY
from mailflow.hookspecs import hookimpl
from mailflow.host import Purge
from mailflow.message import Message
from mailflow.retention import of_closed_cases
from mailflow.stage import (
    CaseInfo,
    CaseStatus,
    Direction,
    KnownLabels,
    MessageContext,
    Stage,
    StageEnv,
    StageOptions,
)
from mailflow.store import Transaction
from mailflow.store.schema import Schema
from mailflow.values import PRIORITIES

log = structlog.get_logger("mailflow.stages.number")

_FORM_EMAIL = re.compile(r"^\s*(?:e-?mail|courriel|adresse e-?mail|email address)\s*:\s*"
                         r"<?([^\s<>@]+@[^\s<>@]+\.[^\s<>@]+)>?\s*$",
                         re.IGNORECASE | re.MULTILINE)
_FORM_NAME = re.compile(r"^\s*(?:nom|name|nom complet|full name)\s*:\s*(.+?)\s*$",
                        re.IGNORECASE | re.MULTILINE)
_PREFIX = re.compile(r"^[A-Z][A-Z0-9]{0,9}$")


class NumberOptions(StageOptions):
    prefix: str = "CASE"
    prefix_by_recipient: dict[str, str] = Field(default_factory=dict)
    date_format: str = "%Y%m%d"
    digits: int = Field(5, ge=3, le=9)
    timezone: TimeZoneName | None = None  # unset: the default calendar's (calendars:)
    form_senders: tuple[str, ...] = ()
    resend_window_hours: float = Field(24.0, ge=0)
    on_closed: Literal["reopen", "new"] = "reopen"
    on_closed_by_route: dict[str, Literal["reopen", "new"]] = Field(default_factory=dict)
    tag_subject: bool = False

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _PREFIX.match(value):
            raise ValueError(f"'{value}' must be 1-10 capital letters or digits, like SAV")
        return value

    @field_validator("prefix_by_recipient")
    @classmethod
    def _prefixes(cls, value: dict[str, str]) -> dict[str, str]:
        for prefix in value.values():
            cls._prefix(prefix)
        return {k.lower(): v for k, v in value.items()}

    @field_validator("form_senders")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.lower() for v in value)


def customer_of(message: Message, form_senders: Iterable[str]) -> tuple[str, str]:
    """(address, name) of the person behind the message; a web form names them inside."""
    sender = message.envelope.mail_from.lower()
    from_addresses = message.addresses("From")
    forms = set(form_senders)
    if forms and (sender in forms or (from_addresses and from_addresses[0] in forms)):
        match = _FORM_NAME.search(message.text)
        form_name = match.group(1)[:100] if match else ""
        reply_to = message.addresses("Reply-To")
        if reply_to:
            return reply_to[0], form_name
        match = _FORM_EMAIL.search(message.text)
        if match:
            return match.group(1).lower(), form_name
        return sender, form_name
    customer = sender or (from_addresses[0] if from_addresses else "")
    return customer, _display_name(message, customer)


def _display_name(message: Message, customer: str) -> str:
    """The From name to greet the customer by; their address when the name cannot be
    decoded cleanly, so a greeting never shows ``=?UTF-8?B?…`` or a control character."""
    name = message.display_name("From")
    if name is None:
        return message.envelope.mail_from or customer
    return " ".join(name.split())[:100]


class NumberStage(Stage[NumberOptions]):
    name = "number"
    description = "number new cases; attach follow-ups and copies to their case"
    directions = frozenset({Direction.INBOUND})

    def __init__(self, options: NumberOptions, env: StageEnv) -> None:
        super().__init__(options, env)
        self.zone = (ZoneInfo(options.timezone) if options.timezone
                     else env.calendars.default.zone)
        self.format = cases.NumberFormat(
            prefixes=tuple({options.prefix, *options.prefix_by_recipient.values()}),
            date_format=options.date_format, digits=options.digits)
        self.pattern = self.format.pattern()
        self.counter = env.metrics.counter("mailflow_cases_total",
                                           "Messages by how they joined a case", ["status"])

    def _mailbox(self, ctx: MessageContext) -> str:
        """The service mailbox written to (as the direction found it), else the first
        local recipient: never an outside address, which the ack would be written from."""
        if ctx.mailbox:
            return ctx.mailbox
        for rcpt in ctx.message.envelope.rcpt_to:
            if self.env.rules.is_local(rcpt):
                return rcpt.lower()
        return ""

    async def process(self, ctx: MessageContext) -> None:
        message = ctx.message
        assert ctx.store is not None
        if ctx.facts.empty:  # nothing to answer: relayed and counted, no case, no mail
            ctx.note(case=None, because=EMPTY)
            return
        customer, customer_name = customer_of(message, self.options.form_senders)
        mailbox = self._mailbox(ctx)
        digest = cases.own_fingerprint(message.customer_text.text)
        since = ctx.received_at - self.options.resend_window_hours * 3600
        prefix = self.options.prefix_by_recipient.get(mailbox, self.options.prefix)
        now = datetime.fromtimestamp(ctx.received_at, self.zone)
        # one trip to the store: a new case's number is taken by the job that found it
        # needs one (committed at once: gaps, never duplicates)
        (status, number, closed, route), taken = await ctx.read_and_take(partial(
            self._find_or_open, ctx=ctx, customer=customer, digest=digest, since=since,
            sequence=self.format.sequence_name(prefix, now)))
        parent = None
        # an out-of-office or a bounce joins a closed case but does not reopen it
        if number is not None and status is CaseStatus.FOLLOWUP and closed and (
                ctx.automatic is None):
            if self._reopens(route):
                status = CaseStatus.REOPENED
                ctx.write(partial(cases.update_case, number=number, status="open"),
                          undo=partial(cases.update_case, number=number, status="closed"))
            else:
                parent, number = number, None
        if number is None:
            assert taken is not None
            number, status = self.format.format(prefix, now, taken), CaseStatus.NEW
            ctx.write(partial(cases.insert_case, number=number, customer=customer,
                              customer_name=customer_name, subject=message.subject,
                              mailbox=mailbox, parent=parent),
                      undo=partial(cases.delete_case, number=number))
        ctx.case = CaseInfo(number=number, status=status, customer=customer,
                            customer_name=customer_name, mailbox=mailbox, parent=parent)
        if status is CaseStatus.NEW:
            await ctx.emit(CaseOpened(number, ctx.received_at, customer, mailbox, parent))
        elif status is CaseStatus.REOPENED:
            await ctx.emit(CaseReopened(number, ctx.received_at))
        self._record(ctx, digest)
        ctx.set_header("X-Mailflow-Case", number)
        if self.options.tag_subject:
            ctx.subject_tag = f"[{number}]"
        self.counter.labels(status=status.value).inc()
        ctx.note(case=number, status=status.value, customer=customer)

    def listeners(self) -> Iterable[tuple[type[CaseEvent], Listener]]:
        return [(CaseSettled, _settled)]

    def known_labels(self) -> Iterable[KnownLabels]:
        return [KnownLabels.of("mailflow_cases_total", status=[
            s.value for s in CaseStatus if s is not CaseStatus.REPLY])]

    def _record(self, ctx: MessageContext, digest: str) -> None:
        """Link the message to its case, and remember its text for resend detection."""
        assert ctx.case is not None
        case, message = ctx.case, ctx.message
        role = "customer" if case.status.from_customer else "duplicate"
        ctx.write(partial(cases.add_case_message, number=case.number,
                          message_id=message.message_id, role=role,
                          sender=message.envelope.mail_from or case.customer,
                          queue_id=ctx.queue_id),
                  undo=partial(cases.remove_case_messages, queue_id=ctx.queue_id))
        if case.status is CaseStatus.NEW and digest:
            ctx.write(partial(cases.add_fingerprint, sender=case.customer, digest=digest,
                              number=case.number, queue_id=ctx.queue_id),
                      undo=partial(cases.remove_fingerprints, queue_id=ctx.queue_id))

    def _find_or_open(self, tx: Transaction, *, ctx: MessageContext, customer: str,
                      digest: str, since: float, sequence: str,
                      ) -> tuple[tuple[CaseStatus, str | None, bool, str | None], str | None]:
        """What :meth:`_find` finds, and ``sequence`` if the message opens a case (it
        joins none, or a closed one it does not reopen): its number is taken then."""
        found = status, number, closed, route = self._find(tx, ctx=ctx, customer=customer,
                                                           digest=digest, since=since)
        opens = number is None or (status is CaseStatus.FOLLOWUP and closed
                                   and ctx.automatic is None and not self._reopens(route))
        return found, sequence if opens else None

    def _find(self, tx: Transaction, *, ctx: MessageContext, customer: str, digest: str,
              since: float) -> tuple[CaseStatus, str | None, bool, str | None]:
        """(status, case, closed, route) from the store; all reads in one snapshot."""
        message = ctx.message
        seen = cases.customer_message(tx, message.message_id)
        if seen:
            case, state = seen
            # the earlier copy may never have arrived: this one is delivered all the same
            return CaseStatus.RETRY if state == "unknown" else CaseStatus.COPY, case, False, None
        ids = [*message.message_ids("References"), *message.message_ids("In-Reply-To")]
        number = cases.case_of_references(tx, ids) if ids else None
        if number is None:
            number = self._from_subject(tx, ctx, customer)
        if number is not None:
            row = cases.get_case(tx, number)
            closed = bool(row and not row.open)
            return CaseStatus.FOLLOWUP, number, closed, row.route if row else None
        if digest and self.options.resend_window_hours:
            resent = cases.find_resend(tx, customer, digest, since)
            if resent:
                return CaseStatus.RESEND, resent, False, None
        return CaseStatus.NEW, None, False, None

    def _from_subject(self, tx: Transaction, ctx: MessageContext, customer: str) -> str | None:
        for candidate in cases.first_match([ctx.message.subject], self.pattern):
            reason = None
            if not self.format.valid(candidate):
                reason = "wrong check digit"
            elif cases.get_case(tx, candidate) is None:
                reason = "no such case"
            elif not (cases.took_part(tx, candidate, customer)
                      or cases.took_part(tx, candidate, ctx.message.envelope.mail_from)):
                reason = "sender never took part in that case"
            if reason is None:
                return candidate
            log.info("case_number_refused", queue_id=ctx.queue_id, number=candidate,
                     reason=reason, sender=customer)
            ctx.note(refused_number=candidate, refused_because=reason)
        return None

    def _reopens(self, route: str | None) -> bool:
        """Whether a customer's follow-up reopens a case closed on ``route`` (else it
        opens a new case linked to it). An out-of-office or a bounce never reopens."""
        return self.options.on_closed_by_route.get(route or "", self.options.on_closed) == "reopen"


def _settled(ctx: Effects, event: CaseSettled) -> None:
    if event.priority is not None:
        ctx.write(partial(_raise_priority, number=event.number, level=event.priority))
    if event.route is not None:
        ctx.write(partial(cases.update_case, number=event.number, route=event.route,
                          assignee=event.assignee))


def _raise_priority(tx: Transaction, *, number: str, level: str) -> None:
    """A follow-up may make a case more urgent, never less."""
    row = cases.get_case(tx, number)
    if row is not None and (row.priority is None
                            or PRIORITIES.index(level) < PRIORITIES.index(row.priority)):
        cases.update_case(tx, number, priority=level)


@hookimpl(trylast=True)
def mailflow_stages() -> Iterable[type[Stage[Any]]]:
    return [NumberStage]


@hookimpl
def mailflow_schemas() -> Iterable[Schema]:
    return [cases.SCHEMA]


@hookimpl
def mailflow_retention() -> Iterable[Purge]:
    return [*of_closed_cases("case_messages"),
            Purge("cases", "status = 'closed' AND updated_at < :cutoff", "cases"),
            Purge("fingerprints", "created_at < :cutoff")]
