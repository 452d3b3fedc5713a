"""The report as one HTML page: tables of the exact figures, and plotly.js charts of them.

Charts are drawn in the browser by plotly.js: its partial bundle of bar, scatter and
pie traces (the report draws bars only, a quarter of the full library's size), which
``make`` installs beside this module (see :data:`BASIC_BUNDLE`), else the full bundle
of the ``plotly`` wheel; no CDN is ever named. ``--html FILE`` inlines the library (the
file works offline, mailed or opened from a disk); the metrics listener serves it at
``/report/plotly.min.js``. Jinja2 escapes every value (route, rule and agent names come
from the rules), and the figures' JSON is HTML-safe. Every chart and figure carries a
stable ``id`` or ``data-figure`` attribute, with the raw number in ``data-value``. Each
chart shows one measure, named on its one y axis, which starts at 0; counts have whole
ticks, and a chart with nothing to show says so.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import structlog
from markupsafe import Markup

from mailflow.report.data import BUCKET_NAMES, DIRECTIONS, Report

log = structlog.get_logger("mailflow.report")

#: where the metrics listener serves plotly.js (relative to ``/report``)
PLOTLY_PATH = "/report/plotly.min.js"
#: plotly.js's partial bundle, in ``static/`` beside this module: installed by ``make``
#: from the npm registry (``plotly.js-basic-dist-min``, its digest checked), not kept in
#: the repository
BASIC_BUNDLE = "plotly-basic.min.js"
#: the trace types that bundle draws: the only ones the charts may use
BASIC_TRACES = frozenset({"bar", "scatter", "pie"})
_BUNDLE_VERSION = re.compile(r"plotly\.js \(basic - minified\) v(\S+)")
#: colours of the directions, in the order of ``DIRECTIONS``
COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#7f7f7f")
NO_ROUTE = "(no route)"


@functools.cache
def _library() -> tuple[str, str]:
    """(plotly.js, its version): the partial bundle ``make`` installs, else the plotly
    wheel's full bundle (four times the size: a warning says so)."""
    bundle = resources.files("mailflow.report") / "static" / BASIC_BUNDLE
    if bundle.is_file():
        text = bundle.read_text(encoding="utf-8")
        found = _BUNDLE_VERSION.search(text[:500])
        return text, f"{found.group(1) if found else 'unknown'}-basic"
    from plotly.offline import get_plotlyjs, get_plotlyjs_version

    log.warning("report_full_plotly", missing=str(bundle),
                detail="the report's pages carry the full plotly.js; `make` installs the"
                " partial bundle")
    return str(get_plotlyjs()), str(get_plotlyjs_version())


def plotly_js() -> str:
    """The plotly.js the report's pages load (see :func:`_library`)."""
    return _library()[0]


def plotly_version() -> str:
    """Its version (``4.1.1-basic`` for the partial bundle): the library URL's ``?v=``."""
    return _library()[1]


def duration(seconds: float | None) -> str:
    """``45 min``, ``2 h 05 min``, ``1 d 3 h``: a response time as a supervisor reads it."""
    if seconds is None:
        return "–"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min" if minutes else f"{round(seconds)} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def percent(share: float | None) -> str:
    return "–" if share is None else f"{share * 100:.1f} %"


def route_name(route: str) -> str:
    return route or NO_ROUTE


def _layout(title: str, measure: str, **extra: Any) -> dict[str, Any]:
    """A chart's layout: its title, and its one y axis named after its one ``measure``,
    starting at 0 (an empty chart's axis too)."""
    return {"title": {"text": title}, "margin": {"l": 60, "r": 30, "t": 50, "b": 60},
            "height": 340, "legend": {"orientation": "h"}, "xaxis": {"type": "category"},
            "yaxis": {"title": {"text": measure}, "rangemode": "nonnegative"}, **extra}


def _counts(layout: dict[str, Any], traces: list[dict[str, Any]], stacked: bool) -> None:
    """``layout`` with whole ticks on its y axis (a count has no half), and for a chart
    with nothing to show an axis from 0 to 1 and a note that says so."""
    top = max((sum(t["y"][i] for t in traces) if stacked else max(t["y"][i] for t in traces)
               for i in range(len(traces[0]["y"]) if traces else 0)), default=0)
    axis = layout["yaxis"]
    axis["tickformat"] = ",d"
    if top <= 10:
        axis["dtick"] = 1  # plotly's own choice would be 0.5 or 0.2 for small counts
    if not top:
        _nothing(layout)


def _nothing(layout: dict[str, Any]) -> None:
    """A chart with nothing to show says so (and shows no category axis)."""
    layout["yaxis"].setdefault("range", [0, 1])
    layout["xaxis"] = {"visible": False}
    layout["annotations"] = [{"text": "nothing in this period", "showarrow": False,
                              "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5,
                              "font": {"color": "#777"}}]


def _bars(name: str, x: list[str], y: list[float], colour: str | None = None,
          **extra: Any) -> dict[str, Any]:
    trace: dict[str, Any] = {"type": "bar", "name": name, "x": x, "y": y, **extra}
    if colour:
        trace["marker"] = {"color": colour}
    return trace


def _chart(title: str, measure: str, traces: list[dict[str, Any]], *, stacked: bool = False,
           count: bool = True, **extra: Any) -> dict[str, Any]:
    """One chart of one measure (``count``: whole numbers) over a category axis."""
    layout = _layout(title, measure, barmode="stack" if stacked else "group", **extra)
    if count:
        _counts(layout, traces, stacked)
    elif not any(t["y"] for t in traces):
        _nothing(layout)
    return {"data": traces, "layout": layout}


def figures(report: Report) -> dict[str, dict[str, Any]]:
    """The plotly figures (``data`` and ``layout``) of each chart, by chart id."""
    days = list(report.days)
    charts: dict[str, dict[str, Any]] = {}
    charts["volumes"] = _chart("Mail per day, by direction", "messages", [
        _bars(direction, days, [sum(c for (d, di, _), c in report.volumes.items()
                                    if d == day and di == direction) for day in days], colour)
        for direction, colour in zip(DIRECTIONS, COLOURS, strict=True)], stacked=True)
    charts["routes"] = _chart("Inbound mail per day, by route", "messages", [
        _bars(route_name(route), days, [report.volumes.get((day, "inbound", route), 0)
                                        for day in days])
        for route in report.route_names()], stacked=True)
    charts["first-response"] = _chart("Time to the first response", "cases", [
        _bars("first responses", list(BUCKET_NAMES), list(report.buckets), "#ff7f0e")],
        showlegend=False)
    routes = [r for r in report.routes if r.success_rate is not None]
    success = _chart("Answered within the promised time", "% of first responses", [
        _bars("answered in time", [route_name(r.route) for r in routes],
              [round((r.success_rate or 0) * 100, 1) for r in routes], "#2ca02c")],
        count=False, showlegend=False)
    success["layout"]["yaxis"].update(range=[0, 100], ticksuffix=" %")
    charts["success"] = success
    kinds = sorted({kind for (_, kind) in report.breaches})
    breach_routes = sorted({route for (route, _) in report.breaches}, key=lambda r: (r == "", r))
    charts["breaches"] = _chart("SLA breaches, by team", "breaches", [
        _bars(kind.replace("_", " "), [route_name(r) for r in breach_routes],
              [report.breaches.get((r, kind), 0) for r in breach_routes])
        for kind in kinds], stacked=True)
    if report.per_agent:
        agents = [a.agent for a in report.agents]
        charts["agent-answers"] = _chart("Answers per agent", "answers", [
            _bars("answers", agents, [a.answers for a in report.agents], "#17becf")],
            showlegend=False)
        charts["agent-response"] = _chart("Median response time per agent", "hours", [
            _bars("median response", agents,
                  [round((a.median or 0) / 3600, 2) for a in report.agents], "#bcbd22")],
            count=False, showlegend=False)
    rules = list(report.rules)
    charts["escalations"] = _chart("Escalations, by rule", "cases", [
        _bars(label, [r.rule for r in rules], [getattr(r, attr) for r in rules])
        for label, attr in (("escalations", "escalations"), ("reminders", "reminders"),
                            ("to the supervisor", "supervisor"))])
    return charts


def _local(ts: float, zone: str) -> str:
    try:
        tz: ZoneInfo | None = ZoneInfo(zone)
    except (KeyError, ValueError):  # "local time"
        tz = None
    moment = datetime.fromtimestamp(ts, tz) if tz else datetime.fromtimestamp(ts).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M %Z")


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("mailflow.report", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(duration=duration, percent=percent, route=route_name)
    env.globals.update(directions=DIRECTIONS, bucket_names=BUCKET_NAMES)
    return env


def render(report: Report, *, inline_js: bool, nonce: str = "") -> str:
    """The page. ``inline_js``: plotly.js inside the page (a file that works offline);
    otherwise a script tag to ``PLOTLY_PATH`` on the same listener. ``nonce``: the
    Content-Security-Policy nonce of the page's own inline script."""
    totals = report.direction_totals()
    return environment().get_template("report.html.j2").render(
        r=report, totals=totals, charts=figures(report),
        period=(_local(report.since, report.zone), _local(report.until, report.zone)),
        plotly_inline=Markup(plotly_js()) if inline_js else None,
        plotly_src=f"{PLOTLY_PATH}?v={plotly_version()}", nonce=nonce,
        breaches_total=sum(report.breaches.values()),
        open_total=sum(report.open_cases.values()),
        opened_total=sum(report.opened.values()))


def text_summary(report: Report) -> str:
    """The headline figures as plain text (``mailflow report`` without ``--html``)."""
    lines = [f"mailflow report {_local(report.since, report.zone)} to "
             f"{_local(report.until, report.zone)}"]
    if not report.has_statistics:
        lines.append("no statistics in this store yet (run `mailflow migrate`)")
    totals = report.direction_totals()
    lines.append("mail: " + ", ".join(f"{d} {totals[d]}" for d in DIRECTIONS))
    lines.append(f"cases opened: {sum(report.opened.values())}; open now: "
                 f"{sum(report.open_cases.values())}")
    lines.append(f"first responses: {report.first_responses} (median "
                 f"{duration(report.first_p50)}, p90 {duration(report.first_p90)})")
    lines.append(f"answered within the promised time: {percent(report.success_rate)} "
                 f"({report.in_time} of {report.in_time + report.late}; "
                 f"{report.no_deadline} without a deadline)")
    lines.append(f"SLA breaches: {sum(report.breaches.values())}")
    for route in report.routes:
        lines.append(f"  {route_name(route.route):<20} first {route.first_responses:>4}  "
                     f"median {duration(route.p50):>12}  in time {percent(route.success_rate):>8}"
                     f"  breaches {route.breaches}")
    if report.per_agent and report.agents:
        lines.append("agents:")
        lines.extend(f"  {a.agent:<30} answers {a.answers:>4}  median {duration(a.median)}"
                     for a in report.agents)
    for rule in report.rules:
        lines.append(f"escalate {rule.rule}: {rule.escalations} forwarded, {rule.reminders}"
                     f" reminders, {rule.supervisor} to the supervisor")
    for section in report.sections:
        lines.append(f"{section.title}:")
        lines.append("  " + "  ".join(str(c) for c in section.columns))
        lines.extend("  " + "  ".join(str(v) for v in row) for row in section.rows)
    return "\n".join(lines)
