"""The rules' named business calendars (``calendars:``), shared by every stage.

One place says when the team works (time zone, working hours, public and
company holidays), so the acknowledgement's promise, the SLA deadlines and
the reminders all count the same hours. The section is a core one: it is
validated when the rules are read (``file:line:column`` on a typo) and
reaches stages as ``env.calendars``::

    calendars:
      default: {timezone: Europe/Paris, country: FR, extra_holidays: [2026-12-24]}
      support-us: {timezone: America/New_York, country: US}

``calendars.get()`` (or ``.default``) is the ``default`` one; without a
section, it is the built-in office calendar (Paris, French holidays).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from pydantic import RootModel, field_validator

from mailflow.business_hours import BusinessCalendar, CalendarOptions

DEFAULT = "default"


class CalendarsSection(RootModel[dict[str, CalendarOptions]]):
    """``calendars:``: calendar name → its options."""

    model_config = {"frozen": True}

    @field_validator("root")
    @classmethod
    def _names(cls, value: dict[str, CalendarOptions]) -> dict[str, CalendarOptions]:
        for name in value:
            if not name or not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"'{name}' is not a calendar name (letters, digits, - and _)")
        return value


class Calendars:
    """Named business calendars; always has a ``default`` one."""

    def __init__(self, options: Mapping[str, CalendarOptions] | None = None) -> None:
        given = dict(options or {})
        #: whether the rules say when the team works (else the built-in office hours)
        self.configured = DEFAULT in given
        given.setdefault(DEFAULT, CalendarOptions())
        self._calendars = {name: BusinessCalendar(o) for name, o in given.items()}

    def get(self, name: str | None = None) -> BusinessCalendar:
        """The calendar called ``name`` (the default one for None); KeyError if unknown,
        with the names there are."""
        key = name or DEFAULT
        try:
            return self._calendars[key]
        except KeyError:
            raise KeyError(f"no calendar '{key}' in calendars: (known: "
                           f"{', '.join(sorted(self._calendars))})") from None

    @property
    def default(self) -> BusinessCalendar:
        return self._calendars[DEFAULT]

    def __contains__(self, name: object) -> bool:
        return name in self._calendars

    def __iter__(self) -> Iterator[str]:
        return iter(self._calendars)
