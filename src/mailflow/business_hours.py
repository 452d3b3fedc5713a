"""Business calendar: working hours, public holidays, and the answer time we promise.

A promise is either *sliding* (N business hours after receipt) or *scheduled*
(the next business day at a fixed time, e.g. 12:00). Holidays come from the
``holidays`` package by country (and subdivision), plus explicit dates.
"""

from __future__ import annotations

import datetime as dt
from functools import cached_property
from typing import Literal
from zoneinfo import ZoneInfo

import holidays
from babel.dates import format_datetime
from pydantic import Field, field_validator, model_validator

from mailflow.config import ClockTime, Model, TimeRange, TimeZoneName
from mailflow.config.types import parse_clock_time, parse_time_range

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_FORMATS = {"fr": "EEEE d MMMM y 'à' HH:mm", "en": "EEEE d MMMM y 'at' HH:mm"}


def _office_hours() -> dict[str, tuple[str, ...]]:
    return {day: ("09:00-12:30", "13:30-18:00") for day in WEEKDAYS[:5]}


class CalendarOptions(Model):
    """When the team works. Hours are ``"09:00-12:30"`` ranges per weekday."""

    timezone: TimeZoneName = "Europe/Paris"
    country: str | None = "FR"
    subdivision: str | None = None
    extra_holidays: tuple[dt.date, ...] = ()
    hours: dict[str, tuple[TimeRange, ...]] = Field(default_factory=lambda: _office_hours())

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for day in value:
            if day not in WEEKDAYS:
                raise ValueError(f"'{day}' is not a weekday ({', '.join(WEEKDAYS)})")
        return value

    @model_validator(mode="after")
    def _country(self) -> CalendarOptions:
        if self.country:
            try:
                holidays.country_holidays(self.country, subdiv=self.subdivision)
            except NotImplementedError:
                raise ValueError(f"no holiday list for country '{self.country}'") from None
        return self


class PromiseOptions(Model):
    """One of: ``sliding_hours: 8`` or ``next_business_day_at: "12:00"``."""

    sliding_hours: float | None = Field(None, gt=0)
    next_business_day_at: ClockTime | None = None

    @model_validator(mode="after")
    def _one(self) -> PromiseOptions:
        if (self.sliding_hours is None) == (self.next_business_day_at is None):
            raise ValueError("give exactly one of sliding_hours or next_business_day_at")
        return self

    @property
    def kind(self) -> Literal["sliding", "scheduled"]:
        return "sliding" if self.sliding_hours is not None else "scheduled"


class BusinessCalendar:
    """Answers "when is N working hours from now" in the team's time zone."""

    def __init__(self, options: CalendarOptions) -> None:
        self.options = options
        self.zone = ZoneInfo(options.timezone)
        self._ranges: dict[int, list[tuple[dt.time, dt.time]]] = {}
        for day, items in options.hours.items():
            self._ranges[WEEKDAYS.index(day)] = sorted(parse_time_range(i) for i in items)

    @cached_property
    def _holidays(self) -> holidays.HolidayBase | None:
        o = self.options
        return holidays.country_holidays(o.country, subdiv=o.subdivision) if o.country else None

    def is_business_day(self, day: dt.date) -> bool:
        if not self._ranges.get(day.weekday()):
            return False
        if day in self.options.extra_holidays:
            return False
        return not (self._holidays is not None and day in self._holidays)

    def _spans(self, day: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
        if not self.is_business_day(day):
            return []
        return [(dt.datetime.combine(day, a, self.zone), dt.datetime.combine(day, b, self.zone))
                for a, b in self._ranges.get(day.weekday(), [])]

    def add_business_hours(self, start: dt.datetime, hours: float) -> dt.datetime:
        """``start`` plus ``hours`` of working time (outside hours count from the next span)."""
        remaining = dt.timedelta(hours=hours)
        current = start.astimezone(self.zone)
        for _ in range(3660):  # ten years of days: a calendar with no working day is an error
            for span_start, span_end in self._spans(current.date()):
                begin = max(span_start, current)
                if begin >= span_end:
                    continue
                available = span_end - begin
                if remaining <= available:
                    return begin + remaining
                remaining -= available
            current = dt.datetime.combine(current.date() + dt.timedelta(days=1), dt.time(0),
                                          self.zone)
        raise ValueError("the calendar has no working hours")

    def next_business_day_at(self, start: dt.datetime, at: dt.time) -> dt.datetime:
        """The first business day strictly after ``start``'s day, at ``at``."""
        day = start.astimezone(self.zone).date()
        for _ in range(3660):
            day += dt.timedelta(days=1)
            if self.is_business_day(day):
                return dt.datetime.combine(day, at, self.zone)
        raise ValueError("the calendar has no business day")

    def promise(self, received: dt.datetime, policy: PromiseOptions) -> dt.datetime:
        if policy.sliding_hours is not None:
            return self.add_business_hours(received, policy.sliding_hours)
        assert policy.next_business_day_at is not None
        return self.next_business_day_at(received, parse_clock_time(policy.next_business_day_at))

    def format(self, when: dt.datetime, language: str) -> str:
        """"Vendredi 27 novembre 2026 à 12:00" / "Friday 27 November 2026 at 12:00"."""
        lang = language if language in _FORMATS else "en"
        text = format_datetime(when.astimezone(self.zone), _FORMATS[lang], locale=lang)
        return text[:1].upper() + text[1:]
