"""Header fields of the mail mailflow writes, written so the customer's client can thread it.

The email package folds a field it cannot break by RFC 2047-encoding it: an
Outlook Message-ID (80-100 characters) in ``In-Reply-To`` came out as
``=?utf-8?q?=3CSL2P…?=``, and so did any non-ASCII id in an ASCII message. It
also parses ``To`` as a header, decoding a local part that merely looks like
an encoded word. Neither then matches what the customer's client knows. The
fields named in :data:`RAW_FIELDS` are therefore written exactly as built
here: never encoded, folded only at the spaces between identifiers (or
words), each line within RFC 5322's 998 octets.

A non-ASCII identifier or address can only be written in a UTF-8 header (RFC
6532): build the message with ``policy(utf8=True)``; such mail travels with
SMTPUTF8 (:func:`utf8_headers` tells the sender).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from email.header import Header
from email.headerregistry import BaseHeader, HeaderRegistry, UniqueUnstructuredHeader
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8, EmailPolicy, Policy
from email.utils import quote
from typing import Any

MAX_LINE = 998  # octets in a line, CRLF excluded (RFC 5322 2.1.1)
#: References kept when answering a long thread: the first and the last nine (RFC 5322
#: 3.6.4 lets a writer trim; RFC 5537 keeps the first and the last ones too)
MAX_REFERENCES = 10
MAX_REFERENCES_OCTETS = 4000  # and at most this much of them, however long each id is
RAW_FIELDS = ("Message-ID", "In-Reply-To", "References", "To")
#: the loop marker on all mail mailflow writes: a message carrying it is never answered
LOOP_HEADER = "X-Mailflow-Loop"

#: what may stand between the brackets of an id we write (no space: folding splits there)
_WRITABLE_ID = re.compile(r"[^\s<>\x00-\x1f\x7f]+")
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')
_LONGEST_LABEL = "In-Reply-To: "


def writable_id(msgid: str) -> bool:
    """True if ``msgid`` can be written as ``<msgid>`` on one line, exactly."""
    if not _WRITABLE_ID.fullmatch(msgid):
        return False
    try:
        size = len(f"{_LONGEST_LABEL}<{msgid}>".encode())
    except UnicodeEncodeError:  # a lone surrogate: bytes that were never UTF-8
        return False
    return size <= MAX_LINE


def references(parent_id: str, parent_references: Sequence[str],
               parent_in_reply_to: Sequence[str] = ()) -> list[str]:
    """The References of a reply to the message ``parent_id`` (RFC 5322 3.6.4): its
    References (else its In-Reply-To, if that names one message) then its own id,
    each once, trimmed to the first and the last ones when long."""
    chain = list(parent_references) or (
        list(parent_in_reply_to) if len(parent_in_reply_to) == 1 else [])
    parent = parent_id if writable_id(parent_id) else ""
    ids = [i for i in dict.fromkeys(chain) if i != parent and writable_id(i)]
    ids += [parent] if parent else []
    if len(ids) > MAX_REFERENCES:
        ids = [ids[0], *ids[-(MAX_REFERENCES - 1):]]
    while len(ids) > 2 and sum(len(i.encode()) + 3 for i in ids) > MAX_REFERENCES_OCTETS:
        del ids[1]
    return ids


def thread_fields(parent_id: str, parent_references: Sequence[str],
                  parent_in_reply_to: Sequence[str] = ()) -> list[tuple[str, str]]:
    """``In-Reply-To`` and ``References`` of a reply to ``parent_id``, as (name, value)."""
    fields = [("In-Reply-To", f"<{parent_id}>")] if writable_id(parent_id) else []
    refs = references(parent_id, parent_references, parent_in_reply_to)
    if refs:
        fields.append(("References", " ".join(f"<{r}>" for r in refs)))
    return fields


def address_field(name: str, address: str, *, utf8: bool) -> str:
    """``"name" <address>``, the address exactly as given (never parsed, so never
    decoded); a non-ASCII name RFC 2047-encoded unless the header may be UTF-8."""
    name = " ".join(name.split())
    if not name:
        return address
    if name.isascii() or utf8:
        phrase = f'"{quote(name)}"' if _SPECIALS.search(name) else name
    else:
        encoded = Header(name, "utf-8", header_name="To").encode(linesep="\n")
        phrase = " ".join(part.strip() for part in encoded.split("\n"))
    return f"{phrase} <{address}>"


def fold(name: str, value: str, width: int | None, linesep: str = "\r\n") -> str:
    """``name: value`` broken into lines at its spaces only: a word (an identifier)
    is never cut or encoded, and the first one stays on the name's line."""
    width = min(width or MAX_LINE, MAX_LINE)
    lines: list[str] = []
    for word in filter(None, value.split(" ")):
        if not lines:
            lines.append(f"{name}: {word}")
        elif len(lines[-1].encode()) + 1 + len(word.encode()) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(f" {word}")
    return linesep.join(lines or [f"{name}:"]) + linesep


class RawHeader(BaseHeader):
    """A field the email package writes as it was set, through :func:`fold` alone."""

    max_count = 1

    @classmethod
    def parse(cls, value: str, kwds: dict[str, Any]) -> None:
        kwds["parse_tree"] = None
        kwds["decoded"] = value

    def fold(self, *, policy: Policy) -> str:
        return fold(self.name, str(self), policy.max_line_length, policy.linesep)


class PlainSubject(UniqueUnstructuredHeader, BaseHeader):  # type: ignore[misc]
    """A subject of printable ASCII words that each fit on a line, written as the email
    package writes it but without parsing it into a tree and folding the tree (with the
    MIME fields written raw: an acknowledgement took 190 µs to write, 73 µs now); any
    other goes the email package's way (encoded words, long words)."""

    @classmethod
    def parse(cls, value: str, kwds: dict[str, Any]) -> None:
        if _PLAIN_SUBJECT.fullmatch(value) and "=?" not in value:
            kwds["parse_tree"] = None
            kwds["decoded"] = value
        else:
            super().parse(value, kwds)

    def fold(self, *, policy: Policy) -> str:
        if self._parse_tree is not None:  # type: ignore[attr-defined]
            return super().fold(policy=policy)
        width, value = policy.max_line_length or MAX_LINE, str(self)
        if len(self.name) + 2 + len(value) > width >= len(value) + 1:
            # a value that fits on a line of its own goes there whole, as the email
            # package writes it
            return f"{self.name}:{policy.linesep} {value}{policy.linesep}"
        return fold(self.name, value, width, policy.linesep)


#: printable ASCII words of at most 69 characters ("Subject: " and one fit in 78)
_PLAIN_SUBJECT = re.compile(r"[\x21-\x7e]{1,69}(?: [\x21-\x7e]{1,69})*")


class _Registry(HeaderRegistry):
    """The email package's registry, each field's class made once: its own makes a new
    class for every field of every message (a third of the cost of writing one)."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def map_to_type(self, name: str, cls: type[BaseHeader]) -> None:
        super().map_to_type(name, cls)
        self._classes.clear()

    def __getitem__(self, name: str) -> type[BaseHeader]:
        made = self._classes.get(name.lower())
        if made is None:
            made = self._classes[name.lower()] = super().__getitem__(name)
        return made


def _registry(raw: Sequence[str] = RAW_FIELDS, *, writer: bool = False) -> HeaderRegistry:
    registry = _Registry()
    for name in raw:
        registry.map_to_type(name, RawHeader)
    if writer:
        registry.map_to_type("Subject", PlainSubject)
    return registry


_ASCII_POLICY = SMTP.clone(header_factory=_registry())
_UTF8_POLICY = SMTPUTF8.clone(header_factory=_registry())
#: the fields mailflow fills with values it made itself, ASCII and on one line (a
#: formatted address, a date, a keyword, a MIME type and its parameters): written as
#: they are, with no parse
OWN_FIELDS = ("From", "Date", "Auto-Submitted", "X-Auto-Response-Suppress", "Precedence",
              LOOP_HEADER, "MIME-Version", "Content-Type", "Content-Transfer-Encoding")
_WRITER_ASCII_POLICY = SMTP.clone(
    header_factory=_registry((*RAW_FIELDS, *OWN_FIELDS), writer=True))
_WRITER_UTF8_POLICY = SMTPUTF8.clone(
    header_factory=_registry((*RAW_FIELDS, *OWN_FIELDS), writer=True))


def policy(*, utf8: bool) -> EmailPolicy[EmailMessage]:
    """SMTP's policy (or SMTPUTF8's), with :data:`RAW_FIELDS` written raw."""
    return _UTF8_POLICY if utf8 else _ASCII_POLICY


def writer_policy(*, utf8: bool) -> EmailPolicy[EmailMessage]:
    """:func:`policy` for the mail mailflow writes: :data:`OWN_FIELDS` raw too, and a
    plain subject (:class:`PlainSubject`)."""
    return _WRITER_UTF8_POLICY if utf8 else _WRITER_ASCII_POLICY


def utf8_headers(data: bytes) -> bool:
    """True if the header block of ``data`` holds non-ASCII: it needs SMTPUTF8."""
    return not data.partition(b"\r\n\r\n")[0].isascii()
