"""The statistics tables: what the report and the restart-proof gauges read.

Two tables, written in the transaction of the message or timer that causes
them, so a figure exists exactly when its cause was committed (a refused
message's counts are given back by its undo):

* ``stats_counts``: a counter per day (the default calendar's zone), measure,
  route, priority and label — mail by direction, cases opened, SLA warnings and
  breaches, escalations, reminders, supervisor escalations;
* ``stats_responses``: one row per answer — first responses, responses to a
  customer who wrote last, experts' answers — with its delay in seconds.

Neither holds an address or a subject (agents are the rules' own labels), so
``statistics.retention`` purges the messages and cases and keeps these.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

from mailflow.store import Transaction
from mailflow.store.schema import Schema

Measure = Literal["mail", "case_opened", "sla_warning", "sla_breach", "escalation",
                  "reminder", "supervisor"]
ResponseKind = Literal["first_response", "response", "expert"]


def day_of(ts: float, zone: ZoneInfo) -> str:
    """The calendar day of ``ts`` where the team works (``2026-12-04``)."""
    return dt.datetime.fromtimestamp(ts, zone).date().isoformat()


@dataclass(frozen=True)
class Count:
    """One increment of ``stats_counts`` (given back with ``n=-1`` by an undo)."""

    day: str
    measure: Measure
    route: str = ""
    priority: str = ""
    label: str = ""

    def add(self, tx: Transaction, n: int = 1) -> None:
        tx.execute(
            "INSERT INTO stats_counts (day, measure, route, priority, label, count)"
            " VALUES (:day, :measure, :route, :priority, :label, :n)"
            " ON CONFLICT (day, measure, route, priority, label)"
            " DO UPDATE SET count = stats_counts.count + :n",
            {"day": self.day, "measure": self.measure, "route": self.route,
             "priority": self.priority, "label": self.label, "n": n})

    def give_back(self, tx: Transaction) -> None:
        self.add(tx, -1)


@dataclass(frozen=True)
class Response:
    """One answer and how long it took."""

    at: float
    day: str
    kind: ResponseKind
    seconds: float
    route: str = ""
    priority: str = ""
    agent: str = ""
    in_time: bool | None = None

    def record(self, tx: Transaction, queue_id: str | None = None) -> None:
        tx.execute(
            "INSERT INTO stats_responses (at, day, kind, route, priority, agent, seconds,"
            " in_time, queue_id) VALUES (:at, :day, :kind, :route, :priority, :agent,"
            " :seconds, :in_time, :queue_id)",
            {"at": self.at, "day": self.day, "kind": self.kind, "route": self.route,
             "priority": self.priority, "agent": self.agent, "seconds": self.seconds,
             "in_time": None if self.in_time is None else int(self.in_time),
             "queue_id": queue_id})


def forget_responses(tx: Transaction, queue_id: str) -> None:
    """A message whose client never heard ``250``: its answers were not given."""
    tx.execute("DELETE FROM stats_responses WHERE queue_id = :queue_id", {"queue_id": queue_id})


# -- reading ---------------------------------------------------------------------


def volumes(tx: Transaction, since_day: str) -> list[tuple[str, str, str, int]]:
    """(day, direction, route, messages) from ``since_day`` on."""
    return [(str(d), str(label), str(route), int(n)) for d, label, route, n in tx.execute(
        "SELECT day, label, route, sum(count) FROM stats_counts WHERE measure = 'mail'"
        " AND day >= :since GROUP BY day, label, route ORDER BY day, label, route",
        {"since": since_day})]


def counts(tx: Transaction, since_day: str,
           measure: Measure) -> list[tuple[str, str, str, str, int]]:
    """(day, route, priority, label, count) of one measure from ``since_day`` on."""
    return [(str(d), str(r), str(p), str(label), int(n)) for d, r, p, label, n in tx.execute(
        "SELECT day, route, priority, label, count FROM stats_counts"
        " WHERE measure = :measure AND day >= :since AND count <> 0"
        " ORDER BY day, route, priority, label", {"since": since_day, "measure": measure})]


def responses(tx: Transaction, since: float,
              kind: ResponseKind) -> list[tuple[str, str, str, float, bool | None]]:
    """(route, priority, agent, seconds, in_time) of the answers of one kind since then."""
    return [(str(r), str(p), str(a), float(s), None if t is None else bool(t))
            for r, p, a, s, t in tx.execute(
                "SELECT route, priority, agent, seconds, in_time FROM stats_responses"
                " WHERE kind = :kind AND at >= :since ORDER BY at",
                {"kind": kind, "since": since})]


def open_cases(tx: Transaction) -> list[tuple[str, str, str, int]]:
    """(route, priority, status, cases) of the cases not closed."""
    return [(str(r or ""), str(p or ""), str(s), int(n)) for r, p, s, n in tx.execute(
        "SELECT route, priority, status, count(*) FROM cases WHERE status <> 'closed'"
        " GROUP BY route, priority, status")]


SCHEMA = Schema("stats", (
    (
        """CREATE TABLE stats_counts (
            day TEXT NOT NULL,
            measure TEXT NOT NULL,
            route TEXT NOT NULL,
            priority TEXT NOT NULL,
            label TEXT NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (day, measure, route, priority, label)
        )""",
        """CREATE TABLE stats_responses (
            id {id},
            at DOUBLE PRECISION NOT NULL,
            day TEXT NOT NULL,
            kind TEXT NOT NULL,
            route TEXT NOT NULL,
            priority TEXT NOT NULL,
            agent TEXT NOT NULL,
            seconds DOUBLE PRECISION NOT NULL,
            in_time INTEGER,
            queue_id TEXT
        )""",
        "CREATE INDEX stats_responses_at ON stats_responses (kind, at)",
    ),
), forget=forget_responses)
