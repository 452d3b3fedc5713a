"""The time decisions are made with: injected, so tests move it instead of sleeping.

Decision code (what a case's number date is, whether a limit per day is
reached, when a timer is due, when an outbox row is retried) asks a ``Clock``
for the wall time. Durations measured for metrics and deadlines (timeouts)
keep using ``time.monotonic`` / ``time.perf_counter``: they are not decisions.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol

import structlog


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


class FileClock:
    """Time read from a file holding a Unix time: the test clock of a daemon process.

    Tests move it from outside (restart and kill -9 included: the time is the
    file). The file is re-read only when it changes (inode, times or size),
    so asking the time stays cheap. Never for production: ``serve`` refuses it
    without ``--allow-test-clock``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._seen: tuple[int, ...] | None = None
        self._now = self._read()  # a missing or bad file stops the start, here

    def _read(self) -> float:
        text = self.path.read_text(encoding="utf-8").strip()
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"test clock {self.path}: {text[:40]!r} is not a Unix time")\
                from None

    def now(self) -> float:
        try:
            stat = self.path.stat()
            seen = (stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size)
            if seen != self._seen:
                self._now, self._seen = self._read(), seen
        except (OSError, ValueError):
            pass  # caught mid-write or removed: the time last read stands
        return self._now

    def set(self, when: float) -> None:
        """Move the clock (what tests do from outside, atomically)."""
        write_clock_file(self.path, when)


def write_clock_file(path: str | os.PathLike[str], when: float) -> None:
    """Write ``when`` into a test clock file atomically (readers never see half of it)."""
    target = Path(path)
    partial = target.with_name(f".{target.name}.tmp")
    partial.write_text(f"{when!r}\n", encoding="utf-8")
    os.replace(partial, target)


SYSTEM_CLOCK = SystemClock()

TEST_CLOCK_REFUSED = ("test_clock is set: this daemon would run on a fake time; refusing to"
                      " start without --allow-test-clock (tests only)")


class TestClockRefused(Exception):
    """``test_clock`` is set but ``serve`` was not given ``--allow-test-clock``."""

    __test__ = False  # not a test class, whatever its name says


def daemon_clock(test_clock: str | None, allow_test_clock: bool) -> Clock:
    """The real time, or the ``test_clock`` file's, which only an explicit
    ``--allow-test-clock`` lets a daemon run on (and says so in the log)."""
    if test_clock is None:
        return SYSTEM_CLOCK
    if not allow_test_clock:
        raise TestClockRefused(TEST_CLOCK_REFUSED)
    try:
        clock = FileClock(test_clock)
    except (OSError, ValueError) as exc:
        raise TestClockRefused(f"test_clock: cannot read {test_clock}: {exc}") from None
    structlog.get_logger("mailflow.daemon").warning(
        "test_clock_in_use", path=test_clock, now=clock.now(),
        detail="time comes from this file, not the system: tests only")
    return clock
