"""The acknowledgements sent, and the ones that bounced: the ``acknowledge`` stage's tables.

The limits (per case, per address per day, per minute) and the bounce back-off
are counted here, so SQL stays out of the stage.
"""

from __future__ import annotations

from mailflow import cases
from mailflow.store import Transaction
from mailflow.store.schema import Schema

#: why the ``acknowledge`` stage sends no acknowledgement, the automatic-mail signs apart
#: (the rules' own): the values of ``mailflow_acks_suppressed_total``'s ``reason`` known
#: at load (the sender-domain check's too, when it is on)
SUPPRESSED = ("duplicate", "follow-up on an existing case", "no usable address",
              "one of our own addresses", "limit per case", "limit per address per day",
              "global circuit breaker", "an acknowledgement to this address bounced recently")


def forget_acks(tx: Transaction, queue_id: str) -> None:
    """Forget the acknowledgement owed to a message that was not accepted after all."""
    tx.execute("DELETE FROM acks WHERE queue_id = :queue_id", {"queue_id": queue_id})


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


def record_bounce(tx: Transaction, *, address: str, message_id: str, at: float) -> None:
    tx.execute("INSERT INTO ack_bounces (address, ack_message_id, at)"
               " VALUES (:address, :message_id, :at)",
               {"address": address, "message_id": message_id, "at": at})
