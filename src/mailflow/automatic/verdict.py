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
