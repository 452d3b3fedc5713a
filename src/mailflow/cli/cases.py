"""``mailflow cases list | show | close | reopen``: what the team needs about cases."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from datetime import datetime
from functools import partial

from mailflow import cases
from mailflow.cli.options import settings_from
from mailflow.config import Settings
from mailflow.store import Store, Transaction, open_store


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


#: each message of a case: which way it went, and who wrote it
_DIRECTION_OF_ROLE = {"customer": "inbound", "duplicate": "inbound", "agent": "reply",
                      "ack": "outgoing"}
_AUTHOR_OF_ROLE = {"customer": "customer", "duplicate": "customer", "agent": "agent",
                   "ack": "mailflow"}


def _history(tx: Transaction, number: str) -> list[dict[str, object]]:
    rows = tx.execute("SELECT message_id, role, sender, created_at FROM case_messages"
                      " WHERE case_number = :number ORDER BY id", {"number": number})
    return [{"message_id": m, "role": r, "direction": _DIRECTION_OF_ROLE.get(r, r),
             "author": _AUTHOR_OF_ROLE.get(r, r), "sender": s, "at": _when(t)}
            for m, r, s, t in rows]


def _first_response(row: cases.CaseRow, answered_at: float | None) -> str:
    if answered_at is None:
        return "not yet"
    minutes = max(0, round((answered_at - row.created_at) / 60))
    return f"{_when(answered_at)} ({minutes // 60} h {minutes % 60:02d} min after the case opened)"


async def _list(store: Store, status: str | None, limit: int, as_json: bool) -> int:
    rows = await store.run_read(partial(cases.list_cases, status=status, limit=limit))
    if as_json:
        print(json.dumps([asdict(r) for r in rows], ensure_ascii=False, indent=2))
        return 0
    for case in rows:
        print(f"{case.number:<24} {case.status:<7} {_when(case.created_at)}  "
              f"{case.customer:<32} {case.subject[:60]}")
    return 0


async def _show(store: Store, row: cases.CaseRow, as_json: bool) -> int:
    history = await store.run_read(partial(_history, number=row.number))
    answered_at = await store.run_read(partial(cases.first_response_at, number=row.number))
    if as_json:
        print(json.dumps({**asdict(row), "first_response_at": answered_at,
                          "messages": history}, ensure_ascii=False, indent=2))
        return 0
    for key, value in asdict(row).items():
        print(f"{key:<12} {value}")
    print(f"{'first reply':<12} {_first_response(row, answered_at)}")
    for item in history:
        print(f"  {item['at']}  {item['direction']:<8} {item['author']:<8} "
              f"{item['sender']:<32} <{item['message_id']}>")
    return 0


async def _act(store: Store, action: str, number: str | None, as_json: bool) -> int:
    """show, close or reopen one case."""
    if not number:
        print(f"mailflow cases {action}: give a case number", file=sys.stderr)
        return 2
    row: cases.CaseRow | None = await store.run_read(partial(cases.get_case, number=number))
    if row is None:
        print(f"no case {number}", file=sys.stderr)
        return 1
    if action == "show":
        return await _show(store, row, as_json)
    new_status = "closed" if action == "close" else "open"
    await store.run_write(partial(cases.update_case, number=row.number, status=new_status))
    print(f"{row.number} {new_status}")
    return 0


async def run_cases(settings: Settings, action: str, number: str | None, *,
                    status: str | None = None, limit: int = 50, as_json: bool = False) -> int:
    store = open_store(settings.store_url)
    await store.open()
    try:
        if action == "list":
            return await _list(store, status, limit, as_json)
        return await _act(store, action, number, as_json)
    finally:
        await store.close()


def run(args: argparse.Namespace) -> int:
    return asyncio.run(run_cases(settings_from(args), args.action, args.number,
                                 status=args.status, limit=args.limit, as_json=args.json))
