"""The header block, split on the raw bytes so each field keeps its original bytes."""

from __future__ import annotations

import re
from email.header import decode_header

from mailflow.message.charsets import decode_8bit, decode_charset, decode_strict
from mailflow.message.defects import note, short_repr

_MAX_WORDS = 1000  # encoded words decoded per header; real ones have a few dozen

_EOL = re.compile(rb"\r\n?|\n")
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
# An RFC 2047 encoded word. Every run stops at the next '?', so scanning is
# linear even on a megabyte of '=?'; trailing '?'s before '?=' (an unencoded
# question mark, a common sender bug) are kept as text.
_ENCODED_WORD = re.compile(rb"=\?[^?\s]+\?[qQbB]\?[^?]*\?*\?=")

_ANGLE = re.compile(r"<([^<>]*)>")
_MSGID = re.compile(r"<([^<>\s]+)>")
# The same encoded word in text already decoded from 8-bit (a display name).
_ENCODED_WORD_TEXT = re.compile(r"=\?[^?\s]+\?[qQbB]\?[^?]*\?*\?=")
# Control characters (C0 but tab, DEL, C1) have no place in a name shown to a person.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def split_headers(raw: bytes, defects: list[str]) -> tuple[list[tuple[int, int, int, int]], int]:
    """Find the header fields as (start, name_end, colon, end) offsets, and the body offset.

    Any of CRLF, LF or a bare CR ends a line. The header block ends at the
    first empty line or, as in the stdlib parser, at the first line that is
    neither a field nor a continuation (then that line starts the body).
    """
    n = len(raw)
    spans: list[tuple[int, int, int, int]] = []
    cur: tuple[int, int, int, int] | None = None
    pos = 0
    body = n
    while pos < n:
        m = _EOL.search(raw, pos)
        eol, nxt = (m.start(), m.end()) if m else (n, n)
        if eol == pos:  # the blank line
            body = nxt
            break
        first = raw[pos]
        if first in (0x20, 0x09):  # continuation of the current field
            if cur is not None:
                cur = (cur[0], cur[1], cur[2], eol)
            elif pos == 0:
                note(defects, "headers: first header line is a continuation line, ignored")
        elif f := _FIELD_NAME.match(raw, pos, eol):
            if cur is not None:
                spans.append(cur)
            cur = (pos, f.end(1), f.end() - 1, eol)
        elif pos == 0 and raw.startswith(b"From ", pos):
            note(defects, "headers: mbox 'From ' line before the headers, ignored")
        else:
            note(defects, "headers: no blank line between headers and body")
            body = pos
            break
        pos = nxt
    if cur is not None:
        spans.append(cur)
    return spans, body


def unfold(value: bytes) -> bytes:
    """Remove the line breaks of folding (the whitespace after them stays)."""
    if b"\n" in value or b"\r" in value:
        value = _EOL.sub(b"", value)
    return value.strip(b" \t")


def unfolded_text(field: bytes) -> str:
    """A field's value unfolded, 8-bit decoded, RFC 2047 left alone (for addresses and ids)."""
    text, _ = decode_8bit(unfold(field.partition(b":")[2]))
    return text.replace("\r", " ").replace("\n", " ")


def strip_angles(value: str) -> str:
    m = _ANGLE.search(value)
    return (m.group(1) if m else value).strip()


def message_ids(value: str) -> list[str]:
    """Message-IDs (without brackets) in an In-Reply-To or References value."""
    return _MSGID.findall(value)


def decode_phrase(text: str) -> str | None:
    """A display name with its RFC 2047 words decoded, or None if it cannot be decoded
    cleanly: a broken word (bad base64, an unknown charset, bytes not of the charset),
    a word left half-written, or control characters (CR, LF, NUL…), raw or encoded."""
    pieces: list[str] = []
    gaps: list[str] = []
    pos = 0
    for count, m in enumerate(_ENCODED_WORD_TEXT.finditer(text)):
        if count == _MAX_WORDS:
            return None
        gap = text[pos : m.start()]
        gaps.append(gap)
        # Whitespace between two encoded words is not part of the text (RFC 2047 6.2).
        if gap and not (pos and not gap.strip(" \t")):
            pieces.append(gap)
        try:
            chunks = decode_header(m.group())
        except Exception:  # HeaderParseError: bad base64
            return None
        for chunk, charset in chunks:
            data = chunk.encode("latin-1", "replace") if isinstance(chunk, str) else chunk
            decoded = decode_strict(data, charset) if charset else None
            if decoded is None:
                return None
            pieces.append(decoded)
        pos = m.end()
    gaps.append(text[pos:])
    pieces.append(text[pos:])
    if any("=?" in gap or "?=" in gap for gap in gaps):
        return None
    name = "".join(pieces)
    return None if _CONTROL.search(name) else name


def decode_value(value: bytes, name: str, defects: list[str]) -> str:
    """Decode a header value: unfold, RFC 2047 words, raw 8-bit; always a single line."""
    value = unfold(value)
    if b"=?" not in value:
        text, fell_back = decode_8bit(value)
        if fell_back:
            note(defects, f"header {name}: undeclared 8-bit bytes decoded as windows-1252")
    else:
        text = _decode_words(value, name, defects)
    if "\r" in text or "\n" in text:
        text = text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ").strip()
    return text


def _decode_words(value: bytes, name: str, defects: list[str]) -> str:
    """Decode RFC 2047 words one by one with `decode_header`, plain runs as raw 8-bit.

    Splitting here (instead of handing the whole value to `make_header`) lets
    an unknown charset or a bad word spoil only itself, and keeps raw 8-bit
    text exact.
    """
    pieces: list[str] = []
    pos = 0
    prev_word = False
    for count, m in enumerate(_ENCODED_WORD.finditer(value)):
        if count == _MAX_WORDS:
            note(defects, f"header {name}: more than {_MAX_WORDS} encoded words, rest left as is")
            break
        gap = value[pos : m.start()]
        # Whitespace between two encoded words is not part of the text (RFC 2047 6.2).
        if gap and not (prev_word and not gap.strip(b" \t")):
            pieces.append(_decode_plain(gap, name, defects))
        pieces.append(_decode_word(m.group(), name, defects))
        pos = m.end()
        prev_word = True
    if pos < len(value):
        pieces.append(_decode_plain(value[pos:], name, defects))
    return "".join(pieces)


def _decode_plain(data: bytes, name: str, defects: list[str]) -> str:
    text, fell_back = decode_8bit(data)
    if fell_back:
        note(defects, f"header {name}: undeclared 8-bit bytes decoded as windows-1252")
    return text


def _decode_word(word: bytes, name: str, defects: list[str]) -> str:
    as_text = word.decode("latin-1")
    try:
        chunks = decode_header(as_text)
    except Exception:
        note(defects, f"header {name}: undecodable encoded word {short_repr(as_text)}")
        return as_text
    pieces: list[str] = []
    for chunk, charset in chunks:
        data = chunk.encode("latin-1", "replace") if isinstance(chunk, str) else chunk
        pieces.append(decode_charset(data, charset, f"header {name}", defects))
    return "".join(pieces)
