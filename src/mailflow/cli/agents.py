"""``mailflow agents list | set AGENT away|present``: routing sees it at once.

An agent is named as presence is recorded (a member's ``name:``, else the
local part of the address) or by the full address the rules give.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from functools import partial

from mailflow.cli.options import CliError, existing_store_url, settings_from
from mailflow.config import ConfigError, Settings
from mailflow.store import open_store


@dataclass(frozen=True)
class Directory:
    """The agents the route rules know: their names, and the name of each address."""

    names: set[str] = field(default_factory=set)
    addresses: dict[str, str] = field(default_factory=dict)


def known_agents(settings: Settings) -> Directory | None:
    """The agents the route rules know, or None when they cannot say (no route stage)."""
    from mailflow.runtime import load_runtime
    from mailflow.stages.route import RouteStage

    try:
        runtime = load_runtime(settings)
    except ConfigError:
        return None  # `mailflow check` reports that; presence is still worth recording
    routes = [stage for stage in runtime.chain.stages if isinstance(stage, RouteStage)]
    if not routes:
        return None
    directory = Directory()
    for stage in routes:
        directory.names.update(stage.agent_names())
        # people outside the teams (account managers, a rule's person) go by their local part
        people = [*stage.managers.values(), *(r.person for r in stage.options.rules if r.person)]
        directory.addresses.update({p.lower(): p.partition("@")[0].lower() for p in people})
        directory.addresses.update({m.address: m.agent for team in stage.options.teams.values()
                                    for m in team.members})
    return directory


def agent_name(given: str, known: Directory | None) -> str:
    """The name presence is recorded under, for a name or a full address; a typo would
    change nothing, so an agent the rules do not know is refused."""
    wanted = given.strip().lower()
    listed = f"(known: {', '.join(sorted(known.names)) or 'none'})" if known else ""
    if "@" in wanted:
        if known is None:
            return wanted.partition("@")[0]
        if wanted not in known.addresses:
            raise CliError(f"no agent with the address '{given}' in the route rules {listed}", 2)
        return known.addresses[wanted]
    if known is not None and wanted not in known.names:
        raise CliError(f"no agent named '{given}' in the route rules {listed}", 2)
    return wanted


async def _list(url: str, known: Directory | None) -> int:
    """Every agent the rules know, present unless set away (and any set by hand)."""
    from mailflow.agents import list_agents

    store = open_store(url, readonly=True)
    await store.open(())
    try:
        states = dict(await store.run_read(list_agents))
    finally:
        await store.close()
    for agent in sorted(set(known.names if known else ()) | set(states)):
        print(f"{agent:<20} {states.get(agent, 'present')}")
    return 0


async def _set(url: str, name: str, status: str) -> int:
    from mailflow.agents import set_agent
    from mailflow.plugins import builtin_schemas

    store = open_store(url)
    await store.open(builtin_schemas())
    try:
        await store.run_write(partial(set_agent, name=name, status=status))
    finally:
        await store.close()
    print(f"{name} {status}")
    return 0


async def run_agents(settings: Settings, action: str, given: str | None,
                     status: str | None) -> int:
    if action == "list":
        return await _list(existing_store_url(settings), known_agents(settings))
    if not given or not status:
        print("mailflow agents set NAME|ADDRESS away|present", file=sys.stderr)
        return 2
    url = existing_store_url(settings)  # before the rules: the quicker answer
    return await _set(url, agent_name(given, known_agents(settings)), status)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(run_agents(settings_from(args), args.action, args.name, args.status))
