"""RFC 3834's own signs, and the RFC 2076/Microsoft headers every mail client honours:
``Auto-Submitted``, ``Precedence``, the list headers, ``X-Auto-Response-Suppress``
and our own loop marker.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from mailflow.automatic.verdict import Automatic
from mailflow.message.compose import LOOP_HEADER

_COMMENT = re.compile(r"\([^()]*\)")
_BULK_PRECEDENCE = {"bulk", "list", "junk", "auto_reply"}
_SUPPRESS_TOKENS = {"all", "oof", "autoreply"}


def standard_headers(headers: Mapping[str, list[str]], order: Iterable[str]) -> Automatic | None:
    """The standard headers say a robot or a list sent this. ``headers``: lower-cased
    names to values; ``order``: the names as written, in the message's order."""
    auto = _COMMENT.sub("", (headers.get("auto-submitted") or [""])[0]).strip().lower()
    if auto and auto != "no":
        return Automatic("Auto-Submitted", f"Auto-Submitted: {auto}")
    for name in ("Precedence", "X-Precedence"):
        value = (headers.get(name.lower()) or [""])[0].strip().lower()
        if value in _BULK_PRECEDENCE:
            return Automatic("Precedence", f"{name}: {value}")
    loop = LOOP_HEADER.lower()
    for name in order:
        lower = name.lower()
        if lower.startswith("list-") or lower == "mailing-list":
            return Automatic("mailing list", f"mailing list ({name})")
        if lower == loop:
            return Automatic("auto-reply header", f"auto-reply marker ({name})")
        if lower == "x-auto-response-suppress":
            value = headers[lower][0]
            tokens = {t.strip().lower() for t in re.split(r"[,\s]+", value) if t}
            if tokens & _SUPPRESS_TOKENS:
                return Automatic("X-Auto-Response-Suppress", f"X-Auto-Response-Suppress: {value}")
    return None
