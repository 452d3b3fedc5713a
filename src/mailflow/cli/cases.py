"""``mailflow cases list | show | close | reopen``: what the team needs about cases.

Times are shown in the zone of the rules' business calendar (the
``acknowledge`` section's ``calendar.timezone``: the zone the customer's
promise was made in), else in the system's, always with the zone's name.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime
from functools import partial
from zoneinfo import ZoneInfo

from mailflow import cases
from mailflow.business_hours import CalendarOptions
from mailflow.cli.options import existing_store_url, settings_from
from mailflow.config import ConfigError, Settings
from mailflow.rules import load_rules
from mailflow.store import Store, Transaction, open_store

#: actions that only read: they open the store read-only
READ_ONLY = frozenset({"list", "show"})


def calendar_zone(settings: Settings) -> ZoneInfo | None:
    """The business calendar's zone from the rules; None (the system's) without one."""
    try:
        section = load_rules(settings.rules).section("acknowledge")
    except ConfigError:
        return None  # `mailflow check` says what is wrong; the cases are still worth seeing
    if section is None:
        return None
    calendar = section.data.get("calendar") if isinstance(section.data, Mapping) else None
    name = calendar.get("timezone") if isinstance(calendar, Mapping) else None
    try:
        return ZoneInfo(str(name or CalendarOptions.model_fields["timezone"].default))
    except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        return None


def when(ts: float, zone: ZoneInfo | None) -> str:
    """``2026-11-23 09:30 CET``: local time, with the zone's name."""
    moment = datetime.fromtimestamp(ts, zone) if zone else datetime.fromtimestamp(ts).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M %Z")


#: each message of a case: which way it went, and who wrote it
_DIRECTION_OF_ROLE = {"customer": "inbound", "duplicate": "inbound", "agent": "reply",
                      "ack": "outgoing"}
_AUTHOR_OF_ROLE = {"customer": "customer", "duplicate": "customer", "agent": "agent",
                   "ack": "mailflow"}


def _history(tx: Transaction, number: str, zone: ZoneInfo | None) -> list[dict[str, object]]:
    rows = tx.execute("SELECT message_id, role, sender, created_at FROM case_messages"
                      " WHERE case_number = :number ORDER BY id", {"number": number})
    return [{"message_id": m, "role": r, "direction": _DIRECTION_OF_ROLE.get(r, r),
             "author": _AUTHOR_OF_ROLE.get(r, r), "sender": s, "at": when(t, zone)}
            for m, r, s, t in rows]


def _first_response(row: cases.CaseRow, answered_at: float | None,
                    zone: ZoneInfo | None) -> str:
    if answered_at is None:
        return "not yet"
    minutes = max(0, round((answered_at - row.created_at) / 60))
    kept = ("" if row.promised_at is None
            else "; in time" if answered_at <= row.promised_at else "; later than promised")
    return (f"{when(answered_at, zone)} ({minutes // 60} h {minutes % 60:02d} min after the"
            f" case opened{kept})")


async def _list(store: Store, zone: ZoneInfo | None, status: str | None, limit: int,
                as_json: bool) -> int:
    rows = await store.run_read(partial(cases.list_cases, status=status, limit=limit))
    if as_json:
        print(json.dumps([asdict(r) for r in rows], ensure_ascii=False, indent=2))
        return 0
    for case in rows:
        print(f"{case.number:<24} {case.status:<7} {when(case.created_at, zone)}  "
              f"{case.customer:<32} {case.subject[:60]}")
    return 0


def _show_lines(row: cases.CaseRow, answered_at: float | None,
                zone: ZoneInfo | None) -> list[str]:
    """The case, one ``label value`` line each; times local, with their zone."""
    fields: list[tuple[str, object]] = [
        (key, value) for key, value in asdict(row).items()
        if key not in ("created_at", "promised_at", "language")]
    fields += [
        ("language", row.language or "- (no acknowledgement sent)"),
        ("opened", when(row.created_at, zone)),
        ("promised", when(row.promised_at, zone) if row.promised_at is not None
         else "- (no acknowledgement sent)"),
        ("first reply", _first_response(row, answered_at, zone)),
    ]
    return [f"{key:<12} {'-' if value is None else value}" for key, value in fields]


async def _show(store: Store, zone: ZoneInfo | None, row: cases.CaseRow, as_json: bool) -> int:
    history = await store.run_read(partial(_history, number=row.number, zone=zone))
    answered_at = await store.run_read(partial(cases.first_response_at, number=row.number))
    if as_json:
        print(json.dumps({**asdict(row), "first_response_at": answered_at,
                          "messages": history}, ensure_ascii=False, indent=2))
        return 0
    print("\n".join(_show_lines(row, answered_at, zone)))
    for item in history:
        print(f"  {item['at']}  {item['direction']:<8} {item['author']:<8} "
              f"{item['sender']:<32} <{item['message_id']}>")
    return 0


async def _act(store: Store, zone: ZoneInfo | None, action: str, number: str,
               as_json: bool) -> int:
    """show, close or reopen one case."""
    row: cases.CaseRow | None = await store.run_read(partial(cases.get_case, number=number))
    if row is None:
        print(f"no case {number}", file=sys.stderr)
        return 1
    if action == "show":
        return await _show(store, zone, row, as_json)
    new_status = "closed" if action == "close" else "open"
    await store.run_write(partial(cases.update_case, number=row.number, status=new_status))
    print(f"{row.number} {new_status}")
    return 0


async def run_cases(settings: Settings, action: str, number: str | None, *,
                    status: str | None = None, limit: int = 50, as_json: bool = False) -> int:
    if action != "list" and not number:
        print(f"mailflow cases {action}: give a case number", file=sys.stderr)
        return 2
    store = open_store(existing_store_url(settings), readonly=action in READ_ONLY)
    zone = calendar_zone(settings)
    await store.open()
    try:
        if action == "list":
            return await _list(store, zone, status, limit, as_json)
        assert number  # checked before the store was opened
        return await _act(store, zone, action, number, as_json)
    finally:
        await store.close()


def run(args: argparse.Namespace) -> int:
    return asyncio.run(run_cases(settings_from(args), args.action, args.number,
                                 status=args.status, limit=args.limit, as_json=args.json))
