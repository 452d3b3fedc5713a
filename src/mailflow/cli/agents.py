"""``mailflow agents list | set NAME away|present``: routing sees it at once."""

from __future__ import annotations

import argparse
import asyncio
import sys
from functools import partial

from mailflow.cli.options import settings_from
from mailflow.config import ConfigError, Settings
from mailflow.store import open_store


def known_agents(settings: Settings) -> set[str] | None:
    """The names the route rules know, or None when they cannot say (no route stage)."""
    from mailflow.runtime import load_runtime
    from mailflow.stages.route import RouteStage

    try:
        runtime = load_runtime(settings)
    except ConfigError:
        return None  # `mailflow check` reports that; presence is still worth recording
    names: set[str] = set()
    routes = [stage for stage in runtime.chain.stages if isinstance(stage, RouteStage)]
    for stage in routes:
        names |= stage.agent_names()
    return names if routes else None


async def run_agents(settings: Settings, action: str, name: str | None,
                     status: str | None) -> int:
    from mailflow.agents import list_agents, set_agent

    known = known_agents(settings)
    if action == "set" and name and known is not None and name.lower() not in known:
        # a typo would change nothing: say so
        print(f"mailflow agents: no agent named '{name}' in the route rules "
              f"(known: {', '.join(sorted(known)) or 'none'})", file=sys.stderr)
        return 2

    store = open_store(settings.store_url)
    await store.open()
    try:
        if action == "list":  # every agent the rules know, present unless set away
            states = dict(await store.run_read(list_agents))
            for agent in sorted(set(known or ()) | set(states)):
                print(f"{agent:<20} {states.get(agent, 'present')}")
            return 0
        if not name or not status:
            print("mailflow agents set NAME away|present", file=sys.stderr)
            return 2
        await store.run_write(partial(set_agent, name=name, status=status))
        print(f"{name.lower()} {status}")
        return 0
    finally:
        await store.close()


def run(args: argparse.Namespace) -> int:
    return asyncio.run(run_agents(settings_from(args), args.action, args.name, args.status))
