"""Who is at work now: team members, their schedules, and who said they are away.

Routing chooses among the members present, and escalation chooses experts the
same way (:func:`present_members`, then :func:`take_turn` for a round robin).
Presence is the member's optional weekly ``schedule`` (ranges like
``"09:00-12:30"``, in the team's time zone) and the ``away`` status set with
``mailflow agents set NAME away`` (stored in the ``agents`` table).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Annotated

from pydantic import BeforeValidator, field_validator

from mailflow.business_hours import WEEKDAYS
from mailflow.config import Model, TimeRange
from mailflow.config.types import parse_time_range

if TYPE_CHECKING:
    from mailflow.context import MessageContext


class Member(Model):
    """One person of a team, as written in the rules."""

    address: str
    name: str = ""  # for `mailflow agents set NAME`; default: the local part
    schedule: dict[str, tuple[TimeRange, ...]] | None = None

    @field_validator("address")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()

    @field_validator("schedule")
    @classmethod
    def _days(cls, value: dict[str, tuple[str, ...]] | None) -> dict[str, tuple[str, ...]] | None:
        for day in value or {}:
            if day not in WEEKDAYS:
                raise ValueError(f"'{day}' is not a weekday")
        return value

    @property
    def agent(self) -> str:
        """The name presence is recorded under."""
        return (self.name or self.address.partition("@")[0]).lower()

    def on_duty(self, now: dt.datetime) -> bool:
        """Inside the member's schedule (always, without one) at ``now`` (local time)."""
        if self.schedule is None:
            return True
        for span in self.schedule.get(WEEKDAYS[now.weekday()], ()):
            start, end = parse_time_range(span)
            if start <= now.time() < end:
                return True
        return False

    def present(self, away: set[str], now: dt.datetime) -> bool:
        return self.agent not in away and self.on_duty(now)


def _members_from_short(value: object) -> object:
    """``members: [a@x, {address: b@x, schedule: …}]``: a bare address is a member."""
    if isinstance(value, list | tuple):
        return [{"address": v} if isinstance(v, str) else v for v in value]
    return value


#: a team's or an expert group's members, as the rules write them
Members = Annotated[tuple[Member, ...], BeforeValidator(_members_from_short)]


def present_members(members: Iterable[Member], away: set[str], now: dt.datetime) -> list[str]:
    """The addresses of the members present at ``now``, in the rules' order."""
    return [m.address for m in members if m.present(away, now)]


def is_present(address: str, members: Iterable[Member], away: set[str],
               now: dt.datetime) -> bool:
    """Whether the person at ``address`` is present; someone outside every team is
    present unless recorded away (by the local part of the address)."""
    for member in members:
        if member.address == address:
            return member.present(away, now)
    return address.partition("@")[0] not in away


async def take_turn(ctx: MessageContext, sequence: str, people: Sequence[str]) -> str:
    """The next of ``people`` in a round robin kept in the store's sequence ``sequence``.
    A dry run only peeks; a message refused downstream gives its turn back, so its retry
    goes to the same person."""
    turn = await ctx.next_value(sequence, give_back=True)
    return people[(turn - 1) % len(people)]
