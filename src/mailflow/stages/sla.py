"""Stage ``sla``: each case's first-response and update deadlines, and their timers.

On a customer's new case the first-response deadline is computed ONCE, on the
case's business calendar, and stored on the case (``promised_at``): the
acknowledgement promises that very instant, and a suppressed acknowledgement
still leaves the case its deadline. A customer's message on an answered case
starts the update deadline: it only runs while the customer wrote last (the
next agent reply stops it, see :mod:`mailflow.stages.replies`). Automatic
mail (a bounce, an out-of-office, any robot) moves no clock.

Timers ``sla.warn`` / ``sla.breach`` (``sla.update_warn`` / ``sla.update_breach``
for updates) are keyed by the case number and due at the calendar's next
opening, so nobody is written to at night or on a holiday. Their handlers
look at the case again (answered? closed?) before mailing the assignee (warn)
or the supervisor (breach).

The stage listens to case events (:mod:`mailflow.events`): an answer to the
customer (``CaseAnswered``, from whichever stage recorded it) meets the
running deadlines, stops their timers and, with ``auto_close_after``, starts
the auto-close clock; a closed case (``CaseClosed``: by hand, or by that clock)
stops them all.

Configuration (rules section ``sla``)::

    sla:
      calendar: default                # a name from calendars:
      supervisor: chef@example.com     # breaches; per route: supervisor_by_route
      supervisor_by_route: {legal: juriste-chef@example.com}
      from_address: sla@example.com    # else mailflow@<smtp.hostname>
      priorities:
        urgent: {first_response: 2bh, update: 2bh, warn_before: 30m}
        normal: {first_response: {next_business_day_at: "12:00"}, update: 1bd}
      routes:                          # optional, per route and priority
        sales: {urgent: {first_response: 1bh}}
      auto_close_after: 5bd            # optional: close after an agent's reply
      auto_close_after_by_route: {sales: 10bd, legal: null}   # null: never there

Metrics: ``mailflow_sla_warnings_total{route,priority}``,
``mailflow_sla_breaches_total{route,priority}``, ``mailflow_cases_auto_closed_total``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from functools import partial
from typing import Annotated, Any

import structlog
from pydantic import BeforeValidator, Field, model_validator

from mailflow import cases, deadlines
from mailflow.business_hours import BusinessCalendar
from mailflow.config import ClockTime, Model
from mailflow.config.types import parse_clock_time
from mailflow.context import Effects, TimerHandler
from mailflow.deadlines import FIRST_RESPONSE, UPDATE, Kind
from mailflow.durations import Duration, DurationField, parse_duration
from mailflow.events import CaseAnswered, CaseClosed, CaseEvent, Listener
from mailflow.hookspecs import hookimpl
from mailflow.host import Purge
from mailflow.retention import of_closed_cases
from mailflow.services import ROUTES
from mailflow.sla_timers import HANDLERS, Notice
from mailflow.stage import (
    CaseStatus,
    Direction,
    KnownLabels,
    MessageContext,
    Stage,
    StageEnv,
    StageOptions,
    Timer,
)
from mailflow.store import Transaction
from mailflow.store.schema import Schema
from mailflow.values import PRIORITIES

log = structlog.get_logger("mailflow.stages.sla")


class NextBusinessDay(Model):
    """A deadline at a fixed time of the next business day (``{next_business_day_at: "12:00"}``)."""

    next_business_day_at: ClockTime


def _target(value: Any) -> Duration | NextBusinessDay:
    """``"4bh"`` or ``{next_business_day_at: "12:00"}``, with one sentence when neither."""
    if isinstance(value, Duration | NextBusinessDay):
        return value
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, Mapping) and set(value) == {"next_business_day_at"}:
        at = str(value["next_business_day_at"])
        parse_clock_time(at)
        return NextBusinessDay(next_business_day_at=at)
    raise ValueError(f"{value!r} is not a duration (4bh, 1bd) nor"
                     " {next_business_day_at: \"12:00\"}")


Target = Annotated[Duration | NextBusinessDay, BeforeValidator(_target)]


class Targets(Model):
    """One priority's deadlines; unset ones are inherited from the priority's defaults."""

    first_response: Target | None = None
    update: DurationField | None = None
    warn_before: DurationField | None = None

    @model_validator(mode="after")
    def _plain_warning(self) -> Targets:
        if self.warn_before is not None and self.warn_before.is_business:
            raise ValueError("warn_before is plain time (30m, 1h), not business time")
        return self


def _default_priorities() -> dict[str, Targets]:
    hours = {"urgent": "2bh", "high": "4bh", "low": "24bh"}
    found: dict[str, Targets] = {}
    for priority in PRIORITIES:
        first: Any = hours.get(priority) or {"next_business_day_at": "12:00"}
        found[priority] = Targets.model_validate(
            {"first_response": first, "update": "1bd", "warn_before": "30m"})
    return found


class SlaOptions(StageOptions):
    calendar: str = "default"
    supervisor: str | None = None
    supervisor_by_route: dict[str, str] = Field(default_factory=dict)
    from_address: str | None = None
    priorities: dict[str, Targets] = Field(default_factory=_default_priorities)
    routes: dict[str, dict[str, Targets]] = Field(default_factory=dict)
    auto_close_after: DurationField | None = None
    #: per route: another delay, or null for none on that route
    auto_close_after_by_route: dict[str, DurationField | None] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_priorities(self) -> SlaOptions:
        for where in (self.priorities, *self.routes.values()):
            unknown = set(where) - set(PRIORITIES)
            if unknown:
                raise ValueError(f"unknown priority '{sorted(unknown)[0]}'"
                                 f" (one of {', '.join(PRIORITIES)})")
        for priority in PRIORITIES:
            if (self.priorities.get(priority) or Targets()).first_response is None:
                raise ValueError(f"priorities: no first_response for '{priority}'")
        return self

    def auto_close(self, route: str | None) -> Duration | None:
        """After an agent's reply, how long until the case closes itself (None: never)."""
        if (route or "") in self.auto_close_after_by_route:
            return self.auto_close_after_by_route[route or ""]
        return self.auto_close_after

    def targets(self, priority: str, route: str | None) -> Targets:
        """The priority's targets, with the route's own where it has some."""
        base = self.priorities.get(priority) or self.priorities["normal"]
        special = self.routes.get(route or "", {}).get(priority)
        if special is None:
            return base
        return base.model_copy(update={k: getattr(special, k) for k in special.model_fields_set})


def deadline(calendar: BusinessCalendar, start: float, target: Target) -> float:
    """When a target set at ``start`` falls due, on ``calendar``."""
    if isinstance(target, Duration):
        return calendar.add(start, target)
    at = parse_clock_time(target.next_business_day_at)
    local = datetime.fromtimestamp(start, calendar.zone)
    return calendar.next_business_day_at(local, at).timestamp()


def timer_times(calendar: BusinessCalendar, start: float, due: float,
                warn_before: Duration | None) -> tuple[float | None, float]:
    """(warn, breach) due times, each moved to the calendar's next opening; no warning
    when it would not come strictly between the start and the deadline's opening."""
    breach = calendar.next_open(due)
    if warn_before is None:
        return None, breach
    warn = calendar.next_open(max(start, due - warn_before.seconds))
    return (warn if start < warn < breach else None), breach


class SlaStage(Stage[SlaOptions]):
    name = "sla"
    description = "first-response and update deadlines per priority, warned and escalated"
    directions = frozenset({Direction.INBOUND})
    requires = ("number",)

    def __init__(self, options: SlaOptions, env: StageEnv) -> None:
        super().__init__(options, env)
        try:
            self.calendar = env.calendars.get(options.calendar)
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None
        host = env.settings.smtp.hostname
        self.sender = options.from_address or f"mailflow@{host}"
        metrics = env.metrics
        HANDLERS.bind(
            hostname=host,
            warnings=metrics.counter("mailflow_sla_warnings_total",
                                     "SLA deadlines about to pass, the assignee warned",
                                     ["route", "priority"]),
            breaches=metrics.counter("mailflow_sla_breaches_total",
                                     "SLA deadlines passed, the supervisor told",
                                     ["route", "priority"]),
            closed=metrics.counter("mailflow_cases_auto_closed_total",
                                   "Cases closed after an agent's reply left unanswered"))

    def supervisor(self, route: str | None) -> str | None:
        return self.options.supervisor_by_route.get(route or "") or self.options.supervisor

    async def process(self, ctx: MessageContext) -> None:
        case = ctx.case
        if case is None or case.status.is_duplicate:
            return
        why = ctx.automatic
        if why is not None:
            ctx.note(deadline=None, because=f"automatic mail ({why}): no clock moves")
            return
        assert ctx.store is not None
        started = answered = running = False  # a new case's number was never used before
        if case.status is not CaseStatus.NEW:
            started, answered, running = await ctx.store.run_read(partial(self._state,
                                                                          number=case.number))
        # the customer wrote: a pending auto-close is off
        ctx.cancel_timers(deadlines.AUTO_CLOSE, case.number)
        targets = self.options.targets(ctx.priority, case.route)
        if case.status is CaseStatus.NEW or not (started or answered):
            assert targets.first_response is not None
            due = deadline(self.calendar, ctx.received_at, targets.first_response)
            ctx.update_case(promised_at=due)
            ctx.write(partial(cases.update_case, number=case.number, promised_at=due,
                              priority=ctx.priority))
            self._start(ctx, FIRST_RESPONSE, due, targets.warn_before)
            if targets.update is not None:
                ctx.note(update=f"{targets.update} after each customer message on the"
                         " answered case")
        elif answered and not running and targets.update is not None:
            due = self.calendar.add(ctx.received_at, targets.update)
            self._start(ctx, UPDATE, due, targets.warn_before)
        else:
            ctx.note(deadline=None, because="a deadline already runs for this case"
                     if running or not answered else "no update deadline for this priority")

    def listeners(self) -> Iterable[tuple[type[CaseEvent], Listener]]:
        return [(CaseAnswered, self.answered), (CaseClosed, self.closed)]

    def known_labels(self) -> Iterable[KnownLabels]:
        routes = self.env.services.get(ROUTES) or [""]  # a case without a route: ""
        return [*(KnownLabels.of(name, route=routes, priority=PRIORITIES) for name in (
                    "mailflow_sla_warnings_total", "mailflow_sla_breaches_total")),
                *(KnownLabels.of(name, kind=["sla-warning", "sla-breach"]) for name in (
                    "mailflow_outbox_sent_total", "mailflow_outbox_failures_total"))]

    def answered(self, ctx: Effects, event: CaseAnswered) -> None:
        """The customer got an answer: every running deadline is met, its timers are off,
        and with ``auto_close_after`` the case closes itself unless the customer writes."""
        if event.automatic:
            return
        number, queue_id = event.number, ctx.queue_id
        ctx.write(partial(deadlines.meet, number=number, at=event.at, queue_id=queue_id),
                  undo=partial(deadlines.unmeet, queue_id=queue_id) if queue_id else None)
        for kind in deadlines.ALL_TIMERS:
            ctx.cancel_timers(kind, number)
        after = self.options.auto_close(event.route)
        if after is not None:
            due = self.calendar.add(event.at, after)
            ctx.schedule_timer(Timer(deadlines.AUTO_CLOSE, due, number,
                                     {"case": number, "after": event.at}))

    @staticmethod
    def closed(ctx: Effects, event: CaseClosed) -> None:
        """A closed case: its pending deadlines stop, and their timers."""
        ctx.write(partial(deadlines.cancel_case, number=event.number, at=event.at))
        for kind in deadlines.ALL_TIMERS:
            ctx.cancel_timers(kind, event.number)

    @staticmethod
    def _state(tx: Transaction, *, number: str) -> tuple[bool, bool, bool]:
        """(has a first-response deadline, an agent answered, an update clock runs)."""
        return (deadlines.has_first_response(tx, number),
                cases.first_response_at(tx, number) is not None,
                deadlines.pending(tx, number, UPDATE) is not None)

    def _start(self, ctx: MessageContext, kind: Kind, due: float,
               warn_before: Duration | None) -> None:
        assert ctx.case is not None
        number, route, priority = ctx.case.number, ctx.case.route, ctx.priority
        ctx.write(partial(deadlines.start, number=number, kind=kind, started_at=ctx.received_at,
                          due=due, queue_id=ctx.queue_id))
        warn, breach = timer_times(self.calendar, ctx.received_at, due, warn_before)
        notice = Notice(case=number, deadline=kind, due=due, route=route or "",
                        priority=priority, zone=self.calendar.options.timezone,
                        sender=self.sender, supervisor=self.supervisor(route) or "",
                        watchers=tuple(ctx.recipients))
        warn_kind, breach_kind = deadlines.TIMERS_OF[kind]
        if warn is not None:
            ctx.schedule_timer(Timer(warn_kind, warn, number, notice.payload()))
        ctx.schedule_timer(Timer(breach_kind, breach, number, notice.payload()))
        ctx.note(**{kind: notice.local(due), "calendar": f"{self.options.calendar}"
                    f" ({self.calendar.options.timezone})",
                    "warn": notice.local(warn) if warn is not None else "-",
                    "breach": notice.local(breach)})


@hookimpl(trylast=True)
def mailflow_stages() -> Iterable[type[Stage[Any]]]:
    return [SlaStage]


@hookimpl
def mailflow_schemas() -> Iterable[Schema]:
    return [cases.SCHEMA, deadlines.SCHEMA]


@hookimpl
def mailflow_timer_handlers() -> Mapping[str, TimerHandler]:
    return HANDLERS.handlers()


@hookimpl
def mailflow_retention() -> Iterable[Purge]:
    return of_closed_cases("sla_deadlines")
