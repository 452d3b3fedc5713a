"""A case's SLA deadlines: what they are, and their store records.

Each deadline is one row of ``sla_deadlines``: the first response (one per
case, the same instant the acknowledgement promises) and each update
deadline (started by a customer's message on an answered case, met by the
next agent reply). A row is *pending* until an agent answers (``met_at``)
or its breach timer fires first (``breached_at``); ``mailflow cases show``
reads them. SQL stays here, never in a stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mailflow.store import Transaction
from mailflow.store.schema import Schema

Kind = Literal["first_response", "update"]
FIRST_RESPONSE: Kind = "first_response"
UPDATE: Kind = "update"

#: every timer kind the SLA schedules, keyed by the case number
WARN, BREACH = "sla.warn", "sla.breach"
UPDATE_WARN, UPDATE_BREACH = "sla.update_warn", "sla.update_breach"
AUTO_CLOSE = "sla.auto_close"
TIMERS_OF: dict[Kind, tuple[str, str]] = {FIRST_RESPONSE: (WARN, BREACH),
                                          UPDATE: (UPDATE_WARN, UPDATE_BREACH)}
ALL_TIMERS = (WARN, BREACH, UPDATE_WARN, UPDATE_BREACH, AUTO_CLOSE)


@dataclass(frozen=True)
class Deadline:
    case_number: str
    kind: str
    started_at: float
    due: float
    warned_at: float | None = None
    met_at: float | None = None
    breached_at: float | None = None
    cancelled_at: float | None = None

    @property
    def state(self) -> str:
        """``met``, ``breached`` (answered late or not at all), ``cancelled`` or ``pending``."""
        if self.met_at is not None and self.met_at <= self.due:
            return "met"
        if self.breached_at is not None or self.met_at is not None:
            return "breached"
        return "cancelled" if self.cancelled_at is not None else "pending"


_COLUMNS = "case_number, kind, started_at, due, warned_at, met_at, breached_at, cancelled_at"


def deadlines_of(tx: Transaction, number: str) -> list[Deadline]:
    rows = tx.execute(f"SELECT {_COLUMNS} FROM sla_deadlines WHERE case_number = :number"
                      " ORDER BY id", {"number": number})
    return [Deadline(*row) for row in rows]


def pending(tx: Transaction, number: str, kind: Kind) -> Deadline | None:
    rows = tx.execute(f"SELECT {_COLUMNS} FROM sla_deadlines WHERE case_number = :number"
                      " AND kind = :kind AND met_at IS NULL AND cancelled_at IS NULL"
                      " ORDER BY id DESC LIMIT 1", {"number": number, "kind": kind})
    return Deadline(*rows[0]) if rows else None


def has_first_response(tx: Transaction, number: str) -> bool:
    rows = tx.execute("SELECT 1 FROM sla_deadlines WHERE case_number = :number"
                      " AND kind = 'first_response' LIMIT 1", {"number": number})
    return bool(rows)


# -- writes (ops for ctx.write) ----------------------------------------------


def start(tx: Transaction, *, number: str, kind: Kind, started_at: float, due: float,
          queue_id: str | None) -> None:
    tx.execute("INSERT INTO sla_deadlines (case_number, kind, started_at, due, queue_id)"
               " VALUES (:number, :kind, :started_at, :due, :queue_id)",
               {"number": number, "kind": kind, "started_at": started_at, "due": due,
                "queue_id": queue_id})


def meet(tx: Transaction, *, number: str, at: float, queue_id: str | None = None) -> None:
    """An agent answered: every pending deadline of the case is met (maybe late)."""
    tx.execute("UPDATE sla_deadlines SET met_at = :at, met_by = :queue_id"
               " WHERE case_number = :number AND met_at IS NULL AND cancelled_at IS NULL",
               {"number": number, "at": at, "queue_id": queue_id})


def unmeet(tx: Transaction, *, queue_id: str) -> None:
    """Undo :func:`meet` for a reply the next hop refused."""
    tx.execute("UPDATE sla_deadlines SET met_at = NULL, met_by = NULL"
               " WHERE met_by = :queue_id", {"queue_id": queue_id})


def mark(tx: Transaction, *, number: str, kind: Kind, field: Literal["warned_at", "breached_at"],
         at: float) -> None:
    tx.execute(f"UPDATE sla_deadlines SET {field} = :at WHERE case_number = :number"
               f" AND kind = :kind AND met_at IS NULL AND cancelled_at IS NULL",
               {"number": number, "kind": kind, "at": at})


def cancel_case(tx: Transaction, *, number: str, at: float) -> None:
    """A closed case: its pending deadlines stop (their timers are cancelled apart)."""
    tx.execute("UPDATE sla_deadlines SET cancelled_at = :at WHERE case_number = :number"
               " AND met_at IS NULL AND breached_at IS NULL AND cancelled_at IS NULL",
               {"number": number, "at": at})


def forget(tx: Transaction, queue_id: str) -> None:
    tx.execute("DELETE FROM sla_deadlines WHERE queue_id = :queue_id", {"queue_id": queue_id})
    unmeet(tx, queue_id=queue_id)


SCHEMA = Schema("sla", (
    (
        """CREATE TABLE sla_deadlines (
            id {id},
            case_number TEXT NOT NULL,
            kind TEXT NOT NULL,
            started_at DOUBLE PRECISION NOT NULL,
            due DOUBLE PRECISION NOT NULL,
            warned_at DOUBLE PRECISION,
            met_at DOUBLE PRECISION,
            met_by TEXT,
            breached_at DOUBLE PRECISION,
            cancelled_at DOUBLE PRECISION,
            queue_id TEXT
        )""",
        "CREATE INDEX sla_deadlines_case ON sla_deadlines (case_number, kind)",
    ),
), forget=forget)
