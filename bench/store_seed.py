#!/usr/bin/env python3
"""A SQLite store seeded with N cases, fast, with what real cases carry.

The rows are those of one real day of the desk (store_template.py: mail replayed through
the shipped rules, on mailflow's own path), copied once a day back in time until the
store holds N cases: their messages, case_messages (the customer's, the
acknowledgement's, the agent's answer), fingerprints, acknowledgements (``acks`` and
their ``outbox`` rows, sent), SLA deadlines, timers (done; still to fire only where the
due time is ahead), escalations, withheld acknowledgements, statistics (counts by day,
response times). The newest copy is the template's fresh snapshot, ending ten minutes
ago (its cases open, its SLA timers pending); the older ones are the settled snapshot,
their cases closed after ``OPEN_DAYS`` days.

Each copy gets its own keys: case numbers of its day (check digit recomputed, the
sequences set past them), queue ids of its time, Message-IDs, customers' addresses,
fingerprints and escalation tokens; every timestamp moves with it. The target is a
fresh store migrated by mailflow itself (the real schema), filled with executemany in
big transactions, its indexes dropped meanwhile and rebuilt at the end.

    .venv/bin/python bench/store_seed.py --cases 1000000 --out /tmp/seeded/mailflow.sqlite3

About 6,300 rows a day of ~490 cases; see bench/README.md for how long it takes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from stdnum import damm

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import store_template
from procs import REPO

OPEN_DAYS = 5  # the newest days' cases are still open; older ones closed
SKIP = frozenset({"schema_versions", "sequences", "nodes", "health", "agents",
                  "sqlite_sequence"})
ZONE = ZoneInfo("Europe/Paris")  # the calendar the case numbers are dated in
LOCAL = "@example.com"  # the company's addresses stay as they are
CASE = re.compile(r"\b([A-Z]{2,10})-(\d{8})-(\d{5})-\d\b")
ADDRESSES = frozenset({"customer", "sender", "address", "mail_from"})
QUEUE_IDS = frozenset({"queue_id", "message"})
MESSAGE_IDS = frozenset({"message_id", "ack_message_id"})
NOT_TIMES = frozenset({"seconds"})  # a duration among the DOUBLE PRECISION columns


@dataclass(frozen=True)
class Slotted:
    """A template value with case numbers in it, cut around them once (a regex over
    every value of every copy would cost most of the seeding)."""

    parts: tuple[str, ...]  # one more than ``cases``
    cases: tuple[str, ...]
    binary: bool


def slotted(value: Any) -> Any:
    """``value`` as a ``Slotted`` if it holds a case number, else as it is."""
    binary = isinstance(value, bytes)
    text = value.decode("utf-8", "surrogateescape") if binary else value
    if not isinstance(text, str) or not CASE.search(text):
        return value
    parts, cases, last = [], [], 0
    for match in CASE.finditer(text):
        parts.append(text[last:match.start()])
        cases.append(match.group(0))
        last = match.end()
    parts.append(text[last:])
    return Slotted(tuple(parts), tuple(cases), binary)


@dataclass(frozen=True)
class Table:
    name: str
    columns: list[str]  # those inserted (an INTEGER PRIMARY KEY left to SQLite)
    times: frozenset[str]
    rows: list[tuple[Any, ...]]  # their values made ``slotted``
    slotted: list[bool]  # whether each column holds a case number in some row


def read_tables(path: Path) -> dict[str, Table]:
    """The template's rows, table by table, with the columns the copies rewrite."""
    conn = sqlite3.connect(path)
    tables: dict[str, Table] = {}
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for name in names:
        if name in SKIP:
            continue
        info = conn.execute(f"PRAGMA table_info({name})").fetchall()
        columns = [c[1] for c in info if not (c[5] and c[2].upper() == "INTEGER")]
        times = frozenset(c[1] for c in info if c[2].upper() == "DOUBLE PRECISION"
                          and c[1] not in NOT_TIMES)
        rows = [tuple(slotted(v) for v in row)
                for row in conn.execute(f"SELECT {', '.join(columns)} FROM {name}")]
        if rows:
            holds = [any(isinstance(row[i], Slotted) for row in rows)
                     for i in range(len(columns))]
            tables[name] = Table(name, columns, times, rows, holds)
    conn.close()
    return tables


class Copy:
    """The rewrites of one copy of the template: ``index`` days before the newest, its
    times moved by ``shift`` seconds."""

    def __init__(self, index: int, shift: float, now: float) -> None:
        self.index = index
        self.shift = shift
        self.now = now
        self.tag = f"{index:x}"
        self.closed = index >= OPEN_DAYS
        self._days: dict[str, str] = {}
        self._cases: dict[str, str] = {}

    def day(self, yyyymmdd: str) -> str:
        """A template day (20260302) as this copy's (the same time of day, moved)."""
        found = self._days.get(yyyymmdd)
        if found is None:
            noon = datetime.strptime(yyyymmdd, "%Y%m%d").replace(hour=12, tzinfo=ZONE)
            found = datetime.fromtimestamp(noon.timestamp() + self.shift, ZONE).strftime("%Y%m%d")
            self._days[yyyymmdd] = found
        return found

    def case(self, number: str) -> str:
        """A template case number as this copy's: its day moved, its check digit anew."""
        found = self._cases.get(number)
        if found is None:
            prefix, day, sequence, _ = number.split("-")
            day = self.day(day)
            found = f"{prefix}-{day}-{sequence}-{damm.calc_check_digit(day + sequence)}"
            self._cases[number] = found
        return found

    def text(self, value: Any) -> Any:
        if not isinstance(value, Slotted):
            return value
        out = [value.parts[0]]
        for number, part in zip(value.cases, value.parts[1:], strict=True):
            out += (self.case(number), part)
        text = "".join(out)
        return text.encode("utf-8", "surrogateescape") if value.binary else text

    def address(self, value: Any) -> Any:
        if not isinstance(value, str) or "@" not in value or value.endswith(LOCAL):
            return value
        local, _, domain = value.rpartition("@")
        return f"{local}.{self.tag}@{domain}"

    def queue_id(self, value: Any) -> Any:
        if not isinstance(value, str) or len(value) < 12:
            return value
        try:
            millis = int(value[:-8], 16)
        except ValueError:
            return value
        return f"{millis + int(self.shift * 1000):X}{value[-8:]}"

    def message_id(self, value: Any) -> Any:
        if isinstance(value, Slotted):  # ours (ack., esc.): the case number makes it unique
            return self.text(value)
        if not isinstance(value, str) or not value:
            return value
        inner = value.strip("<>")
        local, at, domain = inner.rpartition("@")
        moved = f"{local}.{self.tag}@{domain}" if at else f"{inner}.{self.tag}"
        return f"<{moved}>" if value.startswith("<") else moved

    def time(self, value: Any) -> Any:
        return value + self.shift if isinstance(value, int | float) else value

    def stats_day(self, value: Any) -> Any:
        """A statistics day (2026-03-02) as this copy's."""
        if not isinstance(value, str):
            return value
        day = self.day(value.replace("-", ""))
        return f"{day[:4]}-{day[4:6]}-{day[6:]}"


def rewriter(table: Table, copy: Copy) -> Callable[[tuple[Any, ...]], list[Any]]:
    """The function that turns one template row of ``table`` into this copy's (only the
    columns that change are touched)."""
    steps: list[tuple[int, Callable[[Any], Any]]] = []
    for index, column in enumerate(table.columns):
        step: Callable[[Any], Any] | None
        if column in table.times:
            step = copy.time
        elif column in ADDRESSES:
            step = copy.address
        elif column in QUEUE_IDS:
            step = copy.queue_id
        elif column in MESSAGE_IDS:
            step = copy.message_id
        elif column == "rcpt_to":
            step = partial(_addresses, copy)
        elif column == "digest":
            step = partial(_digest, copy)
        elif column == "token":
            step = partial(_token, copy)
        elif column == "day":
            step = copy.stats_day
        else:
            step = copy.text if table.slotted[index] else None
        if step is not None:
            steps.append((index, step))
    position = {column: i for i, column in enumerate(table.columns)}
    fix = FIXES.get(table.name)

    def row(values: tuple[Any, ...]) -> list[Any]:
        out = list(values)
        for index, step in steps:
            out[index] = step(out[index])
        if fix is not None:
            fix(out, position, copy)
        return out
    return row


def _addresses(copy: Copy, value: str) -> str:
    return json.dumps([copy.address(a) for a in json.loads(value)])


def _digest(copy: Copy, value: str) -> str:
    return hashlib.sha256(f"{value}.{copy.tag}".encode()).hexdigest()


def _token(copy: Copy, value: str) -> str:
    return f"{value[:16]}{copy.index:08x}"


def _outbox(row: list[Any], at: dict[str, int], copy: Copy) -> None:
    """Every acknowledgement and notice sent long ago (a run waits for nothing of it)."""
    row[at["state"]] = "sent"
    row[at["sent_at"]] = row[at["created_at"]] + 2.0
    row[at["attempts"]] = 1
    row[at["lease_owner"]] = row[at["lease_until"]] = None


def _timers(row: list[Any], at: dict[str, int], copy: Copy) -> None:
    """A timer still to fire stays so only if its time is ahead (a run fires none)."""
    if row[at["state"]] in ("active", "held") and row[at["due"]] <= copy.now + 3600:
        row[at["state"]], row[at["done_at"]] = "done", row[at["due"]]
        row[at["lease_owner"]] = row[at["lease_until"]] = None


def _cases(row: list[Any], at: dict[str, int], copy: Copy) -> None:
    if copy.closed:
        row[at["status"]] = "closed"


def _escalations(row: list[Any], at: dict[str, int], copy: Copy) -> None:
    """The expert's reply address carries the escalation's token: this copy's."""
    token = row[at["token"]]
    row[at["reply_to"]] = re.sub(r"\.[0-9a-f]{24}@", f".{token}@", row[at["reply_to"]])


FIXES: dict[str, Callable[[list[Any], dict[str, int], Copy], None]] = {
    "outbox": _outbox, "timers": _timers, "cases": _cases, "escalations": _escalations}
#: a day's counts come from several copies (a copy's timers fire on the days after it)
CONFLICTS = {"stats_counts": " ON CONFLICT (day, measure, route, priority, label)"
                             " DO UPDATE SET count = count + excluded.count"}


@dataclass
class Seeded:
    cases: int
    rows: int
    days: int
    seconds: float
    size: int  # bytes of the store file


async def migrated(path: Path) -> None:
    """A new store at ``path``, its schema made by mailflow's own migrations."""
    from mailflow.config import load_settings
    from mailflow.logs import configure
    from mailflow.runtime import load_runtime
    from mailflow.store import open_store

    configure("warning")
    settings = load_settings(None, {"rules": str(REPO / "rules"), "state_dir": str(path.parent),
                                    "store": f"sqlite:///{path}"})
    store = open_store(settings.store_url)
    await store.open(load_runtime(settings).schemas)
    await store.close()


def seed(path: Path, cases: int, template: Path | None = None,
         progress: Callable[[str], None] = lambda line: None) -> Seeded:
    """Fill a new store at ``path`` with about ``cases`` cases (whole days of the template)."""
    began = time.perf_counter()
    template = template or store_template.build()
    fresh, settled = (read_tables(template / f"{n}.sqlite3") for n in ("fresh", "settled"))
    per_day = len(fresh["cases"].rows)
    days = max(1, round(cases / per_day))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    asyncio.run(migrated(path))
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-1000000",
                   "temp_store=MEMORY", "foreign_keys=OFF"):
        conn.execute(f"PRAGMA {pragma}")
    indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"
                           " AND sql IS NOT NULL").fetchall()
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    now = time.time()
    last = max(row[fresh["messages"].columns.index("received_at")]
               for row in fresh["messages"].rows)
    newest = now - 600 - last
    rows = 0
    conn.execute("BEGIN")
    for index in range(days):
        copy = Copy(index, newest - index * 86400, now)
        for table in (fresh if index == 0 else settled).values():
            marks = ", ".join("?" * len(table.columns))
            make = rewriter(table, copy)
            conn.executemany(f"INSERT INTO {table.name} ({', '.join(table.columns)})"
                             f" VALUES ({marks}){CONFLICTS.get(table.name, '')}",
                             [make(row) for row in table.rows])
            rows += len(table.rows)
        sequences(conn, template / "fresh.sqlite3", copy, first=index == 0)
        if index % 100 == 99:
            conn.execute("COMMIT")
            progress(f"{index + 1}/{days} days, {rows:,} rows,"
                     f" {time.perf_counter() - began:.0f}s")
            conn.execute("BEGIN")
    conn.execute("COMMIT")
    progress(f"rebuilding {len(indexes)} indexes …")
    for _, sql in indexes:
        conn.execute(sql)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return Seeded(days * per_day, rows, days, time.perf_counter() - began, path.stat().st_size)


def sequences(conn: sqlite3.Connection, fresh: Path, copy: Copy, first: bool) -> None:
    """The case-number sequences of this copy's day, past its numbers; the rest once."""
    with sqlite3.connect(fresh) as source:
        found = source.execute("SELECT name, value FROM sequences").fetchall()
    for name, value in found:
        head, _, day = name.rpartition("-")
        if head and day.isdigit() and len(day) == 8:
            conn.execute("INSERT INTO sequences (name, value) VALUES (?, ?)",
                         (f"{head}-{copy.day(day)}", value))
        elif first:
            conn.execute("INSERT INTO sequences (name, value) VALUES (?, ?)", (name, value))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, required=True, help="the store file to write")
    args = parser.parse_args(argv)
    done = seed(args.out, args.cases, progress=lambda line: print(line, flush=True))
    print(f"{args.out}: {done.cases:,} cases ({done.days} days), {done.rows:,} rows,"
          f" {done.size / 2**20:,.0f} MiB, in {done.seconds:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
