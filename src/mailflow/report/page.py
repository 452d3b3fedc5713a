"""The report as one HTML page: tables of the exact figures, and plotly.js charts of them.

Charts are drawn in the browser by plotly.js, the library the ``plotly``
wheel bundles: no CDN is ever named. ``--html FILE`` inlines the library
(the file works offline, mailed or opened from a disk); the metrics
listener serves it at ``/report/plotly.min.js``. Jinja2 escapes every
value (route, rule and agent names come from the rules), and the figures'
JSON is HTML-safe. Every chart and figure carries a stable ``id`` or
``data-figure`` attribute, with the raw number in ``data-value``.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from markupsafe import Markup

from mailflow.report.data import BUCKET_NAMES, DIRECTIONS, Report

#: where the metrics listener serves plotly.js (relative to ``/report``)
PLOTLY_PATH = "/report/plotly.min.js"
#: colours of the directions, in the order of ``DIRECTIONS``
COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#7f7f7f")
NO_ROUTE = "(no route)"


@functools.cache
def plotly_js() -> str:
    """plotly.min.js as the installed plotly wheel ships it."""
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


@functools.cache
def plotly_version() -> str:
    import plotly

    return str(plotly.__version__)


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


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    return {"title": {"text": title}, "margin": {"l": 60, "r": 60, "t": 50, "b": 60},
            "height": 340, "legend": {"orientation": "h"}, "xaxis": {"type": "category"},
            **extra}


def _bars(name: str, x: list[str], y: list[float], colour: str | None = None,
          **extra: Any) -> dict[str, Any]:
    trace: dict[str, Any] = {"type": "bar", "name": name, "x": x, "y": y, **extra}
    if colour:
        trace["marker"] = {"color": colour}
    return trace


def figures(report: Report) -> dict[str, dict[str, Any]]:
    """The plotly figures (``data`` and ``layout``) of each chart, by chart id."""
    days = list(report.days)
    charts: dict[str, dict[str, Any]] = {}
    charts["volumes"] = {"data": [
        _bars(direction, days, [sum(c for (d, di, _), c in report.volumes.items()
                                    if d == day and di == direction) for day in days], colour)
        for direction, colour in zip(DIRECTIONS, COLOURS, strict=True)],
        "layout": _layout("Mail per day, by direction", barmode="stack")}
    charts["routes"] = {"data": [
        _bars(route_name(route), days, [report.volumes.get((day, "inbound", route), 0)
                                        for day in days])
        for route in report.route_names()],
        "layout": _layout("Inbound mail per day, by route", barmode="stack")}
    charts["first-response"] = {"data": [
        _bars("first responses", list(BUCKET_NAMES), list(report.buckets), "#ff7f0e")],
        "layout": _layout("Time to the first response", showlegend=False)}
    routes = [r for r in report.routes if r.success_rate is not None]
    charts["success"] = {"data": [
        _bars("answered in time", [route_name(r.route) for r in routes],
              [round((r.success_rate or 0) * 100, 1) for r in routes], "#2ca02c")],
        "layout": _layout("Answered within the promised time (%)", showlegend=False,
                          yaxis={"range": [0, 100]})}
    kinds = sorted({kind for (_, kind) in report.breaches})
    breach_routes = sorted({route for (route, _) in report.breaches}, key=lambda r: (r == "", r))
    charts["breaches"] = {"data": [
        _bars(kind.replace("_", " "), [route_name(r) for r in breach_routes],
              [report.breaches.get((r, kind), 0) for r in breach_routes])
        for kind in kinds], "layout": _layout("SLA breaches, by team", barmode="stack")}
    if report.per_agent:
        agents = list(report.agents)
        charts["agents"] = {"data": [
            _bars("answers", [a.agent for a in agents], [a.answers for a in agents], "#17becf",
                  offsetgroup="answers"),
            _bars("median response (h)", [a.agent for a in agents],
                  [round((a.median or 0) / 3600, 2) for a in agents], "#bcbd22",
                  yaxis="y2", offsetgroup="median")],
            "layout": _layout("Agents: answers and median response time", barmode="group",
                              yaxis2={"overlaying": "y", "side": "right", "title": "hours"})}
    rules = list(report.rules)
    charts["escalations"] = {"data": [
        _bars(label, [r.rule for r in rules], [getattr(r, attr) for r in rules])
        for label, attr in (("escalations", "escalations"), ("reminders", "reminders"),
                            ("to the supervisor", "supervisor"))],
        "layout": _layout("Escalations, by rule", barmode="group")}
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
