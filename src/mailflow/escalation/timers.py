"""The escalation's timers: ``escalate.remind`` (a reminder to the expert) and
``escalate.supervisor`` (the case handed to the supervisor).

Each handler looks at the store again when it fires (answered? case closed?)
and does nothing when the escalation no longer waits, so a timer cancelled
too late is harmless. Everything it needs that the rules said was written
into the timer's payload when it was scheduled; the next timer's due time is
moved to the calendar's next opening, so nobody is written to at night or on
a holiday.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any

import structlog
from prometheus_client import Counter

from mailflow import cases
from mailflow.business_hours import BusinessCalendar
from mailflow.calendars import Calendars
from mailflow.context import Effects, TimerContext, TimerHandler
from mailflow.durations import parse_duration
from mailflow.escalation import mail, tokens
from mailflow.escalation.tokens import WAITING, Escalation
from mailflow.metrics import MetricFactory
from mailflow.stats.store import Count, Measure, day_of
from mailflow.store import Transaction
from mailflow.values import Timer

log = structlog.get_logger("mailflow.escalation")

REMIND = "escalate.remind"
SUPERVISOR = "escalate.supervisor"
KINDS = (REMIND, SUPERVISOR)


@dataclass(frozen=True)
class FollowUp:
    """What a follow-up timer carries: the forward's token and the rule's settings."""

    token: str
    remind_after: str
    reminders: int
    supervisor: str
    calendar: str
    sender: str
    sender_name: str
    reply_to: str
    to_customer: bool = False

    def payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> FollowUp:
        return cls(**payload)


def cancel(effects: Effects, case: str) -> None:
    """Stop every follow-up of the case's escalation."""
    for kind in KINDS:
        effects.cancel_timers(kind, case)


def next_due(calendar: BusinessCalendar, start: float, follow: FollowUp) -> float:
    """When the next follow-up is due: ``remind_after`` on the calendar, then moved to
    its next opening."""
    return calendar.next_open(calendar.add(start, parse_duration(follow.remind_after)))


def schedule_next(effects: Effects, calendar: BusinessCalendar, start: float, case: str,
                  follow: FollowUp, reminders_sent: int) -> Timer:
    """A reminder while some are left, else the supervisor; returns the timer."""
    kind = REMIND if reminders_sent < follow.reminders else SUPERVISOR
    timer = Timer(kind, next_due(calendar, start, follow), case, follow.payload())
    effects.schedule_timer(timer)
    return timer


class EscalationTimers:
    """The handlers, bound to the calendars and metrics of the daemon that loaded the
    ``escalate`` stage (bound again at each load)."""

    def __init__(self) -> None:
        unbound = MetricFactory()  # a registry of its own, until a stage binds it
        self.bind(Calendars(), unbound.counter("mailflow_escalation_reminders_total", ""),
                  unbound.counter("mailflow_escalation_supervisor_total", ""), "localhost")

    def bind(self, calendars: Calendars, reminders: Counter, supervisor: Counter,
             hostname: str) -> None:
        """Use the stage's calendars and counters (``reminders``, ``supervisor``)."""
        self.calendars = calendars
        self.hostname = hostname
        self.reminders = reminders
        self.supervisor = supervisor

    def handlers(self) -> dict[str, TimerHandler]:
        return {REMIND: self.remind, SUPERVISOR: self.escalate}

    def calendar(self, name: str) -> BusinessCalendar:
        try:
            return self.calendars.get(name)
        except KeyError:  # the calendar was removed from the rules since: the default
            return self.calendars.default

    @staticmethod
    async def _waiting(ctx: TimerContext, token: str) -> Escalation | None:
        def look(tx: Transaction) -> Escalation | None:
            found = tokens.get(tx, token)
            if found is None or found.state != WAITING:
                return None
            row = cases.get_case(tx, found.case)
            return found if row is not None and row.open else None
        return await ctx.store.run_read(look)

    def _closed(self, ctx: TimerContext, follow: FollowUp) -> bool:
        """Outside working hours now (the daemon was down when it fell due, or the rules'
        hours changed since)? Then the timer waits for the next opening: nobody is written
        to at night or on a holiday."""
        calendar = self.calendar(follow.calendar)
        now = ctx.clock.now()
        if calendar.is_open(now):
            return False
        ctx.schedule_timer(replace(ctx.timer, due=calendar.next_open(now)))
        log.info("escalation_follow_up_deferred", case=ctx.timer.key, kind=ctx.timer.kind)
        return True

    def _head(self, follow: FollowUp, case: str) -> mail.Letterhead:
        return mail.Letterhead(case, follow.sender, follow.sender_name, follow.reply_to,
                               self.hostname)

    def _local(self, follow: FollowUp, ts: float) -> str:
        calendar = self.calendar(follow.calendar)
        return calendar.format(datetime.fromtimestamp(ts, calendar.zone), "fr")

    def _count(self, ctx: TimerContext, follow: FollowUp, measure: Measure, rule: str) -> None:
        """The day's reminders or supervisor escalations, by rule (the report's)."""
        day = day_of(ctx.clock.now(), self.calendar(follow.calendar).zone)
        ctx.write(Count(day, measure, label=rule).add)

    async def remind(self, ctx: TimerContext) -> None:
        follow = FollowUp.from_payload(ctx.timer.payload)
        found = await self._waiting(ctx, follow.token)
        if found is None:
            log.info("escalation_reminder_not_needed", case=ctx.timer.key)
            return
        if self._closed(ctx, follow):
            return
        now = ctx.clock.now()
        number = found.reminders_sent + 1
        ctx.queue_mail(mail.reminder(
            self._head(follow, found.case), found.experts, subject=found.subject,
            forward_id=found.message_id, number=number, total=follow.reminders,
            since=self._local(follow, found.created_at), excerpt=found.excerpt, now=now,
            to_customer=follow.to_customer).mail)
        ctx.write(partial(tokens.update, token=found.token, reminders_sent=number))
        schedule_next(ctx, self.calendar(follow.calendar), now, found.case, follow, number)
        self.reminders.inc()
        self._count(ctx, follow, "reminder", found.rule)
        log.info("escalation_reminder_queued", case=found.case, to=list(found.experts),
                 number=number)

    async def escalate(self, ctx: TimerContext) -> None:
        follow = FollowUp.from_payload(ctx.timer.payload)
        found = await self._waiting(ctx, follow.token)
        if found is None:
            log.info("escalation_supervisor_not_needed", case=ctx.timer.key)
            return
        if self._closed(ctx, follow):
            return
        ctx.write(partial(tokens.update, token=found.token, state=tokens.SUPERVISOR))
        if not follow.supervisor:
            log.warning("escalation_no_supervisor", case=found.case, rule=found.rule)
            return
        ctx.queue_mail(mail.supervisor_notice(
            self._head(follow, found.case), (follow.supervisor,), subject=found.subject,
            experts=", ".join(found.experts), since=self._local(follow, found.created_at),
            reminders=found.reminders_sent, excerpt=found.excerpt, now=ctx.clock.now()).mail)
        self.supervisor.inc()
        self._count(ctx, follow, "supervisor", found.rule)
        log.info("escalation_supervisor_queued", case=found.case, to=follow.supervisor)


HANDLERS = EscalationTimers()
