"""Plain value types shared by stages, the pipeline and the store.

A leaf module: it imports nothing of mailflow, so the store can speak of
outgoing mail and timers without importing the stage machinery.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal


class Verdict(enum.StrEnum):
    """What happens to the message after the chain."""

    DELIVER = "deliver"
    DISCARD = "discard"
    REJECT = "reject"
    TEMPFAIL = "tempfail"
    QUARANTINE = "quarantine"


class Direction(enum.StrEnum):
    """Which way a message flows, decided once before the chain."""

    INBOUND = "inbound"  # a customer (anyone) writing to a service mailbox
    REPLY = "reply"  # one of ours answering a case
    INTERNAL = "internal"  # local to local, no service mailbox
    PASSTHROUGH = "passthrough"  # everything else: not our business


class CaseStatus(enum.StrEnum):
    """How a message joined its case (set by the ``number`` or ``replies`` stage)."""

    NEW = "new"
    FOLLOWUP = "followup"
    REOPENED = "reopened"
    COPY = "copy"  # the same Message-ID seen before
    RESEND = "resend"  # the same text from the same sender, within the resend window
    REPLY = "reply"  # one of ours answering the case (set by the ``replies`` stage)
    RETRY = "retry"  # the client's retry of a message the next hop may already have

    @property
    def is_retry(self) -> bool:
        """A copy that must be delivered all the same: the first may never have arrived."""
        return self is CaseStatus.RETRY

    @property
    def is_duplicate(self) -> bool:
        return self in (CaseStatus.COPY, CaseStatus.RESEND, CaseStatus.RETRY)

    @property
    def is_followup(self) -> bool:
        return self in (CaseStatus.FOLLOWUP, CaseStatus.REOPENED)

    @property
    def from_customer(self) -> bool:
        """A message that counts as the customer's own word in the case (not a copy)."""
        return not self.is_duplicate and self is not CaseStatus.REPLY


Priority = Literal["urgent", "high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("urgent", "high", "normal", "low")


@dataclass(frozen=True)
class OutgoingMail:
    """A message mailflow writes itself (acknowledgement, forward, reminder)."""

    kind: str
    rcpt_to: tuple[str, ...]
    data: bytes
    mail_from: str = ""  # null sender by default: no robot answers it
    not_before: float = 0.0  # paced: not sent before this time
    expires_at: float | None = None  # not sent after this time: recorded as expired


@dataclass(frozen=True)
class Timer:
    """A follow-up the scheduler fires later, even across restarts."""

    kind: str
    due: float
    key: str  # what the timer is about (a case number…); cancel by kind and key
    payload: dict[str, Any] = field(default_factory=dict)
