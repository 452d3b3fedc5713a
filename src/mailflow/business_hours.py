"""Business calendar: working hours, public holidays, and the answer time we promise.

A promise is either *sliding* (N business hours after receipt) or *scheduled*
(the next business day at a fixed time, e.g. 12:00). Holidays come from the
``holidays`` package by country (and subdivision), plus explicit dates.

The promise is written in the customer's language with that language's own
CLDR patterns (Babel): "mercredi 3 décembre 2026 à 12:00", "Wednesday,
December 3, 2026 at 12:00 PM". A customer writing in another language than
the calendar's own (FR → fr) may live in another zone, so the zone is added
for them: "… at 12:00 PM (Central European Standard Time, GMT+01:00)".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from functools import cached_property, lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

import holidays
from babel import Locale, UnknownLocaleError
from babel.core import get_global
from babel.dates import format_datetime
from pydantic import Field, field_validator, model_validator

from mailflow.config import ClockTime, Model, TimeRange, TimeZoneName
from mailflow.config.types import parse_clock_time, parse_time_range
from mailflow.durations import Duration

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
FALLBACK_LANGUAGE = "en"
#: CLDR's "atTime" glue of a full date and a time ({1} the date, {0} the time), which
#: Babel does not ship; a language not listed uses its locale's full date-time pattern.
_AT_TIME = {"en": "{1} 'at' {0}", "fr": "{1} 'à' {0}", "de": "{1} 'um' {0}",
            "nl": "{1} 'om' {0}", "es": "{1}, {0}", "it": "{1} {0}", "pt": "{1} 'às' {0}",
            "ca": "{1} 'a' 'les' {0}"}
#: after the time, for a customer who may be elsewhere: the zone's name for that date
#: (summer time included) and its offset, the one thing any reader can compute with
_ZONE = " (zzzz, OOOO)"
_SAMPLE = dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC)
#: how far to look for a working span: ten years; a calendar with none is an error
_HORIZON_DAYS = 3660


@lru_cache(maxsize=256)
def locale_for(language: str) -> Locale | None:
    """Babel's locale for a language tag (``fr``, ``en_GB``, ``pt-BR``), None if unknown;
    parsed once per tag, since CLDR data loads on first use."""
    try:
        return Locale.parse(language.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return None


def _locale(value: str) -> str:
    if locale_for(value) is None:
        raise ValueError(f"unknown language '{value}' (e.g. fr, en, en_GB)")
    return value


def _pattern(language: str, pattern: str) -> str:
    locale = locale_for(language)
    try:
        format_datetime(_SAMPLE, pattern, locale=locale)
    except (ValueError, KeyError, AttributeError) as exc:
        raise ValueError(f"date pattern for '{language}': {exc}") from None
    return pattern


def default_pattern(locale: Locale, with_zone: bool) -> str:
    """The locale's full date and short time, joined as its language joins them."""
    date = str(locale.date_formats["full"].pattern)
    time = str(locale.time_formats["short"].pattern)
    glue = _AT_TIME.get(str(locale.language)) or str(locale.datetime_formats["full"])
    text = glue.replace("{1}", date).replace("{0}", time)
    return text + _ZONE if with_zone else text


def _office_hours() -> dict[str, tuple[str, ...]]:
    return {day: ("09:00-12:30", "13:30-18:00") for day in WEEKDAYS[:5]}


class CalendarOptions(Model):
    """When the team works. Hours are ``"09:00-12:30"`` ranges per weekday."""

    timezone: TimeZoneName = "Europe/Paris"
    country: str | None = "FR"
    subdivision: str | None = None
    extra_holidays: tuple[dt.date, ...] = ()
    hours: dict[str, tuple[TimeRange, ...]] = Field(default_factory=lambda: _office_hours())
    #: the calendar's own language, whose customers need no zone; unset: the main
    #: language of ``country`` (or of the time zone's country)
    language: str | None = None
    #: when the promise names the zone: ``foreign`` (the customer's language is not
    #: the calendar's), ``always`` or ``never``
    show_zone: Literal["foreign", "always", "never"] = "foreign"
    #: a CLDR date pattern per language, used as written (zone included only if it
    #: has one: ``zzzz``, ``VVVV``, ``OOOO``), e.g. ``{en: "EEEE d MMMM y 'at' HH:mm"}``
    formats: dict[str, str] = Field(default_factory=dict)

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for day in value:
            if day not in WEEKDAYS:
                raise ValueError(f"'{day}' is not a weekday ({', '.join(WEEKDAYS)})")
        return value

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return None if value is None else _locale(value)

    @field_validator("formats")
    @classmethod
    def _formats(cls, value: dict[str, str]) -> dict[str, str]:
        return {_locale(language): _pattern(language, pattern)
                for language, pattern in value.items()}

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
        self._styles: dict[str, tuple[Locale, str]] = {}
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

    def _open_spans(self, day: dt.date) -> list[tuple[float, float]]:
        """The day's working spans as Unix times: exact across a change of summer time."""
        return [(a.timestamp(), b.timestamp()) for a, b in self._spans(day)]

    def _days_from(self, ts: float) -> Iterator[dt.date]:
        day = dt.datetime.fromtimestamp(ts, self.zone).date()
        for offset in range(_HORIZON_DAYS):
            yield day + dt.timedelta(days=offset)

    def is_open(self, ts: float) -> bool:
        """Is the team at work at ``ts``?"""
        day = dt.datetime.fromtimestamp(ts, self.zone).date()
        return any(a <= ts < b for a, b in self._open_spans(day))

    def next_open(self, ts: float) -> float:
        """``ts`` if the team works then, else the start of its next working span."""
        for day in self._days_from(ts):
            for a, b in self._open_spans(day):
                if ts < b:
                    return max(a, ts)
        raise ValueError("the calendar has no working hours")

    def add(self, start: float, duration: Duration) -> float:
        """``start`` plus ``duration``: plain time as it is; business hours counted only
        inside working spans; business days: the same local time N working days later,
        moved to the next opening when the team does not work at that time."""
        if duration.seconds:
            return start + duration.seconds
        if duration.business_days:
            return self._add_days(start, duration.business_days)
        remaining = duration.business_hours * 3600.0
        for day in self._days_from(start):
            for a, b in self._open_spans(day):
                begin = max(a, start)
                if begin >= b:
                    continue
                if remaining <= b - begin:
                    return begin + remaining
                remaining -= b - begin
        raise ValueError("the calendar has no working hours")

    def _add_days(self, start: float, days: int) -> float:
        local = dt.datetime.fromtimestamp(start, self.zone)
        counted = 0
        for day in self._days_from(start):
            if day == local.date() or not self.is_business_day(day):
                continue
            counted += 1
            if counted == days:
                # wall-clock time of that day (fold 0: the first of an hour seen twice)
                target = dt.datetime.combine(day, local.time().replace(fold=0), self.zone)
                return self.next_open(target.timestamp())
        raise ValueError("the calendar has no business day")

    def add_business_hours(self, start: dt.datetime, hours: float) -> dt.datetime:
        """``start`` plus ``hours`` of working time (outside hours count from the next span)."""
        end = self.add(start.timestamp(), Duration(business_hours=hours))
        return dt.datetime.fromtimestamp(end, self.zone)

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

    @cached_property
    def language(self) -> str | None:
        """The calendar's own language: configured, else its country's (FR → fr)."""
        o = self.options
        territory = o.country or get_global("zone_territories").get(o.timezone)
        locale = (locale_for(o.language) if o.language
                  else locale_for(f"und_{territory}") if territory else None)
        return str(locale.language) if locale is not None else None

    def _style(self, language: str) -> tuple[Locale, str]:
        """(locale, pattern) for a language, worked out once per calendar."""
        style = self._styles.get(language)
        if style is None:
            locale = locale_for(language) or locale_for(FALLBACK_LANGUAGE)
            assert locale is not None
            pattern = self.options.formats.get(language)
            if pattern is None:
                show = self.options.show_zone
                foreign = self.language is None or locale.language != self.language
                pattern = default_pattern(locale, show == "always"
                                          or (show == "foreign" and foreign))
            style = self._styles[language] = (locale, pattern)
        return style

    def format(self, when: dt.datetime, language: str) -> str:
        """``when`` in the team's zone, as the customer's language writes it: "mercredi
        3 décembre 2026 à 12:00"; with the zone for a customer of another language."""
        locale, pattern = self._style(language)
        return str(format_datetime(when.astimezone(self.zone), pattern, locale=locale))
