"""Stage ``acknowledge``: tell the customer their mail arrived, once per case.

The acknowledgement carries the case number (Subject and body) and the promised answer
time: the case's first-response deadline when the ``sla`` stage set one (one computation
for both), else computed here on the business calendar for the message's priority
(``promise``). It goes through the outbox, only once the customer's message is safely
accepted, with a null envelope sender (configurable), ``Auto-Submitted: auto-replied``,
``X-Auto-Response-Suppress: All``, ``Precedence: bulk`` and the loop marker, so no robot
answers it.

Never sent (each suppression logged and counted with its reason): to
automatic mail (``ctx.automatic``, decided once for every stage by the rules'
``automatic:`` signs, see :mod:`mailflow.automatic`: RFC 3834's headers, null
sender, lists, reports, vendor and helpdesk headers, out-of-office subjects,
robots' addresses and names), to a robot's or one of our own addresses, on a
follow-up or a copy, to an address whose acknowledgement bounced recently, and
past the limits (per case, per address per day, a global ceiling per hour far above a
real burst); ``cases show`` says why. Paced, not dropped: past ``global_per_minute`` one
waits its turn in the outbox (70 customers flushed from Postfix's queue after an outage
all get theirs); one not sent within ``max_age`` expires (a stale promise is worse).

The language is the rules' for the mailbox written to (``language_by_recipient``),
else the one guessed from the customer's own words (``ctx.language``: the
subject and the text without quotes or signature; with ``detect_language``),
else ``default_language``.

Templates are files in the rules folder rendered by Jinja2's sandbox: the
first line is ``Subject: …``, then a blank line, then the body. Merge fields:
``case``, ``customer``, ``customer_name``, ``subject``, ``received``,
``promised``, ``route``, ``mailbox``, ``priority``, ``language``.

Configuration (rules section ``acknowledge``)::

    acknowledge:
      from_name: {fr: Service client, en: Customer service}   # or one name for all
      from_by_route: {sales: devis@example.com}   # else: the service mailbox written to
      envelope_sender: ""              # null sender
      templates: {fr: templates/ack.fr.txt, en: templates/ack.en.txt}
      language_by_recipient: {support@example.com: en}
      default_language: fr
      promise:
        urgent: {sliding_hours: 2}
        normal: {next_business_day_at: "12:00"}
      calendar: default                # a calendar of calendars: (the time zone, hours)
      limits: {per_case: 1, per_address_per_day: 5, global_per_minute: 60,
               global_per_hour: 600}
      max_age: 2h                      # not sent by then: expired, not sent late
      bounce_window_hours: 72
      check_sender_domain: false       # true: no ack unless the domain has MX or A records
      dns: {nameservers: [], timeout: 2}

Metrics: ``mailflow_acks_total``, ``mailflow_acks_suppressed_total{reason}``.
Log events: ``ack_queued``, ``ack_suppressed``, ``ack_bounce_recorded``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any

import structlog
from pydantic import Field, field_validator

from mailflow import acks
from mailflow.business_hours import BusinessCalendar, CalendarOptions, PromiseOptions
from mailflow.config import Model
from mailflow.dnscheck import DnsOptions, DomainChecker
from mailflow.durations import parse_duration
from mailflow.facts import EMPTY
from mailflow.hookspecs import hookimpl
from mailflow.host import Purge
from mailflow.message.writer import Letter, MailWriter, answering
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
from mailflow.templates import SAMPLE_CASE, load_templates, sample_context, template_environment

log = structlog.get_logger("mailflow.stages.acknowledge")



class Limits(Model):
    per_case: int = Field(1, ge=1)
    per_address_per_day: int = Field(5, ge=1)
    #: the pace: past it, acknowledgements wait their turn in the outbox
    global_per_minute: int = Field(60, ge=1)
    #: the ceiling against backscatter: past it, none is written
    global_per_hour: int = Field(600, ge=1)


def _default_promises() -> dict[str, PromiseOptions]:
    return {
        "urgent": PromiseOptions(sliding_hours=2),
        "high": PromiseOptions(sliding_hours=4),
        "normal": PromiseOptions(next_business_day_at="12:00"),
        "low": PromiseOptions(sliding_hours=24),
    }


class AcknowledgeOptions(StageOptions):
    from_name: str | dict[str, str] = "Service client"  # or one per language
    from_by_route: dict[str, str] = Field(default_factory=dict)  # route -> sender address
    envelope_sender: str = ""
    templates: dict[str, str] = Field(default_factory=lambda: {
        "fr": "templates/ack.fr.txt", "en": "templates/ack.en.txt"})
    language_by_recipient: dict[str, str] = Field(default_factory=dict)
    default_language: str = "fr"
    detect_language: bool = True
    promise: dict[str, PromiseOptions] = Field(default_factory=_default_promises)
    #: a calendar of ``calendars:``; an inline mapping is the old (deprecated) form
    calendar: str | CalendarOptions = "default"
    limits: Limits = Limits()
    max_age: str = "2h"
    bounce_window_hours: float = Field(72.0, ge=0)
    # against backscatter: acknowledge only senders whose domain has MX or A records
    check_sender_domain: bool = False
    dns: DnsOptions = DnsOptions()
    max_subject_chars: int = Field(120, ge=20)
    #: deprecated: the rules' top-level ``automatic:`` section (read from here when absent)
    robots: dict[str, Any] | None = None

    @field_validator("max_age")
    @classmethod
    def _plain_duration(cls, value: str) -> str:
        if parse_duration(value).is_business:
            raise ValueError(f"'{value}': give plain time (2h, 90m), not business time")
        return value

    @field_validator("language_by_recipient")
    @classmethod
    def _lower(cls, value: dict[str, str]) -> dict[str, str]:
        return {k.lower(): v for k, v in value.items()}


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _one_line(value: str) -> str:
    """One line for a merge field or a header: control characters (CR, LF, NUL…) become
    spaces, and every run of white space one space."""
    return " ".join(_CONTROL.sub(" ", value).split())


def _greeting_name(name: str, address: str) -> str:
    """The name in the To field, only if it is one: not the address it fell back to,
    never a raw encoded word (the address itself is written as the customer gave it)."""
    return "" if name.lower() == address.lower() or "=?" in name else name


class AcknowledgeStage(Stage[AcknowledgeOptions]):
    name = "acknowledge"
    description = "acknowledge new cases to the customer with the number and answer time"
    directions = frozenset({Direction.INBOUND})

    def __init__(self, options: AcknowledgeOptions, env: StageEnv) -> None:
        super().__init__(options, env)
        if isinstance(options.calendar, CalendarOptions):
            log.warning("deprecated_setting", setting="acknowledge.calendar",
                        instead="calendars: {default: ...} and acknowledge.calendar: default")
            self.calendar = BusinessCalendar(options.calendar)
        else:
            try:
                self.calendar = env.calendars.get(options.calendar)
            except KeyError as exc:
                raise ValueError(str(exc.args[0])) from None
        for priority in ("urgent", "high", "normal", "low"):  # the sample fields need them
            if priority not in options.promise:
                raise ValueError(f"promise: no answer time for priority '{priority}'")
        if options.default_language not in options.templates:
            raise ValueError(f"no template for default_language '{options.default_language}'")
        # rendered once now with fields made as for a real case: a typo fails the load
        self.jinja = template_environment()
        self.templates = load_templates(
            env.rules, options.templates, where=(self.name, "templates"), env=self.jinja,
            sample=lambda language: self.merge_fields(sample_context(env.clock), SAMPLE_CASE,
                                                      language))
        self.own = {a.lower() for a in env.rules.own_addresses}
        self.writer = MailWriter(env.settings.smtp.hostname)
        self.domains = DomainChecker(options.dns) if options.check_sender_domain else None
        self.max_age = parse_duration(options.max_age).seconds
        self.sent = env.metrics.counter("mailflow_acks_total", "Acknowledgements queued")
        self.suppressed = env.metrics.counter("mailflow_acks_suppressed_total",
                                              "Acknowledgements not sent, by reason", ["reason"])

    def known_labels(self) -> Iterable[KnownLabels]:
        checked = ("sender domain check",) if self.domains is not None else ()
        return [KnownLabels.of("mailflow_acks_suppressed_total", reason=acks.SUPPRESSED + checked),
                KnownLabels.of("mailflow_outbox_sent_total", kind=["ack"]),
                KnownLabels.of("mailflow_outbox_failures_total", kind=["ack"])]

    # -- deciding ---------------------------------------------------------------

    async def process(self, ctx: MessageContext) -> None:
        message = ctx.message
        assert ctx.store is not None
        if not message.envelope.mail_from or message.content_type == "multipart/report":
            await self._record_bounce(ctx)
        customer, case = ctx.customer, ctx.case
        reason = self._static_reason(ctx, customer, case)
        slot = ctx.clock.now()
        if reason is None:
            assert case is not None
            reason, slot = await ctx.store.run_read(partial(
                self._limit_reason, customer=customer, case=case.number, now=slot))
        if reason is None and self.domains is not None:
            ok, why = await self.domains.resolves(customer.rpartition("@")[2])
            if not ok:
                reason = f"sender domain check: {why}"
        if reason is not None:
            self._suppress(ctx, reason, customer)
            return
        assert case is not None
        self._queue_ack(ctx, customer, case.number, slot)

    def _static_reason(self, ctx: MessageContext, customer: str,
                       case: CaseInfo | None) -> str | None:
        if case is None:
            return (EMPTY if ctx.facts.empty
                    else "no case (put 'number' before 'acknowledge' in the chain)")
        if case.status.is_duplicate:
            return "duplicate"
        if case.status.is_followup:
            return "follow-up on an existing case"
        return acks.not_to_write(ctx.automatic, customer, self.own, self.env.rules.local_domains,
                            self.env.automatic)

    def _limit_reason(self, tx: Transaction, *, customer: str, case: str,
                      now: float) -> tuple[str | None, float]:
        """(the limit it passes, if any; when it may leave: now, or its turn at the pace)."""
        limits = self.options.limits
        reason = acks.limit_reason(tx, customer=customer, case=case, now=now,
                                   per_case=limits.per_case,
                                   per_address_per_day=limits.per_address_per_day,
                                   global_per_hour=limits.global_per_hour)
        window = self.options.bounce_window_hours
        if reason is None and window and acks.bounced_since(tx, customer,
                                                            now - window * 3600):
            reason = "an acknowledgement to this address bounced recently"
        if reason is not None:
            return reason, now
        return None, acks.next_slot(tx, now=now, per_minute=limits.global_per_minute)

    def _suppress(self, ctx: MessageContext, reason: str, customer: str) -> None:
        label = reason.split(" (")[0].split(":")[0]
        self.suppressed.labels(reason=label).inc()
        case = ctx.case
        log.info("ack_suppressed", queue_id=ctx.queue_id,
                 case=case.number if case else None, reason=reason, address=customer)
        ctx.note(sent=False, reason=reason)
        if case is not None and case.status is CaseStatus.NEW:  # `cases show` says why
            ctx.write(partial(acks.record_withheld, case=case.number, reason=reason,
                              queue_id=ctx.queue_id, at=ctx.clock.now()))

    # -- writing ----------------------------------------------------------------

    def language_for(self, ctx: MessageContext) -> str:
        for rcpt in ctx.message.envelope.rcpt_to:
            language = self.options.language_by_recipient.get(rcpt.lower())
            if language in self.templates:
                return language
        if self.options.detect_language:
            language = ctx.language.code
            if language in self.templates:
                return language
        return self.options.default_language

    def from_name(self, language: str) -> str:
        """The sender name, in the ack's language when the rules give one per language."""
        name = self.options.from_name
        if isinstance(name, str):
            return name
        return name.get(language) or name.get(self.options.default_language) or next(
            iter(name.values()), "")

    def merge_fields(self, ctx: MessageContext, case: str, language: str) -> dict[str, Any]:
        priority = ctx.priority
        received = datetime.fromtimestamp(ctx.received_at, self.calendar.zone)
        # the case's first-response deadline (stage ``sla``) is the promise; without
        # one, the ``promise`` options give it
        deadline = ctx.case.promised_at if ctx.case is not None else None
        if deadline is not None:
            promised = datetime.fromtimestamp(deadline, self.calendar.zone)
        else:
            promised = self.calendar.promise(received, self.options.promise.get(
                priority, self.options.promise["normal"]))
        info = ctx.update_case(promised_at=promised.timestamp())
        subject = _one_line(ctx.message.subject)
        if len(subject) > self.options.max_subject_chars:
            subject = subject[: self.options.max_subject_chars - 1].rstrip() + "…"
        name = _one_line(info.customer_name)
        fields = {
            "case": case, "customer": info.customer,
            # a case recorded with a raw encoded word as the name is greeted by address
            "customer_name": info.customer if "=?" in name else name,
            "subject": subject, "received": self.calendar.format(received, language),
            "promised": self.calendar.format(promised, language),
            "route": info.route or "", "priority": priority,
            "mailbox": info.mailbox, "language": language,
        }
        # no control character reaches a template, whatever a stage or plugin recorded
        return {k: _CONTROL.sub(" ", v) if isinstance(v, str) else v for k, v in fields.items()}

    def render(self, language: str, fields: dict[str, Any]) -> tuple[str, str]:
        """(subject, body) from the template; the subject is forced onto one line."""
        text = self.templates[language].render(**fields)
        head, _, body = text.partition("\n\n")
        first = head.splitlines()[0] if head else ""
        subject = first.removeprefix("Subject:").strip() if first.lower().startswith(
            "subject:") else f"[{fields['case']}]"
        return _one_line(subject), body

    def _queue_ack(self, ctx: MessageContext, customer: str, case: str,
                   slot: float) -> None:
        language = self.language_for(ctx)
        fields = self.merge_fields(ctx, case, language)
        subject, body = self.render(language, fields)
        if case not in subject:
            subject = f"[{case}] {subject}"
        host = self.env.settings.smtp.hostname
        # from the service mailbox the customer wrote to (or the route's own sender),
        # never from an address taken from somebody else's envelope
        mailbox = (self.options.from_by_route.get(str(fields["route"]))
                   or str(fields["mailbox"] or f"postmaster@{host}"))
        # to the address exactly as the envelope spelt it (the case keeps it lower-case)
        sender = ctx.message.envelope.mail_from
        address = sender if sender.lower() == customer else customer
        # our routing headers stay inside: no X-Mailflow-Case on it
        written = self.writer.write(
            Letter(mailbox, [(_greeting_name(fields["customer_name"], address), address)],
                   subject, body, sender_name=self.from_name(language),
                   **answering(ctx.message)),
            kind="ack", now=ctx.clock.now(), mail_from=self.options.envelope_sender,
            id_prefix=f"ack.{case}")
        message_id = written.message_id
        # at its turn (the pace), and never later than its maximum age
        ctx.queue_mail(replace(written.mail, not_before=slot,
                               expires_at=ctx.clock.now() + self.max_age))
        queue_id, promised = ctx.queue_id, ctx.case.promised_at if ctx.case else None
        ctx.write(partial(acks.record_ack, case=case, address=customer, message_id=message_id,
                          queue_id=queue_id, promised_at=promised, sent_at=slot,
                          language=language),
                  undo=partial(acks.forget_acks, queue_id=queue_id))
        self.sent.inc()
        log.info("ack_queued", queue_id=queue_id, case=case, to=customer, language=language)
        ctx.note(sent=True, to=customer, language=language, subject=subject,
                 promised=fields["promised"], message_id=message_id)

    async def _record_bounce(self, ctx: MessageContext) -> None:
        """A bounce of one of our acknowledgements: stop writing to that address a while."""
        ids = acks.cited_ack_ids(ctx.message.raw, ctx.message.text)
        if not ids or ctx.store is None:
            return
        rows = await ctx.store.run_read(partial(acks.acks_by_message_id, ids=sorted(ids)))
        for address, message_id in rows:
            ctx.write(partial(acks.record_bounce, address=address, message_id=message_id,
                              at=ctx.clock.now()))
            log.info("ack_bounce_recorded", queue_id=ctx.queue_id, address=address)
            ctx.note(bounced=address)


@hookimpl(trylast=True)
def mailflow_stages() -> Iterable[type[Stage[Any]]]:
    return [AcknowledgeStage]


@hookimpl
def mailflow_schemas() -> Iterable[Schema]:
    return [acks.SCHEMA]


@hookimpl
def mailflow_retention() -> Iterable[Purge]:
    return [*of_closed_cases("acks"), Purge("ack_bounces", "at < :cutoff")]
