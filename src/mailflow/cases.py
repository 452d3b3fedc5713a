"""Cases: numbering, finding the case a message belongs to, and their store records.

Shared by the ``number``, ``deduplicate`` and ``acknowledge`` stages (and the
``mailflow cases`` command), so each of them asks the same questions the
same way. SQL stays here and in the store, never in a stage.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stdnum import damm

from mailflow.message import headers
from mailflow.message.customer_text import customer_text
from mailflow.store import Transaction
from mailflow.store.schema import Schema

#: Message-IDs (without brackets) in an In-Reply-To or References value; a message's own
#: are ``Message.message_ids(name)``, taken from its original bytes
message_ids = headers.message_ids


# ---------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NumberFormat:
    """``PREFIX-YYYYMMDD-NNNNN-C``: C is a Damm check digit over all the digits.

    The Damm algorithm catches every single-digit mistake and every swap of
    two adjacent digits, so a mistyped number never lands in another case.
    """

    prefixes: tuple[str, ...]
    date_format: str = "%Y%m%d"
    digits: int = 5
    separator: str = "-"

    def sequence_name(self, prefix: str, now: datetime) -> str:
        return f"{prefix}{self.separator}{now.strftime(self.date_format)}" if self.date_format \
            else prefix

    def format(self, prefix: str, now: datetime, sequence: int) -> str:
        parts = [prefix]
        if self.date_format:
            parts.append(now.strftime(self.date_format))
        parts.append(f"{sequence:0{self.digits}d}")
        digits = "".join(ch for ch in "".join(parts[1:]) if ch.isdigit())
        parts.append(damm.calc_check_digit(digits))
        return self.separator.join(parts)

    def pattern(self) -> re.Pattern[str]:
        """Finds candidate numbers anywhere in a subject, whatever the reply prefixes."""
        prefixes = "|".join(re.escape(p) for p in sorted(self.prefixes, key=len, reverse=True))
        sep = re.escape(self.separator)
        date = rf"\d+{sep}" if self.date_format else ""
        return re.compile(rf"(?<![A-Za-z0-9])(?:{prefixes}){sep}{date}\d+{sep}\d(?![0-9])",
                          re.IGNORECASE)

    @staticmethod
    def valid(number: str) -> bool:
        """True when the check digit matches the other digits."""
        digits = "".join(ch for ch in number if ch.isdigit())
        return len(digits) >= 2 and bool(damm.is_valid(digits))




# ---------------------------------------------------------------------------
# Looking cases up
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseRow:
    number: str
    status: str
    customer: str
    subject: str
    mailbox: str
    route: str | None
    priority: str | None
    assignee: str | None
    language: str | None
    created_at: float
    promised_at: float | None = None  # the answer time the acknowledgement promised

    @property
    def open(self) -> bool:
        return self.status != "closed"


_CASE_COLUMNS = ("number, status, customer, subject, mailbox, route, priority, assignee,"
                 " language, created_at, promised_at")


def get_case(tx: Transaction, number: str) -> CaseRow | None:
    rows = tx.execute(f"SELECT {_CASE_COLUMNS} FROM cases WHERE number = :number",
                      {"number": number.upper()})
    return CaseRow(*rows[0]) if rows else None


def list_cases(tx: Transaction, status: str | None = None, limit: int = 50) -> list[CaseRow]:
    where = "WHERE status = :status" if status else ""
    rows = tx.execute(f"SELECT {_CASE_COLUMNS} FROM cases {where}"
                      " ORDER BY created_at DESC LIMIT :limit", {"status": status, "limit": limit})
    return [CaseRow(*r) for r in rows]


def customer_message(tx: Transaction, message_id: str) -> tuple[str, str | None] | None:
    """(case, state of that earlier message) for a customer Message-ID seen before;
    state ``unknown``: the next hop vanished before saying whether it took it."""
    if not message_id:
        return None
    rows = tx.execute("SELECT c.case_number, m.state FROM case_messages c LEFT JOIN messages m"
                      " ON m.queue_id = c.queue_id WHERE c.message_id = :message_id"
                      " AND c.role = 'customer'", {"message_id": message_id})
    return (str(rows[0][0]), rows[0][1]) if rows else None


def case_of_references(tx: Transaction, ids: Sequence[str]) -> str | None:
    """The case of the most recent message among ``ids`` (customer's, ack, forward…)."""
    for message_id in reversed(ids):
        rows = tx.execute("SELECT case_number FROM case_messages WHERE message_id = :message_id"
                          " ORDER BY id DESC LIMIT 1", {"message_id": message_id})
        if rows:
            return str(rows[0][0])
    return None


#: any case number's shape, whatever the prefix: an agent's Subject is trusted to name one
ANY_NUMBER = re.compile(r"(?<![A-Za-z0-9])[A-Z][A-Z0-9]*-(?:\d+-)?\d+-\d(?![0-9])",
                        re.IGNORECASE)


#: the role of an expert's answer relayed to the customer (``expert_answers_customer``)
EXPERT_TO_CUSTOMER = "expert-customer"
#: the roles of a response to the customer: an agent's reply, an expert's direct answer
RESPONSE_ROLES = ("agent", EXPERT_TO_CUSTOMER)


def first_response_at(tx: Transaction, number: str) -> float | None:
    """When one of ours first answered the case (None: not yet)."""
    rows = tx.execute("SELECT MIN(created_at) FROM case_messages WHERE case_number = :number"
                      f" AND role IN {RESPONSE_ROLES!r}", {"number": number})
    return float(rows[0][0]) if rows and rows[0][0] is not None else None


def took_part(tx: Transaction, number: str, sender: str) -> bool:
    """Has ``sender`` written in, or been written to, in this case?"""
    if not sender:
        return False
    rows = tx.execute(
        "SELECT 1 FROM cases WHERE number = :number AND customer = :sender UNION ALL"
        " SELECT 1 FROM case_messages WHERE case_number = :number AND sender = :sender LIMIT 1",
        {"number": number, "sender": sender.lower()})
    return bool(rows)


def find_resend(tx: Transaction, sender: str, digest: str, since: float) -> str | None:
    rows = tx.execute("SELECT case_number FROM fingerprints WHERE sender = :sender"
                      " AND digest = :digest AND created_at >= :since"
                      " ORDER BY created_at DESC LIMIT 1",
                      {"sender": sender.lower(), "digest": digest, "since": since})
    return str(rows[0][0]) if rows else None


# ---------------------------------------------------------------------------
# Writing (ops for MessageContext.write, with their undo)
# ---------------------------------------------------------------------------


def insert_case(tx: Transaction, *, number: str, customer: str, customer_name: str,
                subject: str, mailbox: str, parent: str | None = None) -> None:
    tx.execute("INSERT INTO cases (number, status, customer, customer_name, subject, mailbox,"
               " parent, created_at, updated_at) VALUES (:number, 'open', :customer,"
               " :customer_name, :subject, :mailbox, :parent, :now, :now)",
               {"number": number, "customer": customer.lower(), "customer_name": customer_name,
                "subject": subject[:500], "mailbox": mailbox, "parent": parent, "now": tx.now()})


def delete_case(tx: Transaction, number: str) -> None:
    tx.execute("DELETE FROM cases WHERE number = :number", {"number": number})


def add_case_message(tx: Transaction, *, number: str, message_id: str, role: str, sender: str,
                     queue_id: str | None) -> None:
    tx.execute("INSERT INTO case_messages (case_number, message_id, role, sender, queue_id,"
               " created_at) VALUES (:number, :message_id, :role, :sender, :queue_id, :now)",
               {"number": number, "message_id": message_id, "role": role,
                "sender": sender.lower(), "queue_id": queue_id, "now": tx.now()})


def remove_case_messages(tx: Transaction, queue_id: str) -> None:
    tx.execute("DELETE FROM case_messages WHERE queue_id = :queue_id", {"queue_id": queue_id})


def update_case(tx: Transaction, number: str, **fields: Any) -> None:
    allowed = {"status", "route", "priority", "assignee", "language", "promised_at"}
    if not fields or set(fields) - allowed:
        raise ValueError(f"cannot update {sorted(set(fields) - allowed)}")
    assignments = ", ".join(f"{k} = :{k}" for k in fields)
    tx.execute(f"UPDATE cases SET {assignments}, updated_at = :now WHERE number = :number",
               {**fields, "now": tx.now(), "number": number})


def add_fingerprint(tx: Transaction, *, sender: str, digest: str, number: str,
                    queue_id: str) -> None:
    tx.execute("INSERT INTO fingerprints (sender, digest, case_number, queue_id, created_at)"
               " VALUES (:sender, :digest, :number, :queue_id, :now)",
               {"sender": sender.lower(), "digest": digest, "number": number,
                "queue_id": queue_id, "now": tx.now()})


def remove_fingerprints(tx: Transaction, queue_id: str) -> None:
    tx.execute("DELETE FROM fingerprints WHERE queue_id = :queue_id", {"queue_id": queue_id})


def forget_message(tx: Transaction, queue_id: str) -> None:
    """Forget what an abandoned message left: the case it opened (unless another
    message joined it since), its place in cases, its fingerprint."""
    tx.execute("DELETE FROM cases WHERE number IN (SELECT case_number FROM case_messages"
               " WHERE queue_id = :queue_id AND role = 'customer') AND NOT EXISTS (SELECT 1"
               " FROM case_messages m WHERE m.case_number = cases.number"
               " AND m.queue_id <> :queue_id)", {"queue_id": queue_id})
    remove_case_messages(tx, queue_id)
    remove_fingerprints(tx, queue_id)


SCHEMA = Schema("cases", (
    (
        # one conversation with a customer, numbered
        """CREATE TABLE cases (
            number TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            customer TEXT NOT NULL,
            customer_name TEXT NOT NULL,
            subject TEXT NOT NULL,
            mailbox TEXT NOT NULL,
            route TEXT,
            priority TEXT,
            assignee TEXT,
            language TEXT,
            promised_at DOUBLE PRECISION,
            parent TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX cases_customer ON cases (customer)",
        "CREATE INDEX cases_assignee ON cases (assignee, status)",
        """CREATE TABLE case_messages (
            id {id},
            case_number TEXT NOT NULL,
            message_id TEXT NOT NULL,
            role TEXT NOT NULL,
            sender TEXT NOT NULL,
            queue_id TEXT,
            created_at DOUBLE PRECISION NOT NULL
        )""",
        # one customer message belongs to one case, even when two copies race
        "CREATE UNIQUE INDEX case_messages_customer ON case_messages (message_id)"
        " WHERE role = 'customer' AND message_id <> ''",
        "CREATE INDEX case_messages_message_id ON case_messages (message_id)",
        "CREATE INDEX case_messages_case ON case_messages (case_number, sender)",
        """CREATE TABLE fingerprints (
            sender TEXT NOT NULL,
            digest TEXT NOT NULL,
            case_number TEXT NOT NULL,
            queue_id TEXT,
            created_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX fingerprints_sender ON fingerprints (sender, digest, created_at)",
    ),
    (  # 2: the open cases counted every 30 s (mailflow_cases_open), the retention's purge
        "CREATE INDEX cases_status ON cases (status, route, priority)",
        "CREATE INDEX cases_closed ON cases (status, updated_at)",
        "CREATE INDEX fingerprints_created ON fingerprints (created_at)",
    ),
), forget=forget_message)


# ---------------------------------------------------------------------------
# Resends: same text, new Message-ID
# ---------------------------------------------------------------------------


def normalised_text(text: str) -> str:
    """The customer's own words (`customer_text`), lowercased, spacing collapsed."""
    return " ".join(customer_text(text).lower().split())


_WHITESPACE = b" \t\r\n\x0b\x0c"


def fingerprint(text: str) -> str:
    """Digest of the customer's own words in ``text``, blind to case and spacing;
    '' when there are none (an attachment alone, a bare forward, only a signature)."""
    return own_fingerprint(customer_text(text))


def own_fingerprint(own_text: str) -> str:
    """`fingerprint` of a text already reduced to the customer's own words
    (``Message.customer_text.text``): a resend quotes or signs differently, or not.

    Whitespace is dropped with ``bytes.translate`` rather than split and
    joined: same answer for resends, a fraction of the cost on long bodies.
    """
    body = own_text.lower().encode("utf-8", "replace").translate(None, _WHITESPACE)
    return hashlib.sha256(body).hexdigest() if body else ""


def first_match(values: Iterable[str], pattern: re.Pattern[str]) -> list[str]:
    found: list[str] = []
    for value in values:
        found.extend(m.group(0).upper() for m in pattern.finditer(value))
    return found
