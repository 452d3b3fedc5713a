"""What the ``answers`` stage keeps: each message's suggestions, and each companion.

``answer_suggestions``: the three best answers for each customer message of a
case (new case or follow-up), with the confidence and the customer's words
that matched: ``mailflow cases show`` lists them. ``answer_companions``: each
companion sent to an agent, under its unguessable token (its reply address,
``answers+<case>.<token>@``), with the answer as filled in, until the agent
sends it (then which answer was used, by whom, edited or not).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mailflow.store import Transaction
from mailflow.store.schema import Schema

WAITING, SENT = "waiting", "sent"


def forget(tx: Transaction, queue_id: str) -> None:
    """Forget what a message that was not accepted after all left here."""
    tx.execute("DELETE FROM answer_suggestions WHERE queue_id = :queue_id",
               {"queue_id": queue_id})
    tx.execute("DELETE FROM answer_companions WHERE queue_id = :queue_id",
               {"queue_id": queue_id})
    tx.execute("UPDATE answer_companions SET state = 'waiting', sent_at = NULL, sent_by = NULL,"
               " sent_message_id = NULL, edited = NULL, sent_queue_id = NULL"
               " WHERE sent_queue_id = :queue_id", {"queue_id": queue_id})


SCHEMA = Schema("answers", (
    (
        """CREATE TABLE answer_suggestions (
            id {id},
            case_number TEXT NOT NULL,
            message_id TEXT NOT NULL,
            queue_id TEXT,
            rank INTEGER NOT NULL,
            answer_id TEXT NOT NULL,
            code TEXT NOT NULL,
            title TEXT NOT NULL,
            language TEXT NOT NULL,
            confidence DOUBLE PRECISION NOT NULL,
            matched TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX answer_suggestions_case ON answer_suggestions (case_number)",
        """CREATE TABLE answer_companions (
            token TEXT PRIMARY KEY,
            case_number TEXT NOT NULL,
            answer_id TEXT NOT NULL,
            code TEXT NOT NULL,
            language TEXT NOT NULL,
            sent_to TEXT NOT NULL,
            text TEXT NOT NULL,
            message_id TEXT NOT NULL,
            state TEXT NOT NULL,
            queue_id TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            sent_at DOUBLE PRECISION,
            sent_by TEXT,
            sent_message_id TEXT,
            sent_queue_id TEXT,
            edited INTEGER
        )""",
        "CREATE INDEX answer_companions_case ON answer_companions (case_number)",
    ),
), forget=forget)


@dataclass(frozen=True)
class Suggestion:
    """One of the three answers suggested for a customer message."""

    rank: int
    answer_id: str
    code: str
    title: str
    language: str
    confidence: float
    matched: str  # the customer's words that matched, comma-separated


def record_suggestions(tx: Transaction, *, case: str, message_id: str, queue_id: str,
                       suggestions: Sequence[Suggestion]) -> None:
    """All of a message's suggestions in one statement."""
    if not suggestions:
        return
    values: dict[str, object] = {"case": case, "message_id": message_id,
                                 "queue_id": queue_id, "now": tx.now()}
    rows = []
    for i, s in enumerate(suggestions):
        rows.append(f"(:case, :message_id, :queue_id, :rank{i}, :answer{i}, :code{i},"
                    f" :title{i}, :language{i}, :confidence{i}, :matched{i}, :now)")
        values.update({f"rank{i}": s.rank, f"answer{i}": s.answer_id, f"code{i}": s.code,
                       f"title{i}": s.title[:300], f"language{i}": s.language,
                       f"confidence{i}": s.confidence, f"matched{i}": s.matched[:500]})
    tx.execute("INSERT INTO answer_suggestions (case_number, message_id, queue_id, rank,"
               " answer_id, code, title, language, confidence, matched, created_at) VALUES "
               + ", ".join(rows), values)


def suggestions_of(tx: Transaction, case: str) -> list[tuple[float, str, Suggestion]]:
    """(when, message id, suggestion) of every message of the case, oldest first."""
    rows = tx.execute("SELECT created_at, message_id, rank, answer_id, code, title, language,"
                      " confidence, matched FROM answer_suggestions WHERE case_number = :case"
                      " ORDER BY created_at, id", {"case": case})
    return [(float(r[0]), str(r[1]), Suggestion(int(r[2]), r[3], r[4], r[5], r[6],
                                                float(r[7]), r[8])) for r in rows]


@dataclass(frozen=True)
class Companion:
    """A companion sent to an agent, and what became of it."""

    token: str
    case: str
    answer_id: str
    code: str
    language: str
    sent_to: str  # the address(es) it went to, comma-separated
    text: str  # the answer as filled in
    message_id: str  # the companion's own
    state: str
    created_at: float
    expires_at: float
    sent_at: float | None = None
    sent_by: str | None = None
    edited: bool | None = None


_COLUMNS = ("token, case_number, answer_id, code, language, sent_to, text, message_id, state,"
            " created_at, expires_at, sent_at, sent_by, edited")


def _companion(row: Sequence[object]) -> Companion:
    values = list(row)
    values[-1] = None if values[-1] is None else bool(values[-1])
    return Companion(*values)  # type: ignore[arg-type]


def record_companion(tx: Transaction, *, companion: Companion, queue_id: str) -> None:
    c = companion
    tx.execute("INSERT INTO answer_companions (token, case_number, answer_id, code, language,"
               " sent_to, text, message_id, state, queue_id, created_at, expires_at)"
               " VALUES (:token, :case, :answer_id, :code, :language, :sent_to, :text,"
               " :message_id, :state, :queue_id, :created, :expires)",
               {"token": c.token, "case": c.case, "answer_id": c.answer_id, "code": c.code,
                "language": c.language, "sent_to": c.sent_to, "text": c.text,
                "message_id": c.message_id, "state": c.state, "queue_id": queue_id,
                "created": c.created_at, "expires": c.expires_at})


def get_companion(tx: Transaction, token: str) -> Companion | None:
    rows = tx.execute(f"SELECT {_COLUMNS} FROM answer_companions WHERE token = :token",
                      {"token": token.lower()})
    return _companion(rows[0]) if rows else None


def companions_of(tx: Transaction, case: str) -> list[Companion]:
    rows = tx.execute(f"SELECT {_COLUMNS} FROM answer_companions WHERE case_number = :case"
                      " ORDER BY created_at", {"case": case})
    return [_companion(r) for r in rows]


def mark_sent(tx: Transaction, *, token: str, at: float, by: str, message_id: str,
              edited: bool, queue_id: str) -> None:
    tx.execute("UPDATE answer_companions SET state = 'sent', sent_at = :at, sent_by = :by,"
               " sent_message_id = :message_id, edited = :edited, sent_queue_id = :queue_id"
               " WHERE token = :token",
               {"at": at, "by": by, "message_id": message_id, "edited": int(edited),
                "queue_id": queue_id, "token": token})


def customer_thread(tx: Transaction, case: str) -> list[str]:
    """The Message-IDs of the case's customer messages, oldest first: the answer is
    threaded on the last one."""
    rows = tx.execute("SELECT message_id FROM case_messages WHERE case_number = :case"
                      " AND role = 'customer' AND message_id <> '' ORDER BY created_at, id",
                      {"case": case})
    return [str(r[0]) for r in rows]
