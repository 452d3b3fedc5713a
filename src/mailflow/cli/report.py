"""``mailflow report [--since 7d] [--html FILE]``: the statistics of the last days.

Read-only: the store is opened as ``cases list`` opens it, and never
created. Days are whole days in the zone of the rules' default business
calendar, the zone the statistics are recorded in, from the day ``--since``
falls on to today. Without ``--html`` the headline figures are printed; the
HTML file holds the charts' library inline, so it works offline (mailed,
or opened from a disk).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

from mailflow.cli.cases import calendar_zone
from mailflow.cli.options import CliError, existing_store_url, settings_from
from mailflow.config import Settings
from mailflow.durations import parse_duration
from mailflow.report.data import Report, read_report
from mailflow.report.page import render, text_summary


def since_seconds(text: str) -> float:
    """``7d``, ``24h``, ``90m``: plain time back from now (business time makes no sense
    for a period of statistics)."""
    try:
        duration = parse_duration(text)
    except ValueError as exc:
        raise CliError(f"--since: {exc}", code=2) from None
    if duration.is_business:
        raise CliError(f"--since: '{text}' is business time; give plain time (7d, 24h)",
                       code=2)
    return duration.seconds


async def read(settings: Settings, since: float, until: float) -> Report:
    return await read_report(existing_store_url(settings), settings, since=since,
                             until=until, zone=calendar_zone(settings))


def write_atomically(path: Path, text: str) -> None:
    """The whole page or none: a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def run_report(settings: Settings, since: str, html: str | None,
               until: float | None = None) -> int:
    report = asyncio.run(read(settings, since_seconds(since),
                              time.time() if until is None else until))
    if html is None:
        print(text_summary(report))
        return 0
    if html == "-":
        print(render(report, inline_js=True))
        return 0
    target = Path(html)
    write_atomically(target, render(report, inline_js=True))
    print(f"report written to {target.absolute()}")
    return 0


def run(args: argparse.Namespace) -> int:
    return run_report(settings_from(args), args.since, args.html)
