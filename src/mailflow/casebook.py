"""``mailflow cases``: what the team needs from the command line about cases."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import datetime
from functools import partial

from mailflow import cases
from mailflow.config import Settings
from mailflow.store import Transaction, open_store


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _history(tx: Transaction, number: str) -> list[dict[str, object]]:
    rows = tx.execute("SELECT message_id, role, sender, created_at FROM case_messages"
                      " WHERE case_number = ? ORDER BY id", (number,))
    return [{"message_id": m, "role": r, "sender": s, "at": _when(t)} for m, r, s, t in rows]


async def run_cases(settings: Settings, action: str, number: str | None, *,
                    status: str | None = None, limit: int = 50, as_json: bool = False) -> int:
    store = open_store(settings.store_url)
    await store.open()
    try:
        if action == "list":
            rows = await store.run_read(partial(cases.list_cases, status=status, limit=limit))
            if as_json:
                print(json.dumps([asdict(r) for r in rows], ensure_ascii=False, indent=2))
            for case in [] if as_json else rows:
                print(f"{case.number:<24} {case.status:<7} {_when(case.created_at)}  "
                      f"{case.customer:<32} {case.subject[:60]}")
            return 0
        if not number:
            print(f"mailflow cases {action}: give a case number", file=sys.stderr)
            return 2
        row: cases.CaseRow | None = await store.run_read(partial(cases.get_case, number=number))
        if row is None:
            print(f"no case {number}", file=sys.stderr)
            return 1
        if action == "show":
            history = await store.run_read(partial(_history, number=row.number))
            data = {**asdict(row), "messages": history}
            if as_json:
                print(json.dumps(data, ensure_ascii=False, indent=2))
            else:
                for key, value in asdict(row).items():
                    print(f"{key:<12} {value}")
                for item in history:
                    print(f"  {item['at']}  {item['role']:<9} {item['sender']:<32} "
                          f"<{item['message_id']}>")
            return 0
        new_status = "closed" if action == "close" else "open"
        await store.run_write(partial(cases.update_case, number=row.number, status=new_status))
        print(f"{row.number} {new_status}")
        return 0
    finally:
        await store.close()


def _known_agents(settings: Settings) -> set[str] | None:
    """The names the route rules know, or None when they cannot say (no route stage)."""
    from mailflow.config import ConfigError
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
    """``mailflow agents list | set NAME away|present``: routing sees it at once."""
    from mailflow.stages.route import list_agents, set_agent

    known = _known_agents(settings)
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
