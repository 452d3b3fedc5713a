"""RFC 3834's own signs, and the RFC 2076/Microsoft headers every mail client honours:
``Auto-Submitted``, ``Precedence``, the list headers, ``X-Auto-Response-Suppress``
and our own loop marker.
"""

from __future__ import annotations

import re

from mailflow.automatic.verdict import Automatic
from mailflow.message import Message
from mailflow.message.compose import LOOP_HEADER

_COMMENT = re.compile(r"\([^()]*\)")
_BULK_PRECEDENCE = {"bulk", "list", "junk", "auto_reply"}
_SUPPRESS_TOKENS = {"all", "oof", "autoreply"}


def standard_headers(message: Message) -> Automatic | None:
    """The standard headers say a robot or a list sent this."""
    auto = _COMMENT.sub("", message.get("Auto-Submitted")).strip().lower()
    if auto and auto != "no":
        return Automatic("Auto-Submitted", f"Auto-Submitted: {auto}")
    for name in ("Precedence", "X-Precedence"):
        value = message.get(name).strip().lower()
        if value in _BULK_PRECEDENCE:
            return Automatic("Precedence", f"{name}: {value}")
    for header in message.headers:
        lower = header.name.lower()
        if lower.startswith("list-") or lower == "mailing-list":
            return Automatic("mailing list", f"mailing list ({header.name})")
        if lower == LOOP_HEADER.lower():
            return Automatic("auto-reply header", f"auto-reply marker ({header.name})")
        if lower == "x-auto-response-suppress":
            tokens = {t.strip().lower() for t in re.split(r"[,\s]+", header.value) if t}
            if tokens & _SUPPRESS_TOKENS:
                return Automatic("X-Auto-Response-Suppress",
                                 f"X-Auto-Response-Suppress: {header.value}")
    return None
