"""Statistics rows for the report's tests, written straight into a real SQLite store.

The store is made by the project's own code (``open_store`` and the built-in
schemas); the rows are what the daemon records (the statistics contract's
``stats_counts`` and ``stats_responses``), with a customer's address and
subject in ``cases`` beside them, which no report may show.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from mailflow.store import open_store

#: the statistics tables as the contract gives them (created when the store has none)
STATS_DDL = (
    """CREATE TABLE IF NOT EXISTS stats_counts (
        day TEXT NOT NULL, measure TEXT NOT NULL, route TEXT NOT NULL,
        priority TEXT NOT NULL, label TEXT NOT NULL, count INTEGER NOT NULL,
        PRIMARY KEY (day, measure, route, priority, label))""",
    """CREATE TABLE IF NOT EXISTS stats_responses (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at DOUBLE PRECISION NOT NULL,
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
            conn.execute(statement)
        if not conn.execute("SELECT 1 FROM schema_versions WHERE owner = 'stats'").fetchall():
            conn.execute("INSERT INTO schema_versions (owner, version) VALUES ('stats', 1)")


@dataclass
class Rows:
    """Adds statistics rows; ``day`` is the day in the report's zone."""

    db: Path

    def count(self, day: str, measure: str, count: int, *, route: str = "",
              priority: str = "", label: str = "") -> None:
        with sqlite3.connect(self.db) as conn:
            conn.execute("INSERT INTO stats_counts (day, measure, route, priority, label, count)"
                         " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (day, measure, route, priority,"
                         " label) DO UPDATE SET count = count + excluded.count",
                         (day, measure, route, priority, label, count))

    def response(self, at: float, day: str, kind: str, seconds: float, *, route: str = "",
                 priority: str = "", agent: str = "", in_time: int | None = None) -> None:
        with sqlite3.connect(self.db) as conn:
            conn.execute("INSERT INTO stats_responses (at, day, kind, route, priority, agent,"
                         " seconds, in_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (at, day, kind, route, priority, agent, seconds, in_time))

    def case(self, number: str, *, route: str | None, priority: str | None,
             status: str = "open", customer: str = SECRET_CUSTOMER,
             subject: str = SECRET_SUBJECT, at: float = 0.0) -> None:
        with sqlite3.connect(self.db) as conn:
            conn.execute("INSERT INTO cases (number, status, customer, customer_name, subject,"
                         " mailbox, route, priority, created_at, updated_at) VALUES"
                         " (?, ?, ?, 'Jeanne Secret', ?, 'sav@example.com', ?, ?, ?, ?)",
                         (number, status, customer, subject, route, priority, at, at))


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
