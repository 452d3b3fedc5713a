"""The parsed message and its envelope: what stages read instead of re-parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import getaddresses, parseaddr
from functools import cached_property

from mailflow.message.customer_text import CustomerText, split_customer_text
from mailflow.message.headers import decode_phrase, message_ids, unfolded_text


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope: what the client said, which may differ from the headers."""

    mail_from: str  # '' = null sender
    rcpt_to: tuple[str, ...]
    mail_options: tuple[str, ...] = ()
    peer: str = ""  # client IP
    helo: str = ""


@dataclass(frozen=True)
class Header:
    """One header field, decoded for reading but with its original bytes kept for relaying.

    ``value`` is single-line: RFC 2047 words decoded, folding removed, raw 8-bit
    bytes decoded as UTF-8 (else windows-1252), and any CR or LF (which an
    encoded word can smuggle in) replaced by a space, so a value can be copied
    into a new header safely.
    """

    name: str  # as written
    value: str  # decoded, single-line
    raw: bytes  # the original header bytes incl. folding, without final CRLF


@dataclass
class Message:
    """A received message, parsed once; stages read it instead of re-parsing."""

    envelope: Envelope
    raw: bytes  # original bytes, exactly as received
    headers: list[Header]
    text: str  # text of text/plain and text/html (reduced) parts, joined by "\n\n"
    subject: str  # decoded Subject ('' if none)
    message_id: str  # Message-ID without <> ('' if none)
    content_type: str  # top-level, lowercased, e.g. 'multipart/report'
    defects: list[str]  # human-readable notes of what was broken
    header_bytes_len: int  # offset in raw where the body starts, len(raw) if no body
    part_types: tuple[str, ...] = ()  # content types of a top-level multipart's parts
    #: (content type, file name) of the parts not read as text: attachments, an attached
    #: message, a report's machine-readable part (at most mime.MAX_ATTACHMENTS)
    attachments: tuple[tuple[str, str], ...] = ()
    #: addresses() by lower-cased field name: From is read by three stages
    _addresses: dict[str, tuple[str, ...]] = field(default_factory=dict, init=False, repr=False,
                                                   compare=False)

    @cached_property
    def customer_text(self) -> CustomerText:
        """The customer's own words in ``text`` (no quoted history, attribution, forwarded
        block, signature or disclaimer) and what was cut: computed once, on first use."""
        return split_customer_text(self.text)

    def get(self, name: str, default: str = "") -> str:
        """Decoded value of the first header called ``name`` (case-insensitive)."""
        key = name.lower()
        for h in self.headers:
            if h.name.lower() == key:
                return h.value
        return default

    def get_all(self, name: str) -> list[str]:
        """Decoded values of every header called ``name``, in message order."""
        key = name.lower()
        return [h.value for h in self.headers if h.name.lower() == key]

    def count(self, name: str) -> int:
        """How many headers are called ``name`` (e.g. ``Received``, for loop detection)."""
        key = name.lower()
        return sum(1 for h in self.headers if h.name.lower() == key)

    def message_ids(self, name: str) -> list[str]:
        """Message-IDs (without brackets) of every ``name`` field (References, In-Reply-To),
        exactly as written: from the original bytes, for decoding RFC 2047 would change an
        id that only looks like an encoded word, and then it would match nothing."""
        key = name.lower()
        return [msgid for h in self.headers if h.name.lower() == key
                for msgid in message_ids(unfolded_text(h.raw) if b":" in h.raw else h.value)]

    def display_name(self, name: str) -> str | None:
        """The decoded display name of the first ``name`` field (From, Reply-To): "" if
        there is none, None if it cannot be decoded cleanly (see :func:`decode_phrase`).

        Cut from the undecoded value, then decoded: a decoded name may hold commas,
        quotes or brackets that would split or end the address, and so may a broken
        encoded word (``=?utf-8?q?Dupont,_Jean?=``), which parseaddr would split."""
        key = name.lower()
        for h in self.headers:
            if h.name.lower() == key:
                source = unfolded_text(h.raw) if b":" in h.raw else h.value
                decoded = decode_phrase(_phrase(source))
                return None if decoded is None else decoded.strip()
        return ""

    def addresses(self, name: str) -> list[str]:
        """Lowercased addr-specs from every ``name`` header (To, Cc, From, Reply-To...).

        Parsed from the undecoded value: a decoded display name may contain
        commas or quotes that would split one address into two.
        """
        key = name.lower()
        found = self._addresses.get(key)
        if found is None:
            out: list[str] = []
            for h in self.headers:
                if h.name.lower() != key:
                    continue
                source = unfolded_text(h.raw) if b":" in h.raw else h.value
                try:
                    pairs = getaddresses([source])
                except Exception:  # a hostile header must not break a stage
                    continue
                out.extend(addr.strip().lower() for _, addr in pairs if addr.strip())
            found = self._addresses[key] = tuple(out)
        return list(found)


_QUOTED_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_QUOTED_PAIR = re.compile(r"\\(.)")


def _phrase(value: str) -> str:
    """The display name of ``name <address>`` as written (quotes removed), in linear time."""
    value = value.strip()
    start = value.rfind("<")
    if value.endswith(">") and start >= 0 and ">" not in value[start:-1]:
        phrase = value[:start].strip()
        if "<" not in phrase and ">" not in phrase:
            return _QUOTED_STRING.sub(lambda m: _QUOTED_PAIR.sub(r"\1", m.group(1)), phrase)
    try:
        return parseaddr(value)[0].strip()  # "address (Name)", or something stranger
    except Exception:  # a hostile header must not break a stage
        return ""
