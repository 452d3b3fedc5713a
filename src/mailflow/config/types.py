"""Shared pydantic value types, validated when the rules are loaded.

A misspelt time zone or a malformed ``HH:MM-HH:MM`` range is reported as
``file:line:column`` by ``mailflow check``, never as a traceback at run time.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator


def parse_clock_time(value: str) -> dt.time:
    """``"09:00"`` → ``time(9, 0)``, with a sentence an operator understands."""
    try:
        return dt.time.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"'{value}' is not a time like 09:00") from None


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone '{value}' (e.g. Europe/Paris)") from None
    return value


def parse_time_range(value: str) -> tuple[dt.time, dt.time]:
    """``"09:00-12:30"`` → (start, end); the start must come before the end."""
    start, sep, end = value.partition("-")
    if sep:
        try:
            first, last = parse_clock_time(start), parse_clock_time(end)
        except ValueError:
            first = last = dt.time()
        if first < last:
            return first, last
    raise ValueError(f"'{value}' is not a range like 09:00-12:30")


def _range(value: str) -> str:
    parse_time_range(value)
    return value


def _clock_time(value: str) -> str:
    parse_clock_time(value)
    return value


TimeZoneName = Annotated[str, AfterValidator(_zone)]
"""An IANA time zone name such as ``Europe/Paris``."""

TimeRange = Annotated[str, AfterValidator(_range)]
"""A ``HH:MM-HH:MM`` range within one day."""

ClockTime = Annotated[str, AfterValidator(_clock_time)]
"""A ``HH:MM`` time of day."""
