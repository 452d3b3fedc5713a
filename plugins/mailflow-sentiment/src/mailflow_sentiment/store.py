"""The plugin's table: one row per scored customer message, and what reads it.

``sentiment_moods`` keeps the label and score of each message of a case, the route it
settled on, and, for negative messages only, the sentence that weighed most (the
customer's words, for the digest): customer data, deleted with the case by the
retention purge (``mailflow_retention``), and with the message if the daemon abandons
it. The digest reads the case's route, assignee and replies from the core's tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mailflow.plugin import Purge, Schema, Transaction

SCHEMA = Schema("sentiment", (
    ("""CREATE TABLE sentiment_moods (
            id {id},
            case_number TEXT NOT NULL,
            queue_id TEXT NOT NULL,
            route TEXT NOT NULL,
            label TEXT NOT NULL,
            score DOUBLE PRECISION NOT NULL,
            language TEXT NOT NULL,
            sentence TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        )""",
     "CREATE INDEX sentiment_moods_created ON sentiment_moods (created_at)",
     "CREATE INDEX sentiment_moods_case ON sentiment_moods (case_number)"),
), forget=lambda tx, queue_id: forget(tx, queue_id=queue_id))

#: the rows of the closed cases the retention purge takes, before the cases themselves
PURGES = (Purge("sentiment_moods", "case_number IN (SELECT number FROM cases"
                " WHERE status = 'closed' AND updated_at < :cutoff)", "case-rows"),)


@dataclass(frozen=True)
class MoodRow:
    """One scored message, as recorded."""

    case_number: str
    route: str
    label: str
    score: float
    sentence: str
    at: float


@dataclass(frozen=True)
class DigestLine:
    """A case of the digest: its most negative message of the period, and where it is."""

    case_number: str
    route: str
    assignee: str
    status: str
    score: float
    sentence: str
    waiting_since: float | None  # the customer's first message not answered yet


def record(tx: Transaction, *, case: str, queue_id: str, route: str, label: str,
           score: float, language: str, sentence: str, at: float) -> None:
    tx.execute("INSERT INTO sentiment_moods (case_number, queue_id, route, label, score,"
               " language, sentence, created_at) VALUES (:case, :queue_id, :route, :label,"
               " :score, :language, :sentence, :at)",
               {"case": case, "queue_id": queue_id, "route": route, "label": label,
                "score": score, "language": language, "sentence": sentence, "at": at})


def forget(tx: Transaction, *, queue_id: str) -> None:
    tx.execute("DELETE FROM sentiment_moods WHERE queue_id = :q", {"q": queue_id})


def case_moods(tx: Transaction, number: str, limit: int = 12) -> list[MoodRow]:
    """The case's last ``limit`` moods, oldest first."""
    rows = tx.execute("SELECT case_number, route, label, score, sentence, created_at"
                      " FROM sentiment_moods WHERE case_number = :n"
                      " ORDER BY created_at DESC, id DESC LIMIT :limit",
                      {"n": number, "limit": limit})
    return [MoodRow(str(c), str(r), str(lb), float(s), str(t), float(a))
            for c, r, lb, s, t, a in reversed(rows)]


def most_negative(tx: Transaction, since: float, until: float) -> list[DigestLine]:
    """Each case with a negative message between ``since`` and ``until``: its lowest
    score and sentence, its route and assignee now, since when the customer waits."""
    rows = tx.execute(
        "SELECT m.case_number, m.route, m.score, m.sentence, m.created_at,"
        " c.route, c.assignee, c.status"
        " FROM sentiment_moods m LEFT JOIN cases c ON c.number = m.case_number"
        " WHERE m.label = 'negative' AND m.created_at >= :since AND m.created_at < :until"
        " ORDER BY m.score, m.created_at", {"since": since, "until": until})
    lines: dict[str, DigestLine] = {}
    for number, route, score, sentence, _, case_route, assignee, status in rows:
        if number in lines:  # the lowest score came first
            continue
        lines[str(number)] = DigestLine(str(number), str(case_route or route or ""),
                                        str(assignee or ""), str(status or ""),
                                        float(score), str(sentence),
                                        waiting_since(tx, str(number)))
    return list(lines.values())


def waiting_since(tx: Transaction, number: str) -> float | None:
    """When the customer's oldest message after the last answer came (None: answered)."""
    rows = tx.execute("SELECT MIN(created_at) FROM case_messages WHERE case_number = :n"
                      " AND role = 'customer' AND created_at > COALESCE((SELECT MAX(created_at)"
                      " FROM case_messages WHERE case_number = :n AND role IN"
                      " ('agent', 'expert-customer')), 0)", {"n": number})
    return float(rows[0][0]) if rows and rows[0][0] is not None else None


def counts(tx: Transaction, since: float, until: float) -> Sequence[tuple[str, str, int]]:
    """(route, label, messages) scored between ``since`` and ``until``."""
    rows = tx.execute("SELECT route, label, count(*) FROM sentiment_moods"
                      " WHERE created_at >= :since AND created_at < :until"
                      " GROUP BY route, label ORDER BY route, label",
                      {"since": since, "until": until})
    return [(str(r), str(lb), int(n)) for r, lb, n in rows]
