"""The time decisions are made with: injected, so tests move it instead of sleeping.

Decision code (what a case's number date is, whether a limit per day is
reached, when a timer is due, when an outbox row is retried) asks a ``Clock``
for the wall time. Durations measured for metrics and deadlines (timeouts)
keep using ``time.monotonic`` / ``time.perf_counter``: they are not decisions.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock time as a Unix timestamp (seconds, float)."""

    def now(self) -> float: ...


class SystemClock:
    """The real time."""

    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock that moves only when told to: for tests, never for production."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        self._now += seconds
        return self._now

    def set(self, when: float) -> None:
        self._now = when


SYSTEM_CLOCK = SystemClock()
