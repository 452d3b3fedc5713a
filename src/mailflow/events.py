"""Case events: what happened to a case, raised by whoever made it happen, heard by any
plugin.

A stage that answers a case (``replies``, ``escalate``), the ``number`` stage
opening or reopening one, a timer closing an idle case, ``mailflow cases close``
from the command line: each raises an event with ``await ctx.emit(event)``;
the listeners (a stage's :meth:`~mailflow.stage.Stage.listeners`) run at once,
on the same context, so what they ask for (writes, mail, timers) commits in
the same transaction as the work that raised it, or not at all. Stages meet
this way instead of importing each other: ``sla`` stops its clocks when a case
is answered or closed, ``statistics`` records the answer's delay, whoever
answered.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from mailflow.values import Priority

if TYPE_CHECKING:
    from mailflow.context import Effects


@dataclass(frozen=True)
class CaseEvent:
    """Something happened to case ``number`` at ``at`` (the clock's time)."""

    number: str
    at: float


@dataclass(frozen=True)
class CaseOpened(CaseEvent):
    """A customer's message opened a new case (``parent``: the closed case it continues)."""

    customer: str
    mailbox: str = ""
    parent: str | None = None


@dataclass(frozen=True)
class CaseReopened(CaseEvent):
    """A customer wrote again on a closed case, which is open again."""


@dataclass(frozen=True)
class CaseAnswered(CaseEvent):
    """The customer got an answer: from an agent, or from an expert writing to them
    directly. ``by`` is the address that answered, ``agent`` its name in the rules
    (``other`` for anyone else: a metric label never holds an address); ``automatic``:
    written by mailflow itself, not by a person."""

    by: str
    role: Literal["agent", "expert"] = "agent"
    agent: str = "other"
    route: str | None = None
    automatic: bool = False


@dataclass(frozen=True)
class CaseClosed(CaseEvent):
    """The case was closed: ``by`` says who (``command line``, ``auto-close``, a plugin)."""

    by: str


@dataclass(frozen=True)
class CaseSettled(CaseEvent):
    """A customer's message ended its chain: the priority it was given (None: not
    triaged), and the route and assignee it was given (route None: not routed). The
    case's owner records them (the case keeps the highest priority its messages had):
    whichever stage or plugin set them, the case row agrees with the headers."""

    priority: Priority | None = None
    route: str | None = None
    assignee: str | None = None


EventT = TypeVar("EventT", bound=CaseEvent)
#: a listener: called with the context that raised the event, and the event
Listener = Callable[["Effects", Any], Awaitable[None] | None]


class EventBus:
    """Who listens to which event, built with the chain at each load of the rules."""

    def __init__(self, listeners: Iterable[tuple[type[CaseEvent], Listener]] = ()) -> None:
        self._listeners: dict[type[CaseEvent], list[Listener]] = {}
        for kind, listener in listeners:
            self._listeners.setdefault(kind, []).append(listener)

    @property
    def kinds(self) -> Mapping[type[CaseEvent], list[Listener]]:
        return self._listeners

    async def emit(self, effects: Effects, event: CaseEvent) -> None:
        """Run every listener of ``event``'s type (and of its base types), in the order
        the stages stand in the chain."""
        for kind in type(event).__mro__:
            for listener in self._listeners.get(kind, ()):
                result = listener(effects, event)
                if inspect.isawaitable(result):
                    await result


NO_LISTENERS = EventBus()
