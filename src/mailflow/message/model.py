"""The parsed message and its envelope: what stages read instead of re-parsing."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import getaddresses

from mailflow.message.headers import unfolded_text


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

    def addresses(self, name: str) -> list[str]:
        """Lowercased addr-specs from every ``name`` header (To, Cc, From, Reply-To...).

        Parsed from the undecoded value: a decoded display name may contain
        commas or quotes that would split one address into two.
        """
        key = name.lower()
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
        return out
