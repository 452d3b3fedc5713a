"""``mailflow timers list | cancel``: the follow-ups waiting to fire, and stopping them.

Times are local, in the zone ``mailflow cases`` shows them in, with the
zone's name. The case column is the timer's key (the case number for the
timers of cases). Like ``cases``, these never create a store: a wrong
``--state-dir`` says so instead of showing an empty one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from zoneinfo import ZoneInfo

from mailflow.cli.cases import calendar_zone, when
from mailflow.cli.options import CliError, existing_store_url, settings_from
from mailflow.config import Settings
from mailflow.plugins import builtin_schemas
from mailflow.store import Store, TimerInfo, Transaction, open_store

COLUMNS = ("id", "case", "kind", "due", "state", "attempts")


def _row(timer: TimerInfo, zone: ZoneInfo | None) -> tuple[str, ...]:
    return (str(timer.id), timer.key, timer.kind, when(timer.due, zone), timer.state,
            str(timer.attempts))


def table(timers: list[TimerInfo], zone: ZoneInfo | None) -> str:
    """The timers as aligned columns under a header line."""
    rows = [COLUMNS, *(_row(t, zone) for t in timers)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def as_json(timers: list[TimerInfo], zone: ZoneInfo | None) -> str:
    return json.dumps([{**asdict(t), "case": t.key, "due_local": when(t.due, zone)}
                       for t in timers], ensure_ascii=False, indent=2)


async def _list(store: Store, zone: ZoneInfo | None, *, everything: bool, case: str | None,
                kind: str | None, json_out: bool) -> int:
    timers = await store.run_read(lambda tx: tx.list_timers(
        states=None if everything else ("active", "held"), key=case, kind=kind))
    if json_out:
        print(as_json(timers, zone))
    elif timers:
        print(table(timers, zone))
    else:
        print("no timers" if everything else "no timers waiting to fire")
    return 0


async def _cancel(store: Store, timer_id: int | None, case: str | None,
                  kind: str | None) -> int:
    def cancel(tx: Transaction) -> list[int]:
        if timer_id is not None:
            return tx.cancel_timer_ids([timer_id])
        pending = tx.list_timers(key=case, kind=kind)
        return tx.cancel_timer_ids([t.id for t in pending])

    cancelled = await store.run_write(cancel)
    if not cancelled:
        what = f"timer {timer_id}" if timer_id is not None else f"case {case}"
        print(f"mailflow timers cancel: nothing to cancel for {what} (no such timer, or"
              " it already fired or was cancelled)", file=sys.stderr)
        return 1
    print(f"cancelled {len(cancelled)} timer(s): {', '.join(map(str, cancelled))}")
    return 0


async def run_timers(settings: Settings, action: str, *, timer_id: int | None = None,
                     case: str | None = None, kind: str | None = None,
                     everything: bool = False, json_out: bool = False) -> int:
    if action == "cancel" and (timer_id is None) == (case is None):
        raise CliError("cancel: give a timer id or --case N (not both)", code=2)
    if action == "cancel" and timer_id is not None and kind is not None:
        raise CliError("cancel: --kind goes with --case", code=2)
    readonly = action == "list"
    store = open_store(existing_store_url(settings), readonly=readonly)
    zone = calendar_zone(settings)
    await store.open(() if readonly else builtin_schemas())
    try:
        if action == "list":
            return await _list(store, zone, everything=everything, case=case, kind=kind,
                               json_out=json_out)
        return await _cancel(store, timer_id, case, kind)
    finally:
        await store.close()


def run(args: argparse.Namespace) -> int:
    return asyncio.run(run_timers(settings_from(args), args.action, timer_id=args.id,
                                  case=args.case, kind=args.kind, everything=args.all,
                                  json_out=args.json))
