"""Durations as the rules write them: plain time or business time.

``90s``, ``30m``, ``4h``, ``2d`` are plain (a night and a weekend count);
``2bh`` (business hours) and ``1bd`` (business days) count only when the
team works, on a :class:`~mailflow.business_hours.BusinessCalendar`. The
calendar does the arithmetic (``calendar.add(start, duration)``); this
module only reads and writes the text, so a typo in the rules is a load
error with a sentence, never a surprise at three in the morning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TEXT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|bh|bd)\s*", re.IGNORECASE)
_HELP = "a duration like 90s, 30m, 4h, 2d (plain) or 2bh, 1bd (business hours, days)"


@dataclass(frozen=True)
class Duration:
    """One of: ``seconds`` of plain time, ``business_hours`` or ``business_days``."""

    seconds: float = 0.0
    business_hours: float = 0.0
    business_days: int = 0

    def __post_init__(self) -> None:
        given = [v for v in (self.seconds, self.business_hours, self.business_days) if v]
        if len(given) != 1 or given[0] < 0:
            raise ValueError("a duration is exactly one positive amount")

    @property
    def is_business(self) -> bool:
        return not self.seconds

    def __str__(self) -> str:
        if self.business_days:
            return f"{self.business_days}bd"
        if self.business_hours:
            return f"{_number(self.business_hours)}bh"
        for unit in ("d", "h", "m"):
            if self.seconds % _UNITS[unit] == 0:
                return f"{_number(self.seconds / _UNITS[unit])}{unit}"
        return f"{_number(self.seconds)}s"


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def parse_duration(text: str) -> Duration:
    """``"4h"`` → ``Duration(seconds=14400)``; ``"2bh"``, ``"1bd"`` → business time."""
    match = _TEXT.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"'{text}' is not {_HELP}")
    amount, unit = float(match.group(1)), match.group(2).lower()
    if amount <= 0:
        raise ValueError(f"'{text}': a duration must be more than zero")
    if unit == "bd":
        if amount != int(amount):
            raise ValueError(f"'{text}': business days are whole days (1bd, 2bd)")
        return Duration(business_days=int(amount))
    if unit == "bh":
        return Duration(business_hours=amount)
    return Duration(seconds=amount * _UNITS[unit])


def _coerce(value: Any) -> Duration:
    if isinstance(value, Duration):
        return value
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"{value!r} is not {_HELP}")
    return parse_duration(value)


DurationField = Annotated[Duration, BeforeValidator(_coerce), PlainSerializer(str)]
"""A rules option holding a :class:`Duration`, written as text (``"2bh"``)."""
