"""Bytes on the wire: line endings, our own headers, the relayed copy, bounces, queue ids.

mailflow never re-serialises a message: it prepends its headers to the
bytes as received (and, on request, tags the Subject). Everything here works
on bytes and is pure, so the SMTP side, ``mailflow try`` and the tests share it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime

from mailflow.clock import SYSTEM_CLOCK, Clock
from mailflow.context import MessageContext, safe_header_value
from mailflow.message.compose import LOOP_HEADER
from mailflow.message.writer import Letter, MailWriter, answering

_LINE_ENDING = re.compile(rb"\r\n|\r|\n")
_HEADER_END = re.compile(rb"\r\n\r\n")
#: Our own headers, and anything pretending to be: removed unless the client is trusted.
#: The loop marker stays: forging it can only silence our robots, and they must see it.
#: a field and its folded lines; the last line of a message without a body may lack its CRLF
_INTERNAL_HEADER = re.compile(
    rb"^X-Mailflow-(?!Loop:)[^\r\n]*(?:\r\n|\Z)(?:[ \t][^\r\n]*(?:\r\n|\Z))*",
    re.IGNORECASE | re.MULTILINE)
_SUBJECT = re.compile(rb"^Subject:[ \t]*", re.IGNORECASE | re.MULTILINE)
_ENHANCED_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


def new_queue_id(clock: Clock = SYSTEM_CLOCK) -> str:
    """A short id for logs, headers and the store: time-ordered, unguessable."""
    return f"{int(clock.now() * 1000):x}{secrets.token_hex(4)}".upper()


def has_bare_newlines(raw: bytes) -> bool:
    """True if any CR or LF is not part of a CRLF pair (three C-speed counts, no regex)."""
    pairs = raw.count(b"\r\n")
    return raw.count(b"\r") != pairs or raw.count(b"\n") != pairs


def normalize_newlines(raw: bytes) -> bytes:
    """Bare CR or LF become CRLF: no smuggled end-of-data can survive downstream."""
    return _LINE_ENDING.sub(b"\r\n", raw) if has_bare_newlines(raw) else raw


def strip_internal_headers(raw: bytes) -> tuple[bytes, int]:
    """Remove ``X-Mailflow-*`` header fields from the header block only."""
    if raw.startswith(b"\r\n"):  # no header block at all: the body is not ours to edit
        return raw, 0
    match = _HEADER_END.search(raw)
    end = match.end() if match else len(raw)
    head, count = _INTERNAL_HEADER.subn(b"", raw[:end])
    return (head + raw[end:], count) if count else (raw, 0)


def tag_subject(raw: bytes, tag: str) -> bytes:
    """Put ``tag`` in front of the Subject (the one rewrite mailflow does, on request)."""
    match = _HEADER_END.search(raw)
    end = match.end() if match else len(raw)
    subject = _SUBJECT.search(raw, 0, end)
    if subject is None:
        return f"Subject: {tag}\r\n".encode("ascii", "replace") + raw
    cut = subject.end()
    return raw[:cut] + tag.encode("ascii", "replace") + b" " + raw[cut:]


def enhanced_status(text: str, default: str) -> str:
    """The enhanced status code at the start of a reply text, if any."""
    head = text.split(" ", 1)[0]
    return head if _ENHANCED_STATUS.fullmatch(head) else default


def is_routing_header(name: str) -> bool:
    """Our own headers, which stay inside the company (the loop marker may leave)."""
    lower = name.lower()
    return lower.startswith("x-mailflow-") and lower != LOOP_HEADER.lower()


def relayed_groups(ctx: MessageContext, hostname: str, inside: Callable[[str], bool],
                   ) -> list[tuple[list[str], bytes]]:
    """One (recipients, bytes) per copy the next hop gets: recipients ``inside`` the
    company get our routing headers, the others the same bytes without them (and
    without those a trusted client wrote)."""
    outs = [r for r in ctx.recipients if not inside(r)]
    if not outs:
        return [(ctx.recipients, relayed_bytes(ctx, hostname))]
    raw, removed = strip_internal_headers(ctx.message.raw)
    public = [(n, v) for n, v in ctx.added_headers if not is_routing_header(n)]
    if not removed and len(public) == len(ctx.added_headers):
        return [(ctx.recipients, relayed_bytes(ctx, hostname))]
    ins = [r for r in ctx.recipients if inside(r)]
    groups = [(ins, relayed_bytes(ctx, hostname))] if ins else []
    groups.append((outs, relayed_bytes(ctx, hostname, public, raw)))
    return groups


def passed_groups(raw: bytes, recipients: list[str], inside: Callable[[str], bool],
                  ) -> list[tuple[list[str], bytes]]:
    """Mail that is not the service's, as received; the copy for recipients outside
    the company without the ``X-Mailflow-*`` headers a trusted client may have written."""
    outs = [r for r in recipients if not inside(r)]
    public, removed = strip_internal_headers(raw) if outs else (raw, 0)
    if not removed:
        return [(recipients, raw)]
    ins = [r for r in recipients if inside(r)]
    return [*([(ins, raw)] if ins else []), (outs, public)]


def relayed_bytes(ctx: MessageContext, hostname: str,
                  headers: list[tuple[str, str]] | None = None, raw: bytes | None = None,
                  ) -> bytes:
    """Our headers (``headers``, else all those the chain added) prepended to the
    original bytes (or ``raw``): nothing else is re-serialised."""
    envelope = ctx.message.envelope
    rcpt = envelope.rcpt_to[0] if len(envelope.rcpt_to) == 1 else ""
    received = (f"from {envelope.helo or 'unknown'} ([{envelope.peer}]) by {hostname} "
                f"(mailflow) with {'UTF8SMTP' if rcpt and not rcpt.isascii() else 'ESMTP'}"
                f" id {ctx.queue_id}{f' for <{rcpt}>' if rcpt else ''}; "
                f"{format_datetime(datetime.now(UTC).astimezone())}")
    lines = [f"Received: {safe_header_value(received, 'Received')}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in
                 (ctx.added_headers if headers is None else headers))
    raw = ctx.message.raw if raw is None else raw
    if ctx.subject_tag and ctx.subject_tag not in ctx.message.subject:
        raw = tag_subject(raw, ctx.subject_tag)
    return "".join(lines).encode("utf-8", "replace") + raw


def bounce(ctx: MessageContext, refused: dict[str, tuple[int, str]], hostname: str) -> bytes:
    """A plain delivery-failure notice to the sender, never answered by robots."""
    lines = "\n".join(f"  {r}: {code} {text}" for r, (code, text) in refused.items())
    letter = Letter(f"MAILER-DAEMON@{hostname}", [ctx.message.envelope.mail_from],
                    f"Undelivered: {ctx.message.subject}"[:200],
                    f"Your message could not be delivered to these recipients:\n{lines}\n",
                    sender_name="Mail Delivery System", **answering(ctx.message))
    return MailWriter(hostname).write(letter, kind="bounce", now=ctx.clock.now(),
                                      id_prefix=f"{ctx.queue_id}.bounce").mail.data
