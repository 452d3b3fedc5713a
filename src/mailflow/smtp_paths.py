"""Envelope addresses exactly as the client wrote them: RFC 5321 paths, not headers.

aiosmtpd reads the address of MAIL FROM and RCPT TO with the email package's
header parser, which is made for RFC 5322 fields: it decodes RFC 2047 words
(``<=?UTF-16?B?//492Enc?=@example.org>`` became ``👉@example.org``, even
inside quotes), drops quotes it finds needless (``"john"@x`` became
``john@x``) and takes comments and spaces. An envelope address is none of
that: the next hop, the store and the acknowledgement must get the address
the client gave, byte for byte. :func:`parse_path` takes it by RFC 5321's
grammar (with RFC 6531's UTF-8); ``MailflowSMTP`` reads addresses with it.

Kept from aiosmtpd, for the clients that rely on them: an address without
angle brackets, a path without a domain (``<postmaster>``), dots anywhere
in a local part (``taro..@docomo.ne.jp``), and the null path ``<>`` spelt
``"<>"``. A source route (``<@a.test,@b.test:joe@c.test>``) is dropped, as
RFC 5321 lets a server do. Characters the relay cannot send as they are
(control characters, bytes that are not UTF-8) are let through here for the
SMTP handler to refuse with its own reply (501, the sender or recipient
named), rather than a bare "malformed address".
"""

from __future__ import annotations

import re

# RFC 5321 atext, RFC 6531's UTF-8, and the control characters the handler refuses itself
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\x00-\x1f\x7f]|[^\x00-\x7f]"
_QUOTED = r'"(?:[\x00-\x1f\x20\x21\x23-\x5b\x5d-\x7f]|\\[\x20-\x7e]|[^\x00-\x7f])*"'
_LABEL = r"(?:[A-Za-z0-9_\-\x00-\x1f\x7f]|[^\x00-\x7f])+"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_LITERAL = r"\[[\x21-\x5a\x5e-\x7e]+\]"  # [192.0.2.1], [IPv6:::1]: dtext, no [ ] or \
_MAILBOX = re.compile(rf"(?P<local>(?:{_ATEXT}|\.)+|{_QUOTED})(?:@(?:{_DOMAIN}|{_LITERAL}))?")
_ROUTE = re.compile(rf"@(?:{_DOMAIN}|{_LITERAL})(?:,@(?:{_DOMAIN}|{_LITERAL}))*:")


def _path_end(arg: str) -> int:
    """Index of the ``>`` that closes the path opening ``arg``, -1 if none; a ``>``
    in a quoted local part does not close it."""
    quoted = escaped = False
    for i, char in enumerate(arg[1:], 1):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return i
    return -1


def parse_path(arg: str, local_part_limit: int = 0) -> tuple[str | None, str | None]:
    """(address, parameters) from what follows ``MAIL FROM:`` or ``RCPT TO:``; the
    address exactly as written, ``"<>"`` for the null path, (None, None) if malformed."""
    arg = arg.strip()
    if not arg:
        return "", ""
    if arg.startswith("<"):
        end = _path_end(arg)
        if end < 0:
            return None, None
        path, rest = arg[1:end], arg[end + 1 :]
        if not path:
            return "<>", rest.strip()
        route = _ROUTE.match(path)
        if route:
            path = path[route.end() :]
    else:
        path, _, rest = arg.partition(" ")
    mailbox = _MAILBOX.fullmatch(path)
    if mailbox is None:
        return None, None
    if local_part_limit and len(mailbox.group("local")) > local_part_limit:
        return None, None
    return path, rest.strip()
