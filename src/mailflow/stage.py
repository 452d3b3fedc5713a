"""What a chain stage is: ``Stage[OptionsT]``, its options and what it gets at load time.

A stage is a plain object with a ``name``, a ``description``, an options
model for its rules section and ``async def process(ctx)``. It never touches
the wire or the store directly: it *asks* through the context
(:mod:`mailflow.context`) and the framework carries everything out.

``class VipStage(Stage[VipOptions])`` is all it takes for ``self.options`` to
be a validated, typed ``VipOptions``: the options model is read from the
generic parameter (or from ``Options`` when a class sets it).
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import Field

from mailflow.automatic import SHIPPED, Automatic, AutomaticDetector
from mailflow.clock import SYSTEM_CLOCK, Clock
from mailflow.config import Model, Problem
from mailflow.context import (
    CaseInfo,
    Decision,
    MessageContext,
    Signal,
    Stash,
    StashKey,
    Triage,
    WriteOp,
    safe_header_value,
)
from mailflow.direction import SERVICE_DIRECTIONS, ScopePart
from mailflow.events import CaseEvent, Listener
from mailflow.metrics import KnownLabels
from mailflow.services import Services
from mailflow.values import CaseStatus, Direction, OutgoingMail, Timer, Verdict

if TYPE_CHECKING:
    from mailflow.calendars import Calendars
    from mailflow.config import Settings
    from mailflow.metrics import MetricFactory
    from mailflow.rules import RuleSet
    from mailflow.textmatch import TermIndex

__all__ = [
    "ALL_DIRECTIONS", "SERVICE_DIRECTIONS", "Automatic", "AutomaticDetector", "CaseInfo",
    "CaseStatus", "Decision", "Direction", "FailurePolicy", "KnownLabels",
    "MessageContext", "OutgoingMail", "ScopePart", "Services", "Signal",
    "Stage", "StageEnv", "StageOptions", "Stash", "StashKey", "Timer", "Triage", "Verdict",
    "WriteOp", "safe_header_value",
]

FailurePolicy = Literal["tempfail", "skip"]
ALL_DIRECTIONS: frozenset[Direction] = frozenset(Direction)


class StageOptions(Model):
    """Options every stage accepts in its rules section."""

    timeout: float = Field(10.0, gt=0, description="seconds before the stage is abandoned")
    on_error: FailurePolicy | None = Field(
        None, description="tempfail the message (default) or skip the stage when it fails")


OptionsT = TypeVar("OptionsT", bound=StageOptions)


def _term_index() -> TermIndex:
    from mailflow.textmatch import TermIndex

    return TermIndex()


@dataclass(frozen=True)
class StageEnv:
    """What a stage gets at load time: the rules and settings it may consult."""

    rules: RuleSet
    settings: Settings
    metrics: MetricFactory
    #: every stage's keywords in one automaton: each message's text is scanned once
    terms: TermIndex = field(default_factory=lambda: _term_index())
    clock: Clock = SYSTEM_CLOCK
    #: the rules' automatic-mail signs; stages read each message's verdict from
    #: ``ctx.automatic`` and use this only for an address the message names
    automatic: AutomaticDetector = SHIPPED
    #: what the chain's stages offer each other (filled once the chain is built)
    services: Services = field(default_factory=Services)

    @property
    def calendars(self) -> Calendars:
        """The rules' business calendars (``calendars:``): ``.get(name)``, ``.default``."""
        return self.rules.calendars


class Stage(Generic[OptionsT]):
    """Base class for chain stages; subclass ``Stage[MyOptions]`` in a plugin.

    Class attributes: ``name`` (as written in ``chain:``), ``description``
    (one line), ``on_error`` (the default failure policy), ``requires``
    (stages that must run earlier), ``directions`` (the directions of mail
    it runs for; all of them unless it says otherwise).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: the rules section's model; read from ``Stage[OptionsT]`` when not set
    Options: ClassVar[type[StageOptions]] = StageOptions
    on_error: ClassVar[FailurePolicy] = "tempfail"
    requires: ClassVar[tuple[str, ...]] = ()
    #: the service's mail by default; a stage naming ``internal`` or ``passthrough`` too
    #: sees that mail as well, to look and count (it is relayed as received whatever the
    #: stage does, and what it writes commits after the relay: no addresses)
    directions: ClassVar[frozenset[Direction]] = SERVICE_DIRECTIONS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "Options" in cls.__dict__:
            return
        for base in getattr(cls, "__orig_bases__", ()):
            if typing.get_origin(base) is Stage:
                (argument,) = typing.get_args(base)
                if isinstance(argument, type) and issubclass(argument, StageOptions):
                    cls.Options = argument
                return

    def __init__(self, options: OptionsT, env: StageEnv) -> None:
        self.options = options
        self.env = env

    @property
    def timeout(self) -> float:
        return self.options.timeout

    @property
    def failure_policy(self) -> FailurePolicy:
        return self.options.on_error or self.on_error

    def scope(self) -> ScopePart:
        """The service mailboxes and agents this stage knows of (route's teams): they
        decide each message's direction (:mod:`mailflow.direction`). None by default."""
        return ScopePart()

    def provide(self, services: Services) -> None:
        """Offer services to the other stages (``services.provide(KEY, value, self.name)``),
        once the whole chain is built (:mod:`mailflow.services`). None by default."""

    def warnings(self) -> Iterable[Problem]:
        """What loads but is likely a mistake (an address in no local domain: a typo),
        each at its place (``env.rules.section(name).problem(message, loc)``):
        ``mailflow check`` prints them, the daemon logs them. None by default."""
        return ()

    def listeners(self) -> Iterable[tuple[type[CaseEvent], Listener]]:
        """The case events this stage listens to, with their listener each
        (:mod:`mailflow.events`); run in chain order. None by default."""
        return ()

    def known_labels(self) -> Iterable[KnownLabels]:
        """The label values of this stage's metrics that its options and the rules make
        known (its routes, reasons, rules…): ``KnownLabels.of(metric, label=values…)``.
        The framework starts each of their series at 0 when the chain is loaded and at
        each reload (:mod:`mailflow.known_labels`), so a dashboard shows 0 rather than
        "No data" before the first event. None by default."""
        return ()

    async def process(self, ctx: MessageContext) -> None:
        raise NotImplementedError
