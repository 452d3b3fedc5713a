"""The report's figures, computed from the store's statistics tables.

Everything here is aggregate: counts per day, route, priority and rule,
response times, and the configured agent labels the statistics recorded.
The customer's address and subject live in ``cases`` too, but no query of
this module selects them, so no page built from a :class:`Report` can show
them. The functions take a store ``Transaction`` and only read: they run
under ``store.run_read`` on a read-only store.
"""

from __future__ import annotations

import functools
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from mailflow.config import ConfigError, Settings
from mailflow.host import ReportSection
from mailflow.plugins import get_plugin_manager, results_in_store
from mailflow.report.activity import mail_written, shadow_decisions
from mailflow.stats.store import Measure, counts, open_cases, responses, volumes
from mailflow.store import Transaction, open_store
from mailflow.store.schema import schema_version

#: the plugins' tables of a report: (tx, since, until, zone) -> sections
SectionsOf = Callable[[Transaction, float, float, ZoneInfo | None], tuple[ReportSection, ...]]

#: the directions of ``mail`` counts, in the order the report shows them
DIRECTIONS = ("inbound", "reply", "internal", "passthrough")
#: upper limits (seconds) of the first-response buckets, and their names
BUCKET_LIMITS = (3600.0, 4 * 3600.0, 8 * 3600.0, 86400.0, 2 * 86400.0, math.inf)
BUCKET_NAMES = ("< 1 h", "1–4 h", "4–8 h", "8 h–1 day", "1–2 days", "> 2 days")
#: one answer as ``mailflow.stats.store.responses`` gives it: (route, priority, agent,
#: seconds, in_time)
Answer = tuple[str, str, str, float, bool | None]
#: the escalate rules' measures, as ``stats_counts`` names them
ESCALATION_MEASURES: tuple[Measure, ...] = ("escalation", "reminder", "supervisor")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation between the closest ranks
    (numpy's default, and a spreadsheet's PERCENTILE); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def bucket_of(seconds: float) -> int:
    """Index in ``BUCKET_LIMITS`` of a response time: the first limit above it."""
    return next(i for i, limit in enumerate(BUCKET_LIMITS) if seconds < limit)


def success_rate(in_time: int, late: int) -> float | None:
    """Share answered by the promised time, among first responses that had one."""
    return in_time / (in_time + late) if in_time + late else None


@dataclass(frozen=True)
class RouteFigures:
    """First responses and deadlines of one route (team); ``''`` is no route."""

    route: str
    first_responses: int
    p50: float | None
    p90: float | None
    in_time: int
    late: int
    warnings: int
    breaches: int

    @property
    def success_rate(self) -> float | None:
        return success_rate(self.in_time, self.late)


@dataclass(frozen=True)
class AgentFigures:
    """One configured agent label (``other`` for agents the rules do not know)."""

    agent: str
    answers: int              # agent replies answering a customer who wrote last
    median: float | None      # of those answers' response times, seconds
    first_responses: int
    first_in_time: int


@dataclass(frozen=True)
class RuleFigures:
    """One escalate rule: forwards to its expert, reminders, supervisor escalations."""

    rule: str
    escalations: int
    reminders: int
    supervisor: int
    expert_answers: int
    expert_median: float | None


@dataclass(frozen=True)
class Report:
    """Every figure of one report, from ``since`` to ``until`` (Unix times)."""

    since: float
    until: float
    zone: str
    days: tuple[str, ...]
    has_statistics: bool
    per_agent: bool
    #: (day, direction, route) -> messages
    volumes: dict[tuple[str, str, str], int] = field(default_factory=dict)
    #: (day, route) -> cases opened
    opened: dict[tuple[str, str], int] = field(default_factory=dict)
    first_responses: int = 0
    first_p50: float | None = None
    first_p90: float | None = None
    first_mean: float | None = None
    buckets: tuple[int, ...] = (0,) * len(BUCKET_LIMITS)
    in_time: int = 0
    late: int = 0
    no_deadline: int = 0
    answers: int = 0
    answer_p50: float | None = None
    routes: tuple[RouteFigures, ...] = ()
    #: (route, deadline kind) -> breaches
    breaches: dict[tuple[str, str], int] = field(default_factory=dict)
    agents: tuple[AgentFigures, ...] = ()
    rules: tuple[RuleFigures, ...] = ()
    #: (route, priority, status) -> open cases now
    open_cases: dict[tuple[str, str, str], int] = field(default_factory=dict)
    #: the tables the plugins add (``mailflow_report_sections``)
    sections: tuple[ReportSection, ...] = ()

    @property
    def success_rate(self) -> float | None:
        return success_rate(self.in_time, self.late)

    def direction_totals(self) -> dict[str, int]:
        totals = dict.fromkeys(DIRECTIONS, 0)
        for (_, direction, _), count in self.volumes.items():
            totals[direction] = totals.get(direction, 0) + count
        return totals

    def route_names(self) -> list[str]:
        """Routes inbound mail went to, named routes first, then ``''`` (none)."""
        names = {route for (_, direction, route) in self.volumes if direction == "inbound"}
        return sorted(names, key=lambda r: (r == "", r))


# ---------------------------------------------------------------------------
# Reads: the statistics' own helpers (mailflow.stats.store), and this check
# ---------------------------------------------------------------------------



# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------


def day_of(ts: float, zone: ZoneInfo | None) -> str:
    """``YYYY-MM-DD`` of a Unix time in the statistics' zone (the system's when None)."""
    moment = datetime.fromtimestamp(ts, zone) if zone else datetime.fromtimestamp(ts)
    return moment.strftime("%Y-%m-%d")


def days_between(first: str, last: str) -> tuple[str, ...]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return tuple((start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1))


def _route_figures(first: list[Answer], warnings: Counter[str],
                   breaches: Counter[str]) -> tuple[RouteFigures, ...]:
    by_route: dict[str, list[tuple[float, bool | None]]] = defaultdict(list)
    for route, _, _, taken, in_time in first:
        by_route[route].append((taken, in_time))
    names = sorted(set(by_route) | set(warnings) | set(breaches),
                   key=lambda r: (r == "", r))
    figures = []
    for route in names:
        rows = by_route.get(route, [])
        seconds = [s for s, _ in rows]
        figures.append(RouteFigures(
            route=route, first_responses=len(rows), p50=percentile(seconds, 0.5),
            p90=percentile(seconds, 0.9), in_time=sum(1 for _, t in rows if t is True),
            late=sum(1 for _, t in rows if t is False), warnings=warnings[route],
            breaches=breaches[route]))
    return tuple(figures)


def _agent_figures(answers: list[Answer], first: list[Answer]) -> tuple[AgentFigures, ...]:
    times: dict[str, list[float]] = defaultdict(list)
    for _, _, agent, seconds, _ in answers:
        times[agent].append(seconds)
    firsts: dict[str, list[bool | None]] = defaultdict(list)
    for _, _, agent, _, in_time in first:
        firsts[agent].append(in_time)
    names = sorted((set(times) | set(firsts)) - {""}, key=lambda a: (a == "other", a))
    return tuple(AgentFigures(agent=a, answers=len(times.get(a, [])),
                              median=percentile(times.get(a, []), 0.5),
                              first_responses=len(firsts.get(a, [])),
                              first_in_time=sum(1 for t in firsts.get(a, []) if t is True))
                 for a in names)


def _rule_figures(tx: Transaction, since: float, since_day: str) -> tuple[RuleFigures, ...]:
    measured: dict[str, Counter[str]] = {m: Counter() for m in ESCALATION_MEASURES}
    for measure in ESCALATION_MEASURES:
        for _, _, _, label, count in counts(tx, since_day, measure):
            measured[measure][label] += count
    expert: dict[str, list[float]] = defaultdict(list)
    for _, _, rule, seconds, _ in responses(tx, since, "expert"):
        expert[rule].append(seconds)
    names = sorted(set().union(*measured.values(), expert))
    return tuple(RuleFigures(rule=r, escalations=measured["escalation"][r],
                             reminders=measured["reminder"][r],
                             supervisor=measured["supervisor"][r],
                             expert_answers=len(expert.get(r, [])),
                             expert_median=percentile(expert.get(r, []), 0.5))
                 for r in names)


def _sum_by(rows: Iterable[tuple[str, str, str, str, int]]) -> dict[tuple[str, str], int]:
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for day, route, _, _, count in rows:
        totals[(day, route)] += count
    return dict(totals)


def start_of_day(day: str, zone: ZoneInfo | None) -> float:
    """Unix time of midnight opening ``day`` in ``zone`` (the system's when None)."""
    midnight = datetime.combine(date.fromisoformat(day), time(0), tzinfo=zone)
    return (midnight if zone else midnight.astimezone()).timestamp()


def plugin_sections(settings: Settings) -> SectionsOf:
    """What the enabled plugins add to the report (none when the configuration does not
    load: the report is still worth reading)."""
    try:
        pm = get_plugin_manager(settings)
    except ConfigError:
        return lambda tx, since, until, zone: ()

    def sections(tx: Transaction, since: float, until: float,
                 zone: ZoneInfo | None) -> tuple[ReportSection, ...]:
        found = results_in_store(pm, "mailflow_report_sections", tx, since=since, until=until,
                                 zone=zone)
        return tuple(section for _, given in found for section in given or ()
                     if isinstance(section, ReportSection))

    return sections


def build_report(tx: Transaction, *, since: float, until: float, zone: ZoneInfo | None,
                 per_agent: bool = True, sections: SectionsOf | None = None) -> Report:
    """The figures of whole days, from the day ``since`` falls on to the day of ``until``,
    counted in ``zone`` (the default business calendar's: the statistics' days)."""
    since_day, last_day = day_of(since, zone), day_of(until, zone)
    start = start_of_day(since_day, zone)
    days = days_between(since_day, last_day)
    zone_name = str(zone or "local time")
    now_open: dict[tuple[str, str, str], int] = defaultdict(int)
    for route, priority, status, count in open_cases(tx):  # NULL and '' are both "none"
        now_open[(route, priority, status)] += count
    added = (*activity(tx, start, until),
             *(sections(tx, start, until, zone) if sections is not None else ()))
    if not schema_version(tx, "stats"):
        return Report(since=start, until=until, zone=zone_name, days=days,
                      has_statistics=False, per_agent=per_agent, open_cases=dict(now_open),
                      sections=added)
    first = responses(tx, start, "first_response")
    answers = responses(tx, start, "response")
    seconds = [row[3] for row in first]
    buckets = Counter(bucket_of(s) for s in seconds)
    sla: dict[Measure, Counter[str]] = {m: Counter() for m in ("sla_warning", "sla_breach")}
    breaches: dict[tuple[str, str], int] = defaultdict(int)
    for measure, counter in sla.items():
        for _, route, _, kind, count in counts(tx, since_day, measure):
            counter[route] += count
            if measure == "sla_breach":
                breaches[(route, kind)] += count
    return Report(
        since=start, until=until, zone=zone_name, days=days, has_statistics=True,
        per_agent=per_agent,
        volumes={(d, lbl, r): c for d, lbl, r, c in volumes(tx, since_day)},
        opened=_sum_by(counts(tx, since_day, "case_opened")),
        first_responses=len(seconds), first_p50=percentile(seconds, 0.5),
        first_p90=percentile(seconds, 0.9),
        first_mean=sum(seconds) / len(seconds) if seconds else None,
        buckets=tuple(buckets[i] for i in range(len(BUCKET_LIMITS))),
        in_time=sum(1 for row in first if row[4] is True),
        late=sum(1 for row in first if row[4] is False),
        no_deadline=sum(1 for row in first if row[4] is None),
        answers=len(answers), answer_p50=percentile([row[3] for row in answers], 0.5),
        routes=_route_figures(first, sla["sla_warning"], sla["sla_breach"]),
        breaches=dict(breaches),
        agents=_agent_figures(answers, first) if per_agent else (),
        rules=_rule_figures(tx, start, since_day), open_cases=dict(now_open), sections=added)


def activity(tx: Transaction, since: float, until: float) -> tuple[ReportSection, ...]:
    """mailflow's own tables: the mail it wrote, and in shadow mode what it decided."""
    if not schema_version(tx, "core"):
        return ()
    found = (shadow_decisions(tx, since, until), mail_written(tx, since, until))
    return tuple(section for section in found if section is not None)


async def read_report(url: str, settings: Settings, *, since: float, until: float,
                      zone: ZoneInfo | None) -> Report:
    """The report of the store at ``url``, opened read-only and closed afterwards."""
    store = open_store(url, readonly=True)
    await store.open([])
    try:
        return await store.run_read(functools.partial(
            build_report, since=until - since, until=until, zone=zone,
            per_agent=settings.statistics.per_agent, sections=plugin_sections(settings)))
    finally:
        await store.close()
