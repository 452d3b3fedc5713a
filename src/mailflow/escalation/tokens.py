"""Each forward to an expert, under its unguessable token: the ``escalate`` stage's table.

The token is the expert's reply address (``experts+<case>.<token>@``): an
answer joins its case by it alone, whatever the expert's client did to the
Subject and the References, and a token the store does not know (or one
past its ``expires_at``) makes the message ordinary inbound mail.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from functools import partial

import structlog

from mailflow import direction
from mailflow.context import StageStore
from mailflow.direction import Token, new_token, reply_address
from mailflow.message import Message
from mailflow.store import StoreUnavailable, Transaction
from mailflow.store.schema import Schema

log = structlog.get_logger("mailflow.escalation")

__all__ = ["Escalation", "new_token", "reply_address"]

#: an escalation waiting for the expert; answered; handed to the supervisor
WAITING, ANSWERED, SUPERVISOR = "waiting", "answered", "supervisor"


def forget_escalations(tx: Transaction, queue_id: str) -> None:
    """Forget the forwards owed to a message that was not accepted after all."""
    tx.execute("DELETE FROM escalations WHERE queue_id = :queue_id", {"queue_id": queue_id})


SCHEMA = Schema("escalate", (
    (
        """CREATE TABLE escalations (
            token TEXT PRIMARY KEY,
            case_number TEXT NOT NULL,
            rule TEXT NOT NULL,
            expert TEXT NOT NULL,
            reply_to TEXT NOT NULL,
            message_id TEXT NOT NULL,
            subject TEXT NOT NULL,
            excerpt TEXT NOT NULL,
            state TEXT NOT NULL,
            reminders_sent INTEGER NOT NULL,
            auto_replies INTEGER NOT NULL,
            queue_id TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            answered_at DOUBLE PRECISION
        )""",
        "CREATE INDEX escalations_case ON escalations (case_number)",
    ),
), forget=forget_escalations)


@dataclass(frozen=True)
class Escalation:
    token: str
    case: str
    rule: str
    expert: str  # the address(es) written to, comma-separated
    reply_to: str
    message_id: str  # the forward's, for the reminders' threading
    subject: str
    excerpt: str  # the customer's text, quoted in reminders
    state: str
    reminders_sent: int
    auto_replies: int
    created_at: float
    expires_at: float
    answered_at: float | None

    @property
    def experts(self) -> tuple[str, ...]:
        return tuple(a for a in self.expert.split(",") if a)


_COLUMNS = ("token, case_number, rule, expert, reply_to, message_id, subject, excerpt, state,"
            " reminders_sent, auto_replies, created_at, expires_at, answered_at")


def record(tx: Transaction, *, escalation: Escalation, queue_id: str) -> None:
    e = escalation
    tx.execute(f"INSERT INTO escalations ({_COLUMNS}, queue_id) VALUES (:token, :case, :rule,"
               " :expert, :reply_to, :message_id, :subject, :excerpt, :state, :reminders,"
               " :auto, :created, :expires, NULL, :queue_id)",
               {"token": e.token, "case": e.case, "rule": e.rule, "expert": e.expert,
                "reply_to": e.reply_to, "message_id": e.message_id, "subject": e.subject[:500],
                "excerpt": e.excerpt, "state": e.state, "reminders": e.reminders_sent,
                "auto": e.auto_replies, "created": e.created_at, "expires": e.expires_at,
                "queue_id": queue_id})


def get(tx: Transaction, token: str) -> Escalation | None:
    rows = tx.execute(f"SELECT {_COLUMNS} FROM escalations WHERE token = :token",
                      {"token": token.lower()})
    return Escalation(*rows[0]) if rows else None


def for_case(tx: Transaction, case: str) -> list[Escalation]:
    rows = tx.execute(f"SELECT {_COLUMNS} FROM escalations WHERE case_number = :case"
                      " ORDER BY created_at", {"case": case})
    return [Escalation(*r) for r in rows]


def valid(tx: Transaction, *, tokens: list[Token], now: float) -> set[Token]:
    """The (case, token) pairs among ``tokens`` that name a live forward of that case."""
    found: set[Token] = set()
    for case, token in tokens:
        row = get(tx, token)
        if row is not None and row.case.upper() == case.upper() and row.expires_at > now:
            found.add((case, token))
    return found


def update(tx: Transaction, *, token: str, **fields: object) -> None:
    allowed = {"state", "reminders_sent", "auto_replies", "answered_at"}
    if not fields or set(fields) - allowed:
        raise ValueError(f"cannot update {sorted(set(fields) - allowed)}")
    sets = ", ".join(f"{k} = :{k}" for k in fields)
    tx.execute(f"UPDATE escalations SET {sets} WHERE token = :token", {**fields, "token": token})


def count_auto_reply(tx: Transaction, *, token: str) -> None:
    tx.execute("UPDATE escalations SET auto_replies = auto_replies + 1 WHERE token = :token",
               {"token": token})


async def verified(message: Message, bases: Collection[str], store: StageStore,
                   now: float) -> Collection[Token]:
    """The tokens of the reply addresses (on ``bases``) among the envelope recipients that
    the store confirms, for :func:`mailflow.direction.decide`; none when the store cannot
    say (the chain then meets the same outage and tempfails the message)."""
    wanted = direction.tokens_to(message, bases)
    if not wanted:
        return ()
    try:
        return await store.run_read(partial(valid, tokens=wanted, now=now))
    except StoreUnavailable as exc:
        log.warning("reply_tokens_unchecked", error=str(exc))
        return ()
