"""Postfix's XFORWARD: who the original client was, told by the MTA in front.

Behind Postfix every connection comes from 127.0.0.1; with
``smtp_send_xforward_command = yes`` Postfix sends, before each MAIL FROM,
``XFORWARD NAME=… ADDR=… PORT=… PROTO=… HELO=… IDENT=… SOURCE=…``
(values in xtext, ``[UNAVAILABLE]`` when unknown). mailflow takes it from
trusted networks only; the forwarded address then decides header stripping
and direction, and is the one logged. Values are checked strictly: a hostile
one is refused with a 501, never logged verbatim.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
EHLO_KEYWORD = "XFORWARD " + " ".join(ATTRIBUTES)
MAX_VALUE = 255  # Postfix's own limit is lower for most attributes
UNAVAILABLE = ("[UNAVAILABLE]", "[TEMPUNAVAIL]")

SYNTAX_REPLY = "501 5.5.4 Syntax: XFORWARD attribute=value..."
NOT_TRUSTED_REPLY = "550 5.7.0 Error: insufficient authorization"
IN_TRANSACTION_REPLY = "503 5.5.1 Error: MAIL transaction in progress"

_XTEXT = re.compile(r"\+([0-9A-F]{2})")
_NAME = re.compile(r"[A-Za-z]{1,16}")
_PRINTABLE = re.compile(r"[\x21-\x7e]*")


class XforwardError(ValueError):
    """A refused XFORWARD command; ``str()`` is the SMTP reply."""


@dataclass(frozen=True)
class Forwarded:
    """What the MTA in front said of its client (None: not told, or unavailable)."""

    name: str | None = None
    addr: str | None = None
    port: int | None = None
    proto: str | None = None
    helo: str | None = None
    ident: str | None = None
    source: str | None = None


def _decode(value: str) -> str:
    """xtext (RFC 3461): ``+XX`` is the byte XX; everything else printable ASCII."""
    if not _PRINTABLE.fullmatch(value):
        raise XforwardError("501 5.5.4 Bad XFORWARD attribute value")
    decoded = _XTEXT.sub(lambda m: chr(int(m.group(1), 16)), value)
    if len(decoded) > MAX_VALUE or not _PRINTABLE.fullmatch(decoded.replace(" ", "")):
        raise XforwardError("501 5.5.4 Bad XFORWARD attribute value")
    return decoded


def _address(value: str) -> str:
    candidate = value[5:] if value.upper().startswith("IPV6:") else value
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        raise XforwardError("501 5.5.4 Bad XFORWARD ADDR value") from None


def parse(arg: str, previous: Forwarded | None = None) -> Forwarded:
    """The attributes of one XFORWARD command, added to those sent before it."""
    items = arg.split()
    if not items:
        raise XforwardError(SYNTAX_REPLY)
    values = dict(vars(previous or Forwarded()))
    for item in items:
        name, eq, raw = item.partition("=")
        if not eq or not _NAME.fullmatch(name):
            raise XforwardError(SYNTAX_REPLY)
        if name.upper() not in ATTRIBUTES:
            raise XforwardError(f"501 5.5.4 Bad XFORWARD attribute name: {name[:16]}")
        value = _decode(raw)
        key = name.lower()
        if value.upper() in UNAVAILABLE:
            values[key] = None
        elif key == "addr":
            values[key] = _address(value)
        elif key == "port":
            if not value.isdigit() or int(value) > 65535:
                raise XforwardError("501 5.5.4 Bad XFORWARD PORT value")
            values[key] = int(value)
        else:
            values[key] = value
    return Forwarded(**values)
