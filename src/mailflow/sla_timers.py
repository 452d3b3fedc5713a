"""The SLA's timer handlers: warn the assignee, tell the supervisor, close idle cases.

Each handler looks at the case again when it fires (closed? answered? the
customer wrote since?) and does nothing when the deadline no longer runs,
so a cancelled timer that fires anyway is harmless. What it sends is a short
``Auto-Submitted: auto-generated`` mail from the null sender, through the
outbox, in the same transaction as the timer's "done" mark.

Everything a handler needs was written into the timer's payload when it was
scheduled (recipients, zone, route, priority): a timer fires the same way
after a restart or a reload.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from prometheus_client import CollectorRegistry, Counter

from mailflow import cases, deadlines
from mailflow.context import TimerContext, TimerHandler
from mailflow.deadlines import FIRST_RESPONSE, Kind
from mailflow.events import CaseClosed
from mailflow.message.writer import Letter, MailWriter
from mailflow.stats.store import Count, Measure, day_of
from mailflow.store import Transaction

log = structlog.get_logger("mailflow.sla")


@dataclass(frozen=True)
class Notice:
    """What a warning or breach timer carries: enough to write its mail."""

    case: str
    deadline: Kind
    due: float
    route: str
    priority: str
    zone: str
    sender: str
    supervisor: str
    watchers: tuple[str, ...] = ()

    def payload(self) -> dict[str, Any]:
        return {**asdict(self), "watchers": list(self.watchers)}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Notice:
        return cls(**{**payload, "watchers": tuple(payload.get("watchers") or ())})

    def local(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, ZoneInfo(self.zone)).strftime("%Y-%m-%d %H:%M %Z")


def _what(kind: str) -> str:
    return "first response" if kind == FIRST_RESPONSE else "update"


def _count(ctx: TimerContext, notice: Notice, measure: Measure) -> None:
    """The day's warnings or breaches, by route, priority and deadline (the report's)."""
    day = day_of(ctx.clock.now(), ZoneInfo(notice.zone))
    ctx.write(Count(day, measure, notice.route, notice.priority, notice.deadline).add)


class SlaTimers:
    """The handlers, with the metrics of the daemon that loaded the ``sla`` stage."""

    def __init__(self) -> None:
        registry = CollectorRegistry()  # until a daemon's sla stage binds its own
        self.bind(hostname="localhost", warnings=Counter("w", "", ["route", "priority"],
                                                         registry=registry),
                  breaches=Counter("b", "", ["route", "priority"], registry=registry),
                  closed=Counter("c", "", registry=registry))

    def bind(self, *, hostname: str, warnings: Counter, breaches: Counter,
             closed: Counter) -> None:
        """Count on these (the daemon's, made by the ``sla`` stage at load)."""
        self.writer = MailWriter(hostname)
        self.warnings, self.breaches, self.closed = warnings, breaches, closed

    def handlers(self) -> dict[str, TimerHandler]:
        return {deadlines.WARN: self.warn, deadlines.UPDATE_WARN: self.warn,
                deadlines.BREACH: self.breach, deadlines.UPDATE_BREACH: self.breach,
                deadlines.AUTO_CLOSE: self.auto_close}

    async def _running(self, ctx: TimerContext,
                       notice: Notice) -> tuple[cases.CaseRow, deadlines.Deadline] | None:
        def look(tx: Transaction) -> tuple[cases.CaseRow, deadlines.Deadline] | None:
            row = cases.get_case(tx, notice.case)
            if row is None or not row.open:
                return None
            running = deadlines.pending(tx, row.number, notice.deadline)
            if running is None or running.breached_at is not None:
                return None
            if notice.deadline == FIRST_RESPONSE and cases.first_response_at(
                    tx, row.number) is not None:
                return None
            return row, running
        return await ctx.store.run_read(look)

    async def warn(self, ctx: TimerContext) -> None:
        notice = Notice.from_payload(ctx.timer.payload)
        found = await self._running(ctx, notice)
        if found is None:
            return
        row, _ = found
        to = ([row.assignee] if row.assignee else list(notice.watchers)) or (
            [notice.supervisor] if notice.supervisor else [])
        ctx.write(partial(deadlines.mark, number=row.number, kind=notice.deadline,
                          field="warned_at", at=ctx.clock.now()))
        self._mail(ctx, notice, row, to, "sla-warning",
                   f"[{row.number}] {_what(notice.deadline)} due {notice.local(notice.due)}",
                   f"The {_what(notice.deadline)} to case {row.number} ({row.customer}:"
                   f" {row.subject}) is due {notice.local(notice.due)}.")
        self.warnings.labels(route=notice.route, priority=notice.priority).inc()
        _count(ctx, notice, "sla_warning")

    async def breach(self, ctx: TimerContext) -> None:
        notice = Notice.from_payload(ctx.timer.payload)
        found = await self._running(ctx, notice)
        if found is None:
            return
        row, _ = found
        to = [notice.supervisor] if notice.supervisor else (
            [row.assignee] if row.assignee else list(notice.watchers))
        ctx.write(partial(deadlines.mark, number=row.number, kind=notice.deadline,
                          field="breached_at", at=ctx.clock.now()))
        self._mail(ctx, notice, row, to, "sla-breach",
                   f"[{row.number}] SLA breached: no {_what(notice.deadline)} since"
                   f" {notice.local(notice.due)}",
                   f"Case {row.number} ({row.customer}: {row.subject}), handled by"
                   f" {row.assignee or ', '.join(notice.watchers) or 'nobody'}, has had no"
                   f" {_what(notice.deadline)} by its deadline, {notice.local(notice.due)}.")
        self.breaches.labels(route=notice.route, priority=notice.priority).inc()
        _count(ctx, notice, "sla_breach")

    async def auto_close(self, ctx: TimerContext) -> None:
        number, after = str(ctx.timer.payload["case"]), float(ctx.timer.payload["after"])

        def look(tx: Transaction) -> bool:
            # a customer's own message cancels this timer (the sla stage); an automatic
            # one (their out-of-office) does not, and is no reason to keep the case open
            row = cases.get_case(tx, number)
            later = [d for d in deadlines.deadlines_of(tx, number) if d.started_at > after]
            return row is not None and row.open and not later
        if not await ctx.store.run_read(look):
            return
        ctx.write(partial(cases.update_case, number=number, status="closed"))
        await ctx.emit(CaseClosed(number, ctx.clock.now(), by="auto-close"))
        self.closed.inc()
        log.info("case_auto_closed", case=number)

    def _mail(self, ctx: TimerContext, notice: Notice, row: cases.CaseRow, to: list[str],
              kind: str, subject: str, text: str) -> None:
        if not to:
            log.warning("sla_nobody_to_tell", case=row.number, kind=kind)
            return
        body = (f"{text}\n\nRoute: {notice.route or '-'}, priority: {notice.priority}.\n"
                "-- \nmailflow (automatic message)\n")
        written = self.writer.write(Letter(notice.sender, to, subject, body,
                                           headers={"X-Mailflow-Case": row.number}),
                                    kind=kind, now=ctx.clock.now(), id_prefix=f"sla.{row.number}")
        ctx.queue_mail(written.mail)
        log.info("sla_notice_queued", case=row.number, kind=kind, to=to)


HANDLERS = SlaTimers()
