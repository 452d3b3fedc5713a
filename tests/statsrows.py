"""Statistics rows for the report's tests, in a real store (SQLite or PostgreSQL).

The store is made by the project's own code (``open_store`` and the built-in
schemas) and the rows written by the statistics' own writer, as the daemon
records them, with a customer's address and subject in ``cases`` beside
them, which no report may show.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

from mailflow.plugins import builtin_schemas
from mailflow.report.data import Report, build_report
from mailflow.stats.store import Count, Measure, Response, ResponseKind
from mailflow.store import Transaction, open_store
from mailflow.store.schema import Schema

SECRET_CUSTOMER = "jeanne.secret@customer.example"
SECRET_SUBJECT = "Ma commande ZX-98321 confidentielle"


class Rows:
    """Statistics rows written by the statistics' own writer (``Count.add``,
    ``Response.record``) and cases, all in one store transaction by ``write``;
    ``day`` is the day in the report's zone."""

    def __init__(self) -> None:
        self.ops: list[Callable[[Transaction], None]] = []

    def count(self, day: str, measure: Measure, count: int, *, route: str = "",
              priority: str = "", label: str = "") -> Rows:
        self.ops.append(partial(Count(day, measure, route, priority, label).add, n=count))
        return self

    def response(self, at: float, day: str, kind: ResponseKind, seconds: float, *,
                 route: str = "", priority: str = "", agent: str = "",
                 in_time: int | None = None) -> Rows:
        answer = Response(at, day, kind, seconds, route, priority, agent,
                          None if in_time is None else bool(in_time))
        self.ops.append(answer.record)
        return self

    def case(self, number: str, *, route: str | None, priority: str | None,
             status: str = "open", customer: str = SECRET_CUSTOMER,
             subject: str = SECRET_SUBJECT, at: float = 0.0) -> Rows:
        params = {"number": number, "status": status, "customer": customer,
                  "subject": subject, "route": route, "priority": priority, "at": at}
        self.ops.append(lambda tx: tx.execute(
            "INSERT INTO cases (number, status, customer, customer_name, subject, mailbox,"
            " route, priority, created_at, updated_at) VALUES (:number, :status, :customer,"
            " 'Jeanne Secret', :subject, 'sav@example.com', :route, :priority, :at, :at)",
            params) and None)
        return self

    def write(self, target: Path | str, schemas: Sequence[Schema] | None = None) -> None:
        """Into the store at ``target`` (a SQLite file, or a store URL), migrated first
        (to ``schemas``; every built-in one by default)."""
        url = f"sqlite:///{target}" if isinstance(target, Path) else target

        async def apply() -> None:
            store = open_store(url)
            await store.open(builtin_schemas() if schemas is None else schemas)
            try:
                await store.run_write(lambda tx: [op(tx) for op in self.ops])
            finally:
                await store.close()

        asyncio.run(apply())
        self.ops.clear()


# -- a week of a small service desk (the report's unit tests, on SQLite and PostgreSQL)

PARIS = ZoneInfo("Europe/Paris")
#: Friday 27 November 2026, 15:00 in Paris: the report's "now"
UNTIL = datetime(2026, 11, 27, 15, 0, tzinfo=PARIS).timestamp()
WEEK = 7 * 86400.0


def week_store(folder: Path, filled: bool = True) -> Path:
    """A SQLite store in ``folder/mailflow.sqlite3`` (a state folder, as the CLI reads
    it) holding the week of :func:`fill`, or no statistics when not ``filled``."""
    path = folder / "mailflow.sqlite3"
    folder.mkdir(parents=True, exist_ok=True)
    rows = Rows()
    if filled:
        fill(rows)
    rows.write(path)
    return path


def report_of(db: Path, per_agent: bool = True, zone: ZoneInfo | None = PARIS) -> Report:
    """The report of the week to :data:`UNTIL` read back from the SQLite store ``db``."""
    async def read() -> Report:
        store = open_store(f"sqlite:///{db}", readonly=True)
        await store.open([])
        try:
            return await store.run_read(partial(build_report, since=UNTIL - WEEK,
                                                until=UNTIL, zone=zone, per_agent=per_agent))
        finally:
            await store.close()
    return asyncio.run(read())


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
