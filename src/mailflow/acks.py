"""The acknowledgements sent, the ones not sent and why, and the ones that bounced: the
``acknowledge`` stage's tables.

The limits (per case, per address per day, the global ceiling per hour), the pace (per
minute) and the bounce back-off are counted here, so SQL stays out of the stage. A burst
of distinct customers (70 mails flushed from Postfix's queue after an outage) is not a
loop: past the pace their acknowledgements wait their turn in the outbox instead of
being dropped; the ceiling, far above a real burst, is the brake against backscatter.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailflow import cases
from mailflow.store import Transaction
from mailflow.store.schema import Schema

if TYPE_CHECKING:  # the daemon's metrics are set up before mailflow.stage is imported
    from mailflow.stage import Automatic, AutomaticDetector

#: why the ``acknowledge`` stage sends no acknowledgement, the automatic-mail signs apart
#: (the rules' own): the values of ``mailflow_acks_suppressed_total``'s ``reason`` known
#: at load (the sender-domain check's too, when it is on)
SUPPRESSED = ("duplicate", "follow-up on an existing case", "no usable address",
              "one of our own addresses", "limit per case", "limit per address per day",
              "global ceiling", "an acknowledgement to this address bounced recently")


def not_to_write(automatic: Automatic | None, recipient: str, own: Collection[str],
                 local_domains: Collection[str], detector: AutomaticDetector) -> str | None:
    """Why no acknowledgement may go to ``recipient`` about a message whose automatic
    verdict is ``automatic``: a robot wrote it, or the address is a robot's (a web form's
    customer: Reply-To, a form field) or one of ours. None: write."""
    if automatic is not None:
        return automatic.why
    if not recipient or "@" not in recipient:
        return "no usable address"
    lowered = recipient.lower()
    robot = detector.address(lowered)
    if robot is not None:
        return robot.why
    if lowered in own or lowered.rpartition("@")[2] in local_domains:
        return "one of our own addresses"
    return None


def forget_acks(tx: Transaction, queue_id: str) -> None:
    """Forget the acknowledgement owed to (or withheld from) a message that was not
    accepted after all."""
    tx.execute("DELETE FROM acks WHERE queue_id = :queue_id", {"queue_id": queue_id})
    tx.execute("DELETE FROM ack_withheld WHERE queue_id = :queue_id", {"queue_id": queue_id})


SCHEMA = Schema("acknowledge", (
    (
        """CREATE TABLE acks (
            id {id},
            case_number TEXT NOT NULL,
            address TEXT NOT NULL,
            message_id TEXT NOT NULL,
            queue_id TEXT,
            sent_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX acks_address ON acks (address, sent_at)",
        "CREATE INDEX acks_sent_at ON acks (sent_at)",
        "CREATE INDEX acks_message_id ON acks (message_id)",
        """CREATE TABLE ack_bounces (
            address TEXT NOT NULL,
            ack_message_id TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX ack_bounces_address ON ack_bounces (address, at)",
    ),
    (  # 2: why a new case got no acknowledgement (`cases show` says it)
        """CREATE TABLE ack_withheld (
            case_number TEXT NOT NULL,
            reason TEXT NOT NULL,
            queue_id TEXT,
            at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX ack_withheld_case ON ack_withheld (case_number)",
    ),
    (  # 3: the per-case limit counts a case's acknowledgements on every new case
        "CREATE INDEX acks_case ON acks (case_number)",
    ),
), forget=forget_acks)


def record_ack(tx: Transaction, *, case: str, address: str, message_id: str, queue_id: str,
               promised_at: float | None, sent_at: float, language: str | None = None) -> None:
    tx.execute("INSERT INTO acks (case_number, address, message_id, queue_id, sent_at)"
               " VALUES (:case, :address, :message_id, :queue_id, :sent_at)",
               {"case": case, "address": address, "message_id": message_id,
                "queue_id": queue_id, "sent_at": sent_at})
    cases.add_case_message(tx, number=case, message_id=message_id, role="ack", sender=address,
                           queue_id=queue_id)
    # what the customer was told, and in which language: `mailflow cases show` says it
    told = {key: value for key, value in (("promised_at", promised_at), ("language", language))
            if value is not None}
    if told:
        cases.update_case(tx, case, **told)


def acks_for_case(tx: Transaction, case: str) -> int:
    (count,), = tx.execute("SELECT count(*) FROM acks WHERE case_number = :case", {"case": case})
    return int(count)


def acks_to_address_since(tx: Transaction, address: str, since: float) -> int:
    (count,), = tx.execute("SELECT count(*) FROM acks WHERE address = :address"
                           " AND sent_at >= :since", {"address": address, "since": since})
    return int(count)


def acks_since(tx: Transaction, since: float) -> int:
    (count,), = tx.execute("SELECT count(*) FROM acks WHERE sent_at >= :since",
                           {"since": since})
    return int(count)


def bounced_since(tx: Transaction, address: str, since: float) -> bool:
    return bool(tx.execute("SELECT 1 FROM ack_bounces WHERE address = :address AND at >= :since"
                           " LIMIT 1", {"address": address, "since": since}))


def acks_by_message_id(tx: Transaction, *, ids: list[str]) -> list[tuple[str, str]]:
    """(address, message id) of our acknowledgements among ``ids`` (what a bounce cites)."""
    names = {f"id{i}": message_id for i, message_id in enumerate(ids)}
    marks = ", ".join(f":{name}" for name in names)
    rows = tx.execute(f"SELECT address, message_id FROM acks WHERE message_id IN ({marks})",
                      names)
    return [(str(a), str(m)) for a, m in rows]


_ACK_ID = re.compile(r"<?(ack\.[A-Za-z0-9.\-]+@[A-Za-z0-9.\-]+)>?")
_BOUNCE_SCAN_BYTES = 256 * 1024


def cited_ack_ids(raw: bytes, text: str) -> set[str]:
    """The Message-IDs of our acknowledgements a bounce cites. A DSN returns our headers
    in a text/rfc822-headers or message/rfc822 part, which is not in ``text``: the bytes
    as received are looked at too."""
    returned = raw[:_BOUNCE_SCAN_BYTES].decode("ascii", "replace")
    return set(_ACK_ID.findall(text)) | set(_ACK_ID.findall(returned))


def record_bounce(tx: Transaction, *, address: str, message_id: str, at: float) -> None:
    tx.execute("INSERT INTO ack_bounces (address, ack_message_id, at)"
               " VALUES (:address, :message_id, :at)",
               {"address": address, "message_id": message_id, "at": at})


def record_withheld(tx: Transaction, *, case: str, reason: str, queue_id: str,
                    at: float) -> None:
    """A new case's acknowledgement not written, and why."""
    tx.execute("INSERT INTO ack_withheld (case_number, reason, queue_id, at)"
               " VALUES (:case, :reason, :queue_id, :at)",
               {"case": case, "reason": reason, "queue_id": queue_id, "at": at})


def limit_reason(tx: Transaction, *, customer: str, case: str, now: float, per_case: int,
                 per_address_per_day: int, global_per_hour: int) -> str | None:
    """Which limit an acknowledgement to ``customer`` about ``case`` would pass, if any."""
    if acks_for_case(tx, case) >= per_case:
        return "limit per case"
    if acks_to_address_since(tx, customer, now - 86400) >= per_address_per_day:
        return "limit per address per day"
    if acks_since(tx, now - 3600) >= global_per_hour:
        return f"global ceiling ({global_per_hour} per hour)"
    return None


def next_slot(tx: Transaction, *, now: float, per_minute: int) -> float:
    """When the next acknowledgement may leave: now while fewer than ``per_minute`` are
    planned from a minute ago on, else one pace step after the last one planned
    (``acks.sent_at`` is when each is planned to leave)."""
    (planned, last), = tx.execute("SELECT count(*), MAX(sent_at) FROM acks"
                                  " WHERE sent_at > :since", {"since": now - 60})
    if int(planned) < per_minute or last is None:
        return now
    return max(now, float(last) + 60.0 / per_minute)


@dataclass(frozen=True)
class AckFate:
    """What became of one acknowledgement, or why none was written (``withheld``)."""

    state: str  # sent, ready (waiting: paced or retried), held, expired, failed, withheld
    at: float | None  # sent at, or due at (planned)
    detail: str = ""  # the reason: withheld, expired, failed, the last error of a retry


def fates(tx: Transaction, number: str) -> list[AckFate]:
    """The case's acknowledgements as their outbox rows say (for ``cases show``), or why
    none was written."""
    rows = tx.execute(
        "SELECT o.state, o.sent_at, o.next_attempt, o.last_error, a.sent_at FROM acks a"
        " LEFT JOIN outbox o ON o.message = a.queue_id AND o.kind = 'ack'"
        " WHERE a.case_number = :number ORDER BY a.id", {"number": number})
    if rows:
        return [AckFate(str(state or "ready"), sent if state == "sent" else due or planned,
                        str(error or "")) for state, sent, due, error, planned in rows]
    withheld = tx.execute("SELECT reason, at FROM ack_withheld WHERE case_number = :number"
                          " ORDER BY at LIMIT 1", {"number": number})
    return [AckFate("withheld", float(at), str(reason)) for reason, at in withheld]
