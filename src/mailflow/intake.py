"""What the daemon does to a received message before the chain sees it.

Who may write to whom (the relay check at RCPT), then, after DATA: the
bare-newline policy, the removal of ``X-Mailflow-*`` headers forged by
strangers, one parse, and the hop count. The SMTP side and ``mailflow try``
both call these functions, so a dry run judges a message exactly as the
daemon would.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from mailflow.message import Envelope, Message, parse_message
from mailflow.wire import has_bare_newlines, normalize_newlines, strip_internal_headers

if TYPE_CHECKING:
    from mailflow.config import SmtpSettings
    from mailflow.rules import RuleSet

log = structlog.get_logger("mailflow.message")

PARSE_IN_THREAD_BYTES = 512 * 1024  # above this, parse off the event loop
BARE_NEWLINES_REPLY = "550 5.5.2 Message contains bare CR or LF; use CRLF line endings"
TOO_MANY_HOPS_REPLY = "554 5.4.6 Too many hops (Received headers): mail loop suspected"


def relay_refusal(address: str, rules: RuleSet, trusted: bool) -> str | None:
    """Why ``address`` may not be a recipient for this client, or None.

    Strangers may only write to our own domains, and only to plain local
    parts: ``%``-hacks, bang paths, quoted ``@`` and source routes could be
    turned into relaying by the next hop.
    """
    if trusted:
        return None
    local, _, _domain = address.rpartition("@")
    if not local or not rules.is_local(address):
        return "550 5.7.1 Relaying denied: not a local domain"
    if any(c in local for c in "%!@") or local.startswith(("@", '"@')) or ":" in local:
        return "550 5.7.1 Relaying denied: address form not accepted"
    return None


@dataclass(frozen=True)
class Prepared:
    """The message the chain will see, or the reply refusing it (with what was found)."""

    message: Message | None  # None only when refused before parsing
    refusal: str | None = None
    newlines_fixed: bool = False
    headers_removed: int = 0


async def parse(raw: bytes, envelope: Envelope) -> Message:
    """Parse once; a large message is parsed in a thread to keep the event loop responsive."""
    if len(raw) > PARSE_IN_THREAD_BYTES:
        return await asyncio.to_thread(parse_message, raw, envelope)
    return parse_message(raw, envelope)


async def prepare(raw: bytes, envelope: Envelope, smtp: SmtpSettings, *,
                  trusted: bool) -> Prepared:
    """Clean, parse and check a message received after DATA."""
    fixed = has_bare_newlines(raw)
    if fixed:
        if smtp.bare_newlines == "reject":
            return Prepared(None, BARE_NEWLINES_REPLY)
        raw = normalize_newlines(raw)
    removed = 0
    if not trusted:
        raw, removed = strip_internal_headers(raw)
        if removed:
            log.info("internal_headers_removed", count=removed, peer=envelope.peer)
    message = await parse(raw, envelope)
    if message.count("Received") > smtp.max_received_headers:
        return Prepared(message, TOO_MANY_HOPS_REPLY, fixed, removed)
    return Prepared(message, None, fixed, removed)
