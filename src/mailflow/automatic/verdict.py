"""The automatic verdict: which sign decided that a message is automatic, and what it saw.

A leaf module (it imports nothing of mailflow), so the message context can
carry the verdict without importing the detector.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Automatic:
    """A message written by a robot (a bounce, an out-of-office, a list, a notification).

    ``sign`` names the kind of sign (``Auto-Submitted``, ``automatic-reply subject``,
    ``report``…: a metric label, the same for every message it decides); ``why`` says
    what was seen, for ``mailflow try`` and the logs.
    """

    sign: str
    why: str

    def __str__(self) -> str:
        return self.why


@dataclass(frozen=True)
class Evidence:
    """One thing seen that points to a robot, and how far it goes alone.

    ``weight`` 1 decides alone; weaker evidence (a bounce's wording, a bulk mailer's
    transport header) adds up with the rest, and a person's signs (a reply, a mail
    client) count against it: what reaches 1 decides (see
    :mod:`mailflow.automatic.signs`). ``kind`` is the sign's name.
    """

    kind: str
    detail: str
    weight: float = 1.0
    #: wording only a machine writes (an MTA's block, a tool's subject format): it agrees
    #: with the rest as the message's structure does
    machine: bool = False

    def verdict(self) -> Automatic:
        # the vendors' headers were always told as "auto-reply marker (X-Loop)"
        said = "auto-reply marker" if self.kind == "auto-reply header" else self.kind
        return Automatic(self.kind, f"{said} ({self.detail})" if self.detail else said)
