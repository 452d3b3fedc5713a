"""The response-time series: how fast customers get answers, by route, priority, agent.

Labels are bounded by the rules: route and priority are the rules' own names
(``none`` when a case has none), agents the names the rules give them
(``other`` for anyone else), expert rules their names. No address ever
becomes a label, so 10,000 senders make no new series.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from mailflow.metrics import KnownLabels, MetricFactory
from mailflow.services import AGENTS, ROUTES, TRIAGE_SCALE, Services
from mailflow.values import PRIORITIES

#: one minute to a week: first responses are counted in hours and days, not milliseconds
RESPONSE_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0,
                    172800.0, 345600.0, 604800.0)


#: whether a first response came by its deadline (``none``: the case had none)
IN_TIME = ("yes", "no", "none")


def label(value: str | None) -> str:
    """A route or priority as a label value: ``none`` when unset."""
    return value or "none"


def known_labels(services: Services, per_agent: bool) -> list[KnownLabels]:
    """The series the rules make known: the routes (``route``'s) by the priority levels
    (``none`` for either when no stage of the chain gives them), the agents the rules
    name and ``other``; the open cases' gauge included."""
    routes: Collection[str] = services.get(ROUTES) or [label(None)]
    levels = PRIORITIES if services.get(TRIAGE_SCALE) is not None else (label(None),)
    known = [KnownLabels.of(name, route=routes, priority=levels) for name in (
        "mailflow_first_response_seconds", "mailflow_response_seconds")]
    known += [KnownLabels.of("mailflow_first_responses_total", route=routes, priority=levels,
                             in_time=IN_TIME),
              KnownLabels.of("mailflow_cases_open", route=routes, priority=levels,
                             status=["open"])]
    if per_agent:
        agents = [*(services.get(AGENTS) or ()), "other"]
        known += [KnownLabels.of(name, agent=agents) for name in (
            "mailflow_agent_replies_total", "mailflow_agent_response_seconds")]
    return known


@dataclass(frozen=True)
class StatsMetrics:
    first_response: Histogram
    response: Histogram
    expert_answer: Histogram
    first_responses: Counter
    agent_replies: Counter | None
    agent_response: Histogram | None

    @classmethod
    def of(cls, factory: MetricFactory, per_agent: bool) -> StatsMetrics:
        """The daemon's series (made once; asked again at each reload)."""
        return cls(
            first_response=factory.histogram(
                "mailflow_first_response_seconds",
                "From a case's opening to the first answer to its customer",
                ["route", "priority"], RESPONSE_BUCKETS),
            response=factory.histogram(
                "mailflow_response_seconds",
                "From a customer's message (the oldest not answered) to the next answer",
                ["route", "priority"], RESPONSE_BUCKETS),
            expert_answer=factory.histogram(
                "mailflow_expert_answer_seconds",
                "From a case's forward to an expert to the expert's answer, by rule",
                ["rule"], RESPONSE_BUCKETS),
            first_responses=factory.counter(
                "mailflow_first_responses_total",
                "First responses, by whether they came by the SLA's deadline"
                " (in_time: yes, no, none when the case had no deadline)",
                ["route", "priority", "in_time"]),
            agent_replies=factory.counter(
                "mailflow_agent_replies_total", "Answers to customers per agent",
                ["agent"]) if per_agent else None,
            agent_response=factory.histogram(
                "mailflow_agent_response_seconds",
                "From a customer's message to this agent's answer", ["agent"],
                RESPONSE_BUCKETS) if per_agent else None,
        )
