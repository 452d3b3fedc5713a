"""Services: what one stage offers the others, typed, looked up by key at run time.

Stages meet through services and events, never by importing each other: a
third-party ``route`` stage that provides ``TEAMS`` keeps ``escalate`` working,
and one that does not leaves it with a documented fallback instead of a
crash. A stage provides its services in :meth:`~mailflow.stage.Stage.provide`
once the whole chain is built; consumers ask ``env.services.get(KEY)`` when a
message needs it (None when no stage of the chain provides it).

The well-known keys are declared here, like the hooks in :mod:`mailflow.hookspecs`:
the contract belongs to neither side.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

if TYPE_CHECKING:
    from mailflow.context import StageStore
    from mailflow.message import Message
    from mailflow.triage import Scale

T = TypeVar("T")
#: (case number, token) named by a reply address (``experts+<case>.<token>@``)
Token = tuple[str, str]


class ServiceKey(Generic[T]):
    """A typed key for a service; one per service, at import time."""

    __slots__ = ("description", "name")

    def __init__(self, name: str, description: str = "") -> None:
        self.name = name
        self.description = description

    def __repr__(self) -> str:
        return f"ServiceKey({self.name!r})"


class ReplyTokens(Protocol):
    """Which reply-address tokens of a message the store confirms (an expert's answer
    comes back by its own address, from any network)."""

    async def verified(self, message: Message, store: StageStore,
                       now: float) -> Collection[Token]: ...


class Services:
    """The services of one loaded chain."""

    def __init__(self) -> None:
        self._provided: dict[ServiceKey[Any], tuple[Any, str]] = {}

    def provide(self, key: ServiceKey[T], value: T, by: str) -> None:
        """Offer ``value`` under ``key``; a second provider is a configuration error."""
        if key in self._provided:
            raise ValueError(f"service '{key.name}' is provided by both"
                             f" '{self._provided[key][1]}' and '{by}'")
        self._provided[key] = (value, by)

    def get(self, key: ServiceKey[T]) -> T | None:
        found = self._provided.get(key)
        return cast(T, found[0]) if found is not None else None

    def provider(self, key: ServiceKey[Any]) -> str | None:
        found = self._provided.get(key)
        return found[1] if found is not None else None

    def named(self) -> dict[str, str]:
        """service name -> the stage that provides it (``mailflow check``)."""
        return {key.name: by for key, (_, by) in self._provided.items()}


#: team name -> its mailboxes (``route``): where an expert's answer goes without assignee
TEAMS: ServiceKey[Mapping[str, tuple[str, ...]]] = ServiceKey(
    "teams", "team name -> the team's addresses")
#: the score thresholds of the priority levels (``prioritise``)
TRIAGE_SCALE: ServiceKey[Scale] = ServiceKey("triage-scale", "score thresholds of the levels")
#: reply-address tokens confirmed by the store (``escalate``)
REPLY_TOKENS: ServiceKey[ReplyTokens] = ServiceKey(
    "reply-tokens", "reply-address tokens the store confirms")
#: every route a case may be given (``route``): the teams, a person rule's name,
#: ``account-manager``; the values of the metrics' ``route`` label known at load
ROUTES: ServiceKey[Collection[str]] = ServiceKey("routes", "every route a case may be given")
#: the names the rules give the people who answer (``route``; anyone else is ``other``):
#: the values of the per-agent metrics' ``agent`` label
AGENTS: ServiceKey[Collection[str]] = ServiceKey("agents", "the rules' names of the agents")
