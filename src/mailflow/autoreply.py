"""When a robot must not answer: RFC 3834, RFC 5230, and the lessons of RT, Znuny,
Zammad and FreeScout. Used by every stage that writes to a sender by itself.

``why_not(message, ...)`` returns the reason to stay silent, or None. The tables
of what real robots look like are in ``mailflow.robots``.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from mailflow.message import Message
from mailflow.robots import RobotDetector

LOOP_HEADER = "X-Mailflow-Loop"

_COMMENT = re.compile(r"\([^()]*\)")
_BULK_PRECEDENCE = {"bulk", "list", "junk", "auto_reply"}
_SUPPRESS_TOKENS = {"all", "oof", "autoreply"}
#: the shipped tables, for callers without rules of their own (direction, prioritise)
SHIPPED = RobotDetector()


def robot_sender(address: str, robots: RobotDetector = SHIPPED) -> str | None:
    """Why ``address`` is a robot's, judging by its local part, or None."""
    return robots.sender(address)


def rfc3834_headers(message: Message) -> str | None:
    """Why the standard headers say a robot or a list sent this, or None."""
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
        if lower == LOOP_HEADER.lower():
            return f"auto-reply marker ({header.name})"
        if lower == "x-auto-response-suppress":
            tokens = {t.strip().lower() for t in re.split(r"[,\s]+", header.value) if t}
            if tokens & _SUPPRESS_TOKENS:
                return f"X-Auto-Response-Suppress: {header.value}"
    return None


def automatic(message: Message, robots: RobotDetector = SHIPPED) -> str | None:
    """Why ``message`` is automatic (a bounce, an out-of-office, a robot's), or None:
    such mail is not the customer's word, so it moves no clock and reopens no case."""
    if not message.envelope.mail_from:
        return "null sender"
    return robot_message(message, robots) or robot_sender(message.envelope.mail_from, robots)


def robot_headers(message: Message, robots: RobotDetector = SHIPPED) -> str | None:
    """Why the headers or the content type say a robot, a list or a helpdesk sent
    this, or None."""
    return (rfc3834_headers(message) or robots.headers(message)
            or robots.content(message))


def robot_message(message: Message, robots: RobotDetector = SHIPPED) -> str | None:
    """Why the message itself (headers, content, From, Subject) says a robot wrote it,
    whoever the envelope names."""
    return robot_headers(message, robots) or robots.author(message) or robots.subject(
        message.subject)


def why_not(message: Message, recipient: str, own_addresses: Collection[str],
            local_domains: Collection[str], robots: RobotDetector = SHIPPED) -> str | None:
    """The reason not to write to ``recipient`` about ``message``, or None."""
    if not message.envelope.mail_from:
        return "null sender"
    reason = robot_message(message, robots)
    if reason:
        return reason
    if not recipient or "@" not in recipient:
        return "no usable address"
    lowered = recipient.lower()
    reason = robots.sender(lowered) or robots.sender(message.envelope.mail_from)
    if reason:
        return reason
    if lowered in own_addresses or lowered.rpartition("@")[2] in local_domains:
        return "one of our own addresses"
    return None
