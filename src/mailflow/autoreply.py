"""When a robot must not answer: RFC 3834, RFC 5230, and the lessons of RT, Znuny,
Zammad and FreeScout. Used by every stage that writes to a sender by itself.

``why_not(message, ...)`` returns the reason to stay silent, or None.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from mailflow.message import Message

LOOP_HEADER = "X-Mailflow-Loop"

_COMMENT = re.compile(r"\([^()]*\)")
_BULK_PRECEDENCE = {"bulk", "list", "junk", "auto_reply"}
_SUPPRESS_TOKENS = {"all", "oof", "autoreply"}
_ROBOT_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponder", "x-loop", "x-no-loop",
                  LOOP_HEADER.lower())
_ROBOT_LOCAL_PARTS = {"mailer-daemon", "postmaster", "abuse", "root", "noreply", "no-reply",
                      "donotreply", "do-not-reply", "ne-pas-repondre", "nepasrepondre",
                      "ne_pas_repondre", "no_reply"}
#: ``noreply-notifications@``, ``no-reply+42@``, ``mailer-daemon.mx1@``: robots with a suffix.
_ROBOT_PREFIX = re.compile(r"^(?:mailer-daemon|no-?reply|no_reply|do-?not-?reply"
                           r"|ne[-_]?pas[-_]?repondre)[-+._]")


def robot_sender(address: str) -> str | None:
    """Why ``address`` is a robot's, judging by its local part, or None."""
    local = address.rpartition("@")[0].lower() if "@" in address else address.lower()
    if local in _ROBOT_LOCAL_PARTS or _ROBOT_PREFIX.match(local):
        return f"robot sender ({local})"
    if local.startswith("owner-") or local.endswith("-request"):
        return "mailing-list sender"
    return None


def robot_headers(message: Message) -> str | None:
    """Why the headers say a robot or a list sent this, or None."""
    auto = _COMMENT.sub("", message.get("Auto-Submitted")).strip().lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto}"
    for name in ("Precedence", "X-Precedence"):
        value = message.get(name).strip().lower()
        if value in _BULK_PRECEDENCE:
            return f"{name}: {value}"
    for header in message.headers:
        lower = header.name.lower()
        if lower.startswith("list-") or lower == "mailing-list":
            return f"mailing list ({header.name})"
        if lower in _ROBOT_HEADERS:
            return f"auto-reply marker ({header.name})"
        if lower == "x-auto-response-suppress":
            tokens = {t.strip().lower() for t in re.split(r"[,\s]+", header.value) if t}
            if tokens & _SUPPRESS_TOKENS:
                return f"X-Auto-Response-Suppress: {header.value}"
    if message.content_type == "multipart/report":
        return "delivery or read report (multipart/report)"
    return None


def why_not(message: Message, recipient: str, own_addresses: Collection[str],
            local_domains: Collection[str]) -> str | None:
    """The reason not to write to ``recipient`` about ``message``, or None."""
    if not message.envelope.mail_from:
        return "null sender"
    reason = robot_headers(message)
    if reason:
        return reason
    if not recipient or "@" not in recipient:
        return "no usable address"
    lowered = recipient.lower()
    reason = robot_sender(lowered) or robot_sender(message.envelope.mail_from)
    if reason:
        return reason
    if lowered in own_addresses or lowered.rpartition("@")[2] in local_domains:
        return "one of our own addresses"
    return None
