"""``mailflow cases list | show | close | reopen``: what the team needs about cases.

Times are shown in the zone of the rules' default business calendar
(``calendars: default``: the zone the customer's promise was made in), else
in the system's, always with the zone's name. ``show`` lists each SLA
deadline and whether it was met. ``close`` and ``reopen`` raise the same case
events as the daemon (``CaseClosed``, ``CaseReopened``): the chain's stages
hear them, so closing a case stops its SLA clocks and reminders.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from functools import partial
from zoneinfo import ZoneInfo

from mailflow import acks, cases, deadlines
from mailflow.cli.options import existing_store_url, settings_from
from mailflow.clock import SYSTEM_CLOCK
from mailflow.config import ConfigError, Settings
from mailflow.context import Effects
from mailflow.events import CaseClosed, CaseReopened, EventBus
from mailflow.plugins import get_plugin_manager, results_in_store
from mailflow.rules import load_rules
from mailflow.store import Store, Transaction, open_store
from mailflow.store.schema import Schema, schema_version

#: actions that only read: they open the store read-only
READ_ONLY = frozenset({"list", "show"})


def calendar_zone(settings: Settings) -> ZoneInfo | None:
    """The default business calendar's zone from the rules; None (the system's) when the
    rules do not load or name no calendar."""
    try:
        calendars = load_rules(settings.rules).calendars
        return calendars.default.zone if calendars.configured else None
    except ConfigError:
        return None  # `mailflow check` says what is wrong; the cases are still worth seeing


def when(ts: float, zone: ZoneInfo | None) -> str:
    """``2026-11-23 09:30 CET``: local time, with the zone's name."""
    moment = datetime.fromtimestamp(ts, zone) if zone else datetime.fromtimestamp(ts).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M %Z")


#: each message of a case: which way it went, and who wrote it
_DIRECTION_OF_ROLE = {"customer": "inbound", "duplicate": "inbound", "agent": "reply",
                      "ack": "outgoing", "escalation": "outgoing", "expert": "reply",
                      "expert-auto": "reply", "expert-customer": "reply"}
_AUTHOR_OF_ROLE = {"customer": "customer", "duplicate": "customer", "agent": "agent",
                   "ack": "mailflow", "escalation": "mailflow", "expert": "expert",
                   "expert-auto": "expert (automatic)",
                   "expert-customer": "expert (to the customer)"}


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


def _ack_fates(tx: Transaction, number: str) -> list[acks.AckFate]:
    """The acknowledgements' story; none on a store without the stage's tables."""
    return acks.fates(tx, number) if schema_version(tx, "acknowledge") >= 2 else []


async def _list(store: Store, zone: ZoneInfo | None, status: str | None, limit: int,
                as_json: bool) -> int:
    rows = await store.run_read(partial(cases.list_cases, status=status, limit=limit))
    if as_json:
        print(json.dumps([asdict(r) for r in rows], ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no cases" + (f" {status}" if status else ""))
        return 0
    opened = len(when(rows[0].created_at, zone))
    print(f"{'NUMBER':<24} {'STATUS':<7} {'OPENED':<{opened}}  {'CUSTOMER':<32} SUBJECT")
    for case in rows:
        print(f"{case.number:<24} {case.status:<7} {when(case.created_at, zone)}  "
              f"{case.customer:<32} {case.subject[:60]}")
    return 0


_DEADLINE_LABELS: dict[str, str] = {deadlines.FIRST_RESPONSE: "first response",
                                   deadlines.UPDATE: "update"}


def deadline_line(deadline: deadlines.Deadline, zone: ZoneInfo | None) -> str:
    """``first response due 2026-11-23 12:00 CET: met (2026-11-23 10:12 CET)``."""
    state = deadline.state
    label = _DEADLINE_LABELS.get(deadline.kind, deadline.kind)
    detail = (f" ({when(deadline.met_at, zone)})" if deadline.met_at is not None
              else f" ({when(deadline.cancelled_at, zone)})"
              if deadline.cancelled_at is not None else "")
    return f"{label} due {when(deadline.due, zone)}: {state}{detail}"


def ack_line(fate: acks.AckFate, zone: ZoneInfo | None) -> str:
    """``sent 2026-11-23 09:12 CET``, ``waiting (paced) until …``, ``expired: …``,
    ``not sent: follow-up on an existing case``."""
    at = when(fate.at, zone) if fate.at is not None else "-"
    if fate.state == "sent":
        return f"sent {at}"
    if fate.state in ("ready", "held"):
        return f"waiting to be sent, next try {at}" + (
            f" (last error: {fate.detail})" if fate.detail else "")
    if fate.state == "withheld":
        return f"not sent: {fate.detail}"
    return f"{fate.state}: {fate.detail}" if fate.detail else fate.state


def _show_lines(row: cases.CaseRow, answered_at: float | None,
                zone: ZoneInfo | None,
                due: list[deadlines.Deadline] | None = None,
                told: list[acks.AckFate] | None = None) -> list[str]:
    """The case, one ``label value`` line each; times local, with their zone."""
    fields: list[tuple[str, object]] = [
        (key, value) for key, value in asdict(row).items()
        if key not in ("created_at", "promised_at", "language")]
    fields += [
        ("language", row.language or "- (no acknowledgement written)"),
        ("opened", when(row.created_at, zone)),
        ("promised", when(row.promised_at, zone) if row.promised_at is not None else None),
        *[("ack", ack_line(fate, zone)) for fate in told or ()],
        ("first reply", _first_response(row, answered_at, zone)),
    ]
    fields += [("deadline", deadline_line(d, zone)) for d in due or ()]
    return [f"{key:<12} {'-' if value is None else value}" for key, value in fields]


def _plugin_lines(settings: Settings) -> Callable[[Transaction, str], list[tuple[str, str]]]:
    """What the enabled plugins add to a case (``mailflow_case_lines``); nothing when the
    configuration does not load (the case is still worth seeing)."""
    try:
        pm = get_plugin_manager(settings)
    except ConfigError:
        return lambda tx, number: []

    def lines(tx: Transaction, number: str) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for _, given in results_in_store(pm, "mailflow_case_lines", tx, number=number):
            found.extend((str(k), str(v)) for k, v in given or ())
        return found

    return lines


async def _show(store: Store, zone: ZoneInfo | None, row: cases.CaseRow, as_json: bool,
                settings: Settings) -> int:
    history = await store.run_read(partial(_history, number=row.number, zone=zone))
    plugin_lines = _plugin_lines(settings)
    more = await store.run_read(lambda tx: plugin_lines(tx, row.number))
    answered_at = await store.run_read(partial(cases.first_response_at, number=row.number))
    due = await store.run_read(partial(deadlines.deadlines_of, number=row.number))
    told = await store.run_read(partial(_ack_fates, number=row.number))
    if as_json:
        print(json.dumps({**asdict(row), "first_response_at": answered_at,
                          "acknowledgements": [asdict(fate) for fate in told],
                          "deadlines": [{**asdict(d), "state": d.state} for d in due],
                          "messages": history, "plugins": dict(more)},
                         ensure_ascii=False, indent=2))
        return 0
    print("\n".join(_show_lines(row, answered_at, zone, due, told)))
    for label, value in more:
        print(f"{label:<12} {value}")
    for item in history:
        print(f"  {item['at']}  {item['direction']:<8} {item['author']:<8} "
              f"{item['sender']:<32} <{item['message_id']}>")
    return 0


async def _change(store: Store, events: EventBus, row: cases.CaseRow, action: str) -> str:
    """Close or reopen the case, raising its event in the same transaction."""
    status = "closed" if action == "close" else "open"
    effects = Effects(store=store, clock=SYSTEM_CLOCK, events=events)
    effects.write(partial(cases.update_case, number=row.number, status=status))
    now = SYSTEM_CLOCK.now()
    await effects.emit(CaseClosed(row.number, now, by="command line") if action == "close"
                       else CaseReopened(row.number, now))
    await store.write(effects.commit_ops(message=None, held=False))
    return status


async def _act(store: Store, zone: ZoneInfo | None, action: str, number: str,
               as_json: bool, events: EventBus, settings: Settings) -> int:
    """show, close or reopen one case."""
    row: cases.CaseRow | None = await store.run_read(partial(cases.get_case, number=number))
    if row is None:
        print(f"no case {number}", file=sys.stderr)
        return 1
    if action == "show":
        return await _show(store, zone, row, as_json, settings)
    print(f"{row.number} {await _change(store, events, row, action)}")
    return 0


async def run_cases(settings: Settings, action: str, number: str | None, *,
                    status: str | None = None, limit: int = 50, as_json: bool = False) -> int:
    if action != "list" and not number:
        print(f"mailflow cases {action}: give a case number", file=sys.stderr)
        return 2
    url = existing_store_url(settings)
    zone = calendar_zone(settings)
    schemas: tuple[Schema, ...] = ()
    if action in READ_ONLY:
        store, events = open_store(url, readonly=True), EventBus()
    else:  # the chain's stages hear the case close or reopen, as in the daemon
        from mailflow.runtime import load_runtime

        runtime = load_runtime(settings)
        store, events, schemas = open_store(url), runtime.chain.events, runtime.schemas
    await store.open(schemas)
    try:
        if action == "list":
            return await _list(store, zone, status, limit, as_json)
        assert number  # checked before the store was opened
        return await _act(store, zone, action, number, as_json, events, settings)
    finally:
        await store.close()


def run(args: argparse.Namespace) -> int:
    return asyncio.run(run_cases(settings_from(args), args.action, args.number,
                                 status=args.status, limit=args.limit, as_json=args.json))
