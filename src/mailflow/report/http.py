"""``/report`` and ``/report/plotly.min.js`` on the metrics listener.

The listener runs on a thread of its own; the report never touches the
daemon's event loop. Each request opens the store read-only on a private
event loop (SQLite: a read-only connection; PostgreSQL: its read-only
pool), reads, and closes it, one report at a time: a manager refreshing
the page cannot slow the SMTP side beyond one reader's share.

Who may read it: on a loopback listener, anyone on the machine (like
``/metrics``) unless ``statistics.report_token`` is set; on any other
address the token is required (``?token=`` or ``Authorization: Bearer``),
and without one configured the page is refused, saying so.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import structlog

from mailflow.config import Settings
from mailflow.host import Host, Route
from mailflow.report.data import read_report
from mailflow.report.page import PLOTLY_PATH, plotly_js, render

log = structlog.get_logger("mailflow.report")

#: how far back ``/report`` looks without ``?since=``
DEFAULT_SINCE = 7 * 86400.0


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; a wildcard or a name is not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def access(settings: Settings, environ: dict[str, Any]) -> str | None:
    """Why the request may not see the report (None: it may)."""
    token = settings.statistics.report_token
    address = settings.metrics_address
    open_listener = address is not None and is_loopback(address[0])
    if token is None:
        if open_listener:
            return None
        return ("the report is refused: the metrics listener is not on loopback and no"
                " statistics.report_token is set (set one, then open /report?token=…)")
    given = parse_qs(environ.get("QUERY_STRING", "")).get("token", [""])[0]
    header = str(environ.get("HTTP_AUTHORIZATION", ""))
    if header[:7].lower() == "bearer ":
        given = header[7:].strip()
    if given and hmac.compare_digest(given.encode(), token.encode()):
        return None
    return "a valid token is required: /report?token=… or Authorization: Bearer …"


def since_of(environ: dict[str, Any]) -> float:
    """Seconds back from now: ``?since=7d`` (plain durations), 7 days by default."""
    from mailflow.durations import parse_duration

    text = parse_qs(environ.get("QUERY_STRING", "")).get("since", [""])[0]
    if not text:
        return DEFAULT_SINCE
    duration = parse_duration(text)
    if duration.is_business:
        raise ValueError(f"'{text}': the report counts plain time (7d, 24h)")
    return duration.seconds


def _respond(start_response: Callable[..., Any], status: str, body: bytes,
             content_type: str, extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    start_response(status, [("Content-Type", content_type),
                            ("Content-Length", str(len(body))),
                            ("X-Content-Type-Options", "nosniff"), *(extra or [])])
    return [body]


def _text(start_response: Callable[..., Any], status: str, message: str) -> list[bytes]:
    return _respond(start_response, status, f"{message}\n".encode(), "text/plain; charset=utf-8")


def report_app(settings: Settings, zone: Callable[[], ZoneInfo | None],
               clock: Callable[[], float] = time.time) -> list[Route]:
    """The listener's report routes. ``zone``: the default business calendar's (the
    running rules'), the one the statistics count days in."""
    one_at_a_time = threading.Lock()

    def page(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        refused = access(settings, environ)
        if refused is not None:
            return _text(start_response, "403 Forbidden", refused)
        try:
            since = since_of(environ)
        except ValueError as exc:
            return _text(start_response, "400 Bad Request", str(exc))
        with one_at_a_time:
            try:
                report = asyncio.run(read_report(
                    settings.shadow_store_url if settings.mode == "shadow"
                    else settings.store_url, settings, since=since, until=clock(),
                    zone=zone()))
            except Exception as exc:  # the store away, or not there yet
                log.warning("report_failed", error=str(exc))
                return _text(start_response, "503 Service Unavailable",
                             f"the report cannot be read now: {exc}")
        nonce = secrets.token_urlsafe(16)
        body = render(report, inline_js=False, nonce=nonce).encode()
        policy = ("default-src 'none'; script-src 'self' 'nonce-" + nonce + "';"
                  " style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
                  " font-src 'self' data:; connect-src 'none'; base-uri 'none';"
                  " form-action 'none'; frame-ancestors 'none'")
        return _respond(start_response, "200 OK", body, "text/html; charset=utf-8",
                        [("Content-Security-Policy", policy), ("Cache-Control", "no-store"),
                         ("Referrer-Policy", "no-referrer")])

    def library(environ: dict[str, Any],
                start_response: Callable[..., Any]) -> Iterable[bytes]:
        # public code, no figure in it: served without the token, cached for long
        return _respond(start_response, "200 OK", plotly_js().encode(),
                        "text/javascript; charset=utf-8",
                        [("Cache-Control", "public, max-age=31536000, immutable")])

    return [Route("/report", page), Route(PLOTLY_PATH, library)]


def report_routes(host: Host) -> list[Route]:
    """``/report`` for the daemon behind ``host``: days in its rules' default calendar (the
    rules in force), the time on its clock."""
    def zone() -> ZoneInfo | None:
        calendars = host.rules.calendars
        return calendars.default.zone if calendars.configured else None

    return report_app(host.settings, zone, host.clock.now)
