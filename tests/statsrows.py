"""Statistics rows for the report's tests, written straight into a real SQLite store.

The store is made by the project's own code (``open_store`` and the built-in
schemas); the rows are what the daemon records (the statistics contract's
``stats_counts`` and ``stats_responses``), with a customer's address and
subject in ``cases`` beside them, which no report may show.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mailflow.store import open_store

#: the statistics tables as the contract gives them (created when the store has none);
#: ``{id}`` as the store spells an identity key
STATS_DDL = (
    """CREATE TABLE IF NOT EXISTS stats_counts (
        day TEXT NOT NULL, measure TEXT NOT NULL, route TEXT NOT NULL,
        priority TEXT NOT NULL, label TEXT NOT NULL, count INTEGER NOT NULL,
        PRIMARY KEY (day, measure, route, priority, label))""",
    """CREATE TABLE IF NOT EXISTS stats_responses (
        id {id}, at DOUBLE PRECISION NOT NULL,
        day TEXT NOT NULL, kind TEXT NOT NULL, route TEXT NOT NULL, priority TEXT NOT NULL,
        agent TEXT NOT NULL, seconds DOUBLE PRECISION NOT NULL, in_time INTEGER,
        queue_id TEXT)""",
)

SECRET_CUSTOMER = "jeanne.secret@customer.example"
SECRET_SUBJECT = "Ma commande ZX-98321 confidentielle"


def make_store(db: Path) -> None:
    """An empty store with every built-in table, as ``mailflow serve`` makes it."""
    async def create() -> None:
        store = open_store(f"sqlite:///{db}")
        await store.open()
        await store.close()

    asyncio.run(create())
    ensure_stats_tables(db)


def ensure_stats_tables(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        for statement in STATS_DDL:
            conn.execute(statement.format(id="INTEGER PRIMARY KEY AUTOINCREMENT"))
        if not conn.execute("SELECT 1 FROM schema_versions WHERE owner = 'stats'").fetchall():
            conn.execute("INSERT INTO schema_versions (owner, version) VALUES ('stats', 1)")


Execute = Callable[[str, Mapping[str, Any]], None]


class Rows:
    """Adds statistics rows (``day`` is the day in the report's zone) to a SQLite file, or
    through ``execute`` (named parameters, as a store ``Transaction`` takes them)."""

    def __init__(self, target: Path | Execute) -> None:
        self.execute: Execute = _sqlite(target) if isinstance(target, Path) else target

    def count(self, day: str, measure: str, count: int, *, route: str = "",
              priority: str = "", label: str = "") -> None:
        self.execute("INSERT INTO stats_counts (day, measure, route, priority, label, count)"
                     " VALUES (:day, :measure, :route, :priority, :label, :count)"
                     " ON CONFLICT (day, measure, route, priority, label)"
                     " DO UPDATE SET count = stats_counts.count + excluded.count",
                     {"day": day, "measure": measure, "route": route, "priority": priority,
                      "label": label, "count": count})

    def response(self, at: float, day: str, kind: str, seconds: float, *, route: str = "",
                 priority: str = "", agent: str = "", in_time: int | None = None) -> None:
        self.execute("INSERT INTO stats_responses (at, day, kind, route, priority, agent,"
                     " seconds, in_time) VALUES (:at, :day, :kind, :route, :priority, :agent,"
                     " :seconds, :in_time)",
                     {"at": at, "day": day, "kind": kind, "route": route,
                      "priority": priority, "agent": agent, "seconds": seconds,
                      "in_time": in_time})

    def case(self, number: str, *, route: str | None, priority: str | None,
             status: str = "open", customer: str = SECRET_CUSTOMER,
             subject: str = SECRET_SUBJECT, at: float = 0.0) -> None:
        self.execute("INSERT INTO cases (number, status, customer, customer_name, subject,"
                     " mailbox, route, priority, created_at, updated_at) VALUES (:number,"
                     " :status, :customer, 'Jeanne Secret', :subject, 'sav@example.com',"
                     " :route, :priority, :at, :at)",
                     {"number": number, "status": status, "customer": customer,
                      "subject": subject, "route": route, "priority": priority, "at": at})


def _sqlite(db: Path) -> Execute:
    def execute(sql: str, params: Mapping[str, Any]) -> None:
        with sqlite3.connect(db) as conn:
            conn.execute(sql, dict(params))
    return execute


# -- a week of a small service desk (the report's unit tests, on SQLite and PostgreSQL)

PARIS = ZoneInfo("Europe/Paris")
#: Friday 27 November 2026, 15:00 in Paris: the report's "now"
UNTIL = datetime(2026, 11, 27, 15, 0, tzinfo=PARIS).timestamp()
WEEK = 7 * 86400.0


def at(day: int, hour: int = 10) -> float:
    return datetime(2026, 11, day, hour, 0, tzinfo=PARIS).timestamp()


def fill(rows: Rows) -> None:
    """A week of a small service desk, and older figures the report must leave out."""
    for route, n in (("sav", 3), ("devis", 2)):
        rows.count("2026-11-23", "mail", n, route=route, priority="normal", label="inbound")
    rows.count("2026-11-23", "mail", 4, label="reply")
    rows.count("2026-11-23", "mail", 1, label="internal")
    rows.count("2026-11-24", "mail", 5, label="passthrough")
    rows.count("2026-11-26", "mail", 1, route="sav", priority="high", label="inbound")
    rows.count("2026-11-10", "mail", 100, route="sav", label="inbound")  # before the period
    rows.count("2026-11-23", "case_opened", 3, route="sav", priority="normal")
    rows.count("2026-11-23", "case_opened", 2, route="devis", priority="high")
    for seconds, route, agent, in_time in ((1800, "sav", "Alice", 1), (7200, "sav", "Alice", 1),
                                           (30000, "sav", "Bob", 0),
                                           (90000, "devis", "Bob", 0),
                                           (200000, "devis", "other", None)):
        rows.response(at(24), "2026-11-24", "first_response", seconds, route=route,
                      agent=agent, in_time=in_time)
        rows.response(at(24), "2026-11-24", "response", seconds, route=route, agent=agent)
    rows.response(at(25), "2026-11-25", "response", 600, route="sav", agent="Alice")
    rows.response(at(10), "2026-11-10", "first_response", 5, route="sav", agent="Alice",
                  in_time=1)  # before the period
    rows.count("2026-11-24", "sla_warning", 2, route="sav", label="first_response")
    rows.count("2026-11-25", "sla_breach", 1, route="sav", label="first_response")
    rows.count("2026-11-25", "sla_breach", 1, route="devis", label="first_response")
    rows.count("2026-11-26", "sla_breach", 1, route="devis", label="update")
    rows.count("2026-11-24", "escalation", 2, route="sav", label="billing-expert")
    rows.count("2026-11-25", "reminder", 1, route="sav", label="billing-expert")
    rows.count("2026-11-26", "supervisor", 1, route="sav", label="billing-expert")
    for seconds in (3600, 10800):
        rows.response(at(25), "2026-11-25", "expert", seconds, route="sav",
                      agent="billing-expert")
    rows.case("SAV-1", route="sav", priority="normal")
    rows.case("SAV-2", route="sav", priority="normal")
    rows.case("DEV-1", route="devis", priority="high")
    rows.case("SAV-0", route="sav", priority="normal", status="closed")
    rows.case("X-1", route=None, priority=None)


def has_stats_tables(db: Path) -> bool:
    with sqlite3.connect(db) as conn:
        return bool(conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'stats_responses'")
                    .fetchall())


def derive_statistics(db: Path, zone: str = "Europe/Paris") -> None:
    """The rows the statistics writer records, derived from what the daemon stored of the
    same mail (cases, their messages, their deadlines): for a daemon without the writer."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(zone)

    def day(ts: float) -> str:
        return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d")

    ensure_stats_tables(db)
    rows = Rows(db)
    with sqlite3.connect(db) as conn:
        cases = conn.execute("SELECT number, route, priority, created_at FROM cases").fetchall()
        messages = conn.execute("SELECT case_number, role, sender, created_at FROM"
                                " case_messages ORDER BY id").fetchall()
        deadlines = dict(conn.execute("SELECT case_number, due FROM sla_deadlines"
                                      " WHERE kind = 'first_response'").fetchall())
    names = {"alice.moreau@example.com": "alice", "bruno.petit@example.com": "bruno",
             "chloe.roger@example.com": "chloe"}
    for number, route, priority, created in cases:
        rows.count(day(created), "case_opened", 1, route=route or "", priority=priority or "")
        rows.count(day(created), "mail", 1, route=route or "", priority=priority or "",
                   label="inbound")
        answers = [(s, t) for c, role, s, t in messages if c == number and role == "agent"]
        if answers:
            sender, at = answers[0]
            due = deadlines.get(number)
            for kind in ("first_response", "response"):
                rows.response(at, day(at), kind, at - created, route=route or "",
                              priority=priority or "", agent=names.get(sender, "other"),
                              in_time=None if kind == "response" or due is None
                              else int(at <= due))
            rows.count(day(at), "mail", 1, label="reply")
            if due is not None and at > due:
                rows.count(day(due), "sla_breach", 1, route=route or "",
                           priority=priority or "", label="first_response")
        else:
            due = deadlines.get(number)
            if due is not None:
                rows.count(day(due), "sla_warning", 1, route=route or "",
                           priority=priority or "", label="first_response")
    rows.count(day(cases[0][3]), "escalation", 1, route="sav", label="lawyer")
