"""Stage ``statistics``: every message counted by day, direction, route and priority.

Runs for every direction, last in the chain (it reads what the stages before
it decided: the case, its route, its priority), and writes one counter row in
the message's own transaction (``stats_counts``, :mod:`mailflow.stats.store`):
given back if the next hop refuses the message, so the day's volumes match
what was really delivered. Its housekeeping keeps ``mailflow_cases_open``
from the store and purges what ``statistics.retention`` no longer keeps; its
route is ``/report`` on the internal HTTP listener. Passthrough and internal mail are counted by
direction and day only: no address, no subject, no route.

Answers are recorded when a case is answered, whoever answered it (the
stage listens to ``CaseAnswered``: :mod:`mailflow.stats.responses`); SLA
warnings and breaches, reminders and supervisor escalations by their timers.
The report (``mailflow report``, ``/report``) reads these tables, which
``statistics.retention`` keeps.

No options. Metrics: an answer's delays in ``mailflow_first_response_seconds``,
``mailflow_response_seconds``, ``mailflow_first_responses_total`` and, per agent,
``mailflow_agent_*`` (``mailflow_messages_by_direction_total`` counts the traffic
live).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mailflow.context import Effects
from mailflow.events import CaseAnswered, CaseEvent, Listener
from mailflow.hookspecs import hookimpl
from mailflow.host import Host, Housekeeping, Route
from mailflow.stage import (
    ALL_DIRECTIONS,
    CaseStatus,
    Direction,
    KnownLabels,
    MessageContext,
    Stage,
    StageEnv,
    StageOptions,
)
from mailflow.stats.metrics import StatsMetrics, known_labels
from mailflow.stats.responses import record_answer
from mailflow.stats.store import SCHEMA, Count, day_of
from mailflow.stats.upkeep import Upkeep
from mailflow.store.schema import Schema


class StatisticsStage(Stage[StageOptions]):
    name = "statistics"
    description = "count each message by day, direction, route and priority (for the report)"
    on_error = "skip"  # a figure is never worth a customer's mail
    directions = ALL_DIRECTIONS

    def __init__(self, options: StageOptions, env: StageEnv) -> None:
        super().__init__(options, env)
        self.zone = env.calendars.default.zone
        self.per_agent = env.settings.statistics.per_agent
        self.metrics = StatsMetrics.of(env.metrics, self.per_agent)

    def listeners(self) -> Iterable[tuple[type[CaseEvent], Listener]]:
        return [(CaseAnswered, self.answered)]

    def known_labels(self) -> Iterable[KnownLabels]:
        return known_labels(self.env.services, self.per_agent)

    async def answered(self, ctx: Effects, event: CaseAnswered) -> None:
        await record_answer(ctx, event, self.metrics, self.zone, self.per_agent)

    async def process(self, ctx: MessageContext) -> None:
        day = day_of(ctx.received_at, self.zone)
        case = ctx.case
        direction = ctx.direction
        if direction is Direction.REPLY and case is None:
            direction = Direction.PASSTHROUGH  # a reply to no case is relayed as passed
        ours = direction in (Direction.INBOUND, Direction.REPLY)
        route = (case.route or "") if case is not None and ours else ""
        priority = ctx.triage.priority if ctx.triage is not None and ours else ""
        counts = [Count(day, "mail", route, priority, direction.value)]
        if case is not None and case.status is CaseStatus.NEW:
            counts.append(Count(day, "case_opened", route, priority))
        for count in counts:
            ctx.write(count.add, undo=count.give_back)


@hookimpl(trylast=True)
def mailflow_stages() -> Iterable[type[Stage[Any]]]:
    return [StatisticsStage]


@hookimpl
def mailflow_schemas() -> Iterable[Schema]:
    return [SCHEMA]


@hookimpl
def mailflow_housekeeping(host: Host) -> Iterable[Housekeeping]:
    return Upkeep(host).jobs()


@hookimpl
def mailflow_http_routes(host: Host) -> Iterable[Route]:
    from mailflow.report.http import report_routes  # jinja2 and plotly: only when served

    return report_routes(host)
