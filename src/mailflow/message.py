"""The message model: every message is parsed once, here, into a `Message`.

Stages read (and annotate) this model and never re-parse, so all tolerance for
broken mail lives in one place: `parse_message` never raises. What it cannot
decode it decodes best-effort and notes in `Message.defects`, because a
customer's mail must still be relayed and handled when its MIME is broken.

The stdlib `email` package (policy compat32, the lenient one) does the MIME
work. Headers are split here, on the raw bytes, so that each `Header` keeps its
exact original bytes and the header block is scanned only once.
"""

from __future__ import annotations

import codecs
import functools
import html
import re
from dataclasses import dataclass
from email.header import decode_header
from email.message import Message as _MimePart
from email.parser import BytesParser
from email.policy import Policy, compat32
from email.utils import getaddresses
from html.parser import HTMLParser
from typing import Any

__all__ = ["Envelope", "Header", "Message", "parse_message"]


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
            source = _unfolded_text(h.raw) if b":" in h.raw else h.value
            try:
                pairs = getaddresses([source])
            except Exception:  # a hostile header must not break a stage
                continue
            out.extend(addr.strip().lower() for _, addr in pairs if addr.strip())
        return out


def parse_message(
    raw: bytes, envelope: Envelope, *, max_parts: int = 200, max_depth: int = 20
) -> Message:
    """Parse ``raw`` into a `Message`; never raises, whatever the bytes.

    ``max_parts`` and ``max_depth`` bound the MIME work (a hostile message can
    nest thousands of parts); what lies beyond is ignored and noted as a defect.
    """
    if not isinstance(raw, bytes):
        raw = bytes(raw)
    try:
        return _parse(raw, envelope, max_parts, max_depth)
    except Exception as exc:  # last resort: the message must still flow
        text, _ = _decode_8bit(raw)
        return Message(
            envelope=envelope,
            raw=raw,
            headers=[],
            text=_normalise_newlines(text),
            subject="",
            message_id="",
            content_type="text/plain",
            defects=[f"message could not be parsed ({type(exc).__name__}); text is the raw bytes"],
            header_bytes_len=0,
        )


# --------------------------------------------------------------------------- internals

_MAX_DEFECTS = 100
_MAX_DEFECT_LEN = 200
_MAX_CHARSET_LEN = 40
_MAX_WORDS = 1000  # encoded words decoded per header; real ones have a few dozen


_EOL = re.compile(rb"\r\n?|\n")
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
# An RFC 2047 encoded word. Every run stops at the next '?', so scanning is
# linear even on a megabyte of '=?'; trailing '?'s before '?=' (an unencoded
# question mark, a common sender bug) are kept as text.
_ENCODED_WORD = re.compile(rb"=\?[^?\s]+\?[qQbB]\?[^?]*\?*\?=")
_BAD_QP = re.compile(r"=(?![0-9A-Fa-f]{2}|[ \t]*(?:\r\n|\r|\n|$))")
_ANGLE = re.compile(r"<([^<>]*)>")
_WS = re.compile(r"\s+")
_TAG = re.compile(r"<[^>]*>")
# html.parser rescans an unterminated tag, comment or quote to the end of the
# input at every '<' (quadratic: 90 KB of "<a " took a minute), so markup is
# first reduced in one linear pass to bare tags: attributes dropped, comments,
# doctypes and processing instructions removed, any other '<' escaped. No run
# crosses a '<' (quoted values included), which is what keeps it linear.
_MARKUP = re.compile(
    r"""<!--.*?(?:-->|\Z)"""
    r"""|<(/?)([a-zA-Z][^\s/<>]*)(?:[^<>"']|"[^"<]*"|'[^'<]*')*>"""
    r"""|<[!?][^<>]*>|<""",
    re.S,
)

_KNOWN_CTES = frozenset(
    {"", "7bit", "8bit", "binary", "quoted-printable", "base64"}
    | {"x-uuencode", "uuencode", "uue", "x-uue"}  # what the stdlib decodes
)

_DEFECT_TEXT = {
    "NoBoundaryInMultipartDefect": "multipart without a boundary parameter",
    "StartBoundaryNotFoundDefect": "multipart boundary never found",
    "CloseBoundaryNotFoundDefect": "unterminated multipart (closing boundary missing)",
    "FirstHeaderLineIsContinuationDefect": "first header line is a continuation line",
    "MisplacedEnvelopeHeaderDefect": "misplaced mbox 'From ' line",
    "MissingHeaderBodySeparatorDefect": "no blank line between headers and body",
    "MultipartInvariantViolationDefect": "multipart type but not a multipart body",
    "InvalidMultipartContentTransferEncodingDefect": "multipart with an invalid transfer encoding",
    "InvalidBase64PaddingDefect": "bad base64 padding",
    "InvalidBase64CharactersDefect": "invalid characters in base64",
    "InvalidBase64LengthDefect": "bad base64 length",
    "UndecodableBytesDefect": "undecodable bytes",
}


def _note(defects: list[str], text: str) -> None:
    """Record a defect, bounded in number and length (the input is hostile)."""
    if len(text) > _MAX_DEFECT_LEN:
        text = text[: _MAX_DEFECT_LEN - 3] + "..."
    if text in defects:
        return
    if len(defects) < _MAX_DEFECTS:
        defects.append(text)
    elif len(defects) == _MAX_DEFECTS:
        defects.append("further defects omitted")


def _short(s: str) -> str:
    """repr() of an attacker-chosen string, cut to a readable length."""
    return repr(s if len(s) <= 40 else s[:40] + "...")


def _parse(raw: bytes, envelope: Envelope, max_parts: int, max_depth: int) -> Message:
    defects: list[str] = []
    spans, body_start = _split_headers(raw, defects)
    headers: list[Header] = []
    mime_fields: list[bytes] = []
    for start, name_end, colon, end in spans:
        name = raw[start:name_end].decode("ascii")
        field = raw[start:end]
        headers.append(Header(name, _decode_value(raw[colon + 1 : end], name, defects), field))
        lname = name.lower()
        if lname.startswith("content-") or lname == "mime-version":
            mime_fields.append(field)

    subject = ""
    message_id = ""
    for h in headers:
        lname = h.name.lower()
        if lname == "subject" and not subject:
            subject = h.value
        elif lname == "message-id" and not message_id:
            message_id = _strip_angles(_unfolded_text(h.raw))

    text, content_type = _body_text(
        mime_fields, raw[body_start:], defects, max(max_parts, 1), max(max_depth, 0)
    )
    return Message(
        envelope=envelope,
        raw=raw,
        headers=headers,
        text=text,
        subject=subject,
        message_id=message_id,
        content_type=content_type,
        defects=defects,
        header_bytes_len=body_start,
    )


def _split_headers(raw: bytes, defects: list[str]) -> tuple[list[tuple[int, int, int, int]], int]:
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
                _note(defects, "headers: first header line is a continuation line, ignored")
        elif f := _FIELD_NAME.match(raw, pos, eol):
            if cur is not None:
                spans.append(cur)
            cur = (pos, f.end(1), f.end() - 1, eol)
        elif pos == 0 and raw.startswith(b"From ", pos):
            _note(defects, "headers: mbox 'From ' line before the headers, ignored")
        else:
            _note(defects, "headers: no blank line between headers and body")
            body = pos
            break
        pos = nxt
    if cur is not None:
        spans.append(cur)
    return spans, body


def _unfold(value: bytes) -> bytes:
    """Remove the line breaks of folding (the whitespace after them stays)."""
    if b"\n" in value or b"\r" in value:
        value = _EOL.sub(b"", value)
    return value.strip(b" \t")


def _unfolded_text(field: bytes) -> str:
    """A field's value unfolded, 8-bit decoded, RFC 2047 left alone (for addresses and ids)."""
    text, _ = _decode_8bit(_unfold(field.partition(b":")[2]))
    return text.replace("\r", " ").replace("\n", " ")


def _strip_angles(value: str) -> str:
    m = _ANGLE.search(value)
    return (m.group(1) if m else value).strip()


def _decode_value(value: bytes, name: str, defects: list[str]) -> str:
    """Decode a header value: unfold, RFC 2047 words, raw 8-bit; always a single line."""
    value = _unfold(value)
    if b"=?" not in value:
        text, fell_back = _decode_8bit(value)
        if fell_back:
            _note(defects, f"header {name}: undeclared 8-bit bytes decoded as windows-1252")
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
            _note(defects, f"header {name}: more than {_MAX_WORDS} encoded words, rest left as is")
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
    text, fell_back = _decode_8bit(data)
    if fell_back:
        _note(defects, f"header {name}: undeclared 8-bit bytes decoded as windows-1252")
    return text


def _decode_word(word: bytes, name: str, defects: list[str]) -> str:
    as_text = word.decode("latin-1")
    try:
        chunks = decode_header(as_text)
    except Exception:
        _note(defects, f"header {name}: undecodable encoded word {_short(as_text)}")
        return as_text
    pieces: list[str] = []
    for chunk, charset in chunks:
        data = chunk.encode("latin-1", "replace") if isinstance(chunk, str) else chunk
        pieces.append(_decode_charset(data, charset, f"header {name}", defects))
    return "".join(pieces)


def _decode_8bit(data: bytes) -> tuple[str, bool]:
    """Text with no usable charset: UTF-8 if valid, else windows-1252; True if it fell back."""
    if data.isascii():
        return data.decode("ascii"), False
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace"), True


@functools.lru_cache(maxsize=256)
def _codec(charset: str) -> str | None:
    """Python's codec name for a declared charset, or None if unknown or not a text codec."""
    name = charset.strip().strip("\"'").partition("*")[0].lower()  # RFC 2231 "utf-8*fr"
    if not name:
        return None
    try:
        info = codecs.lookup(name)
    except Exception:  # LookupError, or ValueError for a NUL in the name
        return None
    # base64, zlib, rot13... are bytes transforms, not charsets (and zlib is a bomb).
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def _decode_charset(data: bytes, charset: str | None, where: str, defects: list[str]) -> str:
    """Decode with the declared charset if Python knows it, else UTF-8, else windows-1252."""
    if not charset:
        text, fell_back = _decode_8bit(data)
        if fell_back:
            _note(defects, f"{where}: undeclared 8-bit text decoded as windows-1252")
        return text
    codec = _codec(charset) if len(charset) <= _MAX_CHARSET_LEN else None
    if codec is None:
        text, _ = _decode_8bit(data)
        _note(defects, f"{where}: unknown charset {_short(charset)}")
        return text
    if codec == "ascii":
        text, fell_back = _decode_8bit(data)
        if not data.isascii():
            used = "windows-1252" if fell_back else "UTF-8"
            _note(defects, f"{where}: 8-bit bytes in us-ascii text decoded as {used}")
        return text
    if codec == "iso8859-1":
        # What senders label latin-1 is in practice windows-1252 (as browsers assume).
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            return data.decode("latin-1")
    try:
        return data.decode(codec)
    except Exception:  # UnicodeDecodeError, or UnicodeError from codecs like 'undefined'
        pass
    _note(defects, f"{where}: text is not valid {_short(charset)}")
    if codec != "utf-8":
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        try:
            return data.decode(codec, "replace")
        except Exception:
            pass
    return data.decode("cp1252", "replace")


def _normalise_newlines(text: str) -> str:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _describe(defect: object) -> str:
    name = type(defect).__name__
    return _DEFECT_TEXT.get(name, name)


def _body_text(
    mime_fields: list[bytes], body: bytes, defects: list[str], max_parts: int, max_depth: int
) -> tuple[str, str]:
    """The text of the body, and the top-level content type.

    Only the MIME header fields go to the stdlib parser with the body: the
    other headers are already split, and need not be parsed twice.
    """
    head = b"\r\n".join(mime_fields) + b"\r\n\r\n" if mime_fields else b"\r\n"
    parser = BytesParser(functools.partial(_Part, limit=max_depth), policy=compat32)
    try:
        root = parser.parsebytes(head + body)
        content_type = root.get_content_type()
    except Exception as exc:  # e.g. RecursionError on absurd nesting
        _note(defects, f"message: MIME not parsable ({type(exc).__name__}), raw body used")
        text, _ = _decode_8bit(body)
        return _normalise_newlines(text).strip(), _content_type_of(mime_fields)
    texts = _walk(root, defects, max_parts, max_depth)
    return "\n\n".join(texts), content_type


class _Part(_MimePart):
    """A MIME part that knows its depth, so the stdlib parser stops nesting past the limit.

    The parser checks every line against every enclosing boundary: 400 nested
    multiparts over 900 KB cost 11 s before `_walk` could refuse them. Past
    the limit a part claims a non-composite type, so its content stays flat.
    """

    def __init__(self, policy: Policy[Any] = compat32, limit: int = 20) -> None:
        super().__init__(policy)
        self.depth = 0
        self.limit = limit

    def attach(self, payload: _MimePart | str) -> None:
        if isinstance(payload, _Part):  # the parser attaches a part as it creates it
            payload.depth = self.depth + 1
            payload.limit = self.limit
        super().attach(payload)

    def get_content_maintype(self) -> str:
        if self.depth > self.limit:  # never read by _walk: deeper than it goes
            return "application"
        return super().get_content_maintype()


def _content_type_of(mime_fields: list[bytes]) -> str:
    for field in mime_fields:
        name, _, value = field.partition(b":")
        if name.strip().lower() == b"content-type":
            ctype = _unfold(value).partition(b";")[0].strip().lower().decode("latin-1")
            return ctype if ctype.count("/") == 1 else "text/plain"
    return "text/plain"


def _walk(root: _MimePart, defects: list[str], max_parts: int, max_depth: int) -> list[str]:
    """Collect the text of the parts, depth first, within the part and depth budgets.

    Iterative, so nesting can never exhaust the Python stack.
    """
    texts: list[str] = []
    stack: list[tuple[_MimePart, int, str]] = [(root, 0, "")]
    seen = 0
    too_deep = False
    while stack:
        part, depth, path = stack.pop()
        seen += 1
        if seen > max_parts:
            _note(defects, f"message: more than {max_parts} MIME parts, the rest ignored")
            break
        where = f"part {path}" if path else "message"
        try:
            if not part.is_multipart():
                text = _leaf_text(part, where, defects)
                if text:
                    texts.append(text)
            elif part.get_content_maintype() == "message":  # an attached message is not text
                pass
            elif depth >= max_depth:
                if not too_deep:
                    too_deep = True
                    _note(defects, f"{where}: MIME nesting deeper than {max_depth}, ignored")
            else:
                children = [c for c in part.get_payload() if isinstance(c, _MimePart)]
                numbered = list(enumerate(children, 1))
                if part.get_content_type() == "multipart/alternative":
                    numbered = _choose_alternative(numbered)
                prefix = f"{path}." if path else ""
                for i, child in reversed(numbered):
                    stack.append((child, depth + 1, f"{prefix}{i}"))
        except Exception as exc:  # one bad part must not cost the others their text
            _note(defects, f"{where}: not decodable ({type(exc).__name__})")
        for d in part.defects:
            _note(defects, f"{where}: {_describe(d)}")
    return texts


def _choose_alternative(children: list[tuple[int, _MimePart]]) -> list[tuple[int, _MimePart]]:
    """The one alternative to read: the plain text if there is some, else the richest."""
    for i, child in children:
        is_plain = child.get_content_type() == "text/plain" and not _is_attachment(child)
        if is_plain and _encoded_payload(child).strip():
            return [(i, child)]
    for i, child in reversed(children):  # RFC 2046: the last is the preferred one
        if child.get_content_maintype() == "multipart" or child.get_content_type() == "text/html":
            return [(i, child)]
    return []


def _encoded_payload(part: _MimePart) -> str:
    """The payload as received, 8-bit bytes as surrogate escapes.

    `get_payload()` would first decode 8-bit text with the declared charset,
    which raises on a hostile parameter (ValueError for a NUL in it).
    """
    payload = getattr(part, "_payload", None)
    return payload if isinstance(payload, str) else ""


def _is_attachment(part: _MimePart) -> bool:
    return part.get_content_disposition() == "attachment"


def _leaf_text(part: _MimePart, where: str, defects: list[str]) -> str:
    """The text of one non-multipart part: '' for attachments and non-text types."""
    ctype = part.get_content_type()
    is_multipart_type = ctype.startswith("multipart/")  # no boundary: best-effort raw text
    if ctype not in ("text/plain", "text/html") and not is_multipart_type:
        return ""
    if _is_attachment(part):
        return ""
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    if cte == "quoted-printable":
        if _BAD_QP.search(_encoded_payload(part)):
            _note(defects, f"{where}: invalid quoted-printable")
    elif cte not in _KNOWN_CTES:
        _note(defects, f"{where}: unknown Content-Transfer-Encoding {_short(cte)}")
    # The stdlib gives back the exact bytes for 7bit/8bit, decoded ones otherwise.
    decoded = part.get_payload(decode=True)
    data = decoded if isinstance(decoded, bytes) else b""
    charset = None
    if not is_multipart_type:
        try:
            charset = part.get_content_charset()
        except Exception:  # ValueError for a NUL in an RFC 2231 charset
            _note(defects, f"{where}: unusable charset parameter")
    text = _decode_charset(data, charset, where, defects)
    if ctype == "text/html":
        text = _html_to_text(text)
    return _normalise_newlines(text).strip()


class _HTMLText(HTMLParser):
    """The visible text of an HTML part: enough for keyword rules and quoting, no layout."""

    _SKIP = frozenset({"script", "style", "head", "title", "template"})
    _BLOCK = frozenset(
        {
            "p", "br", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
            "ul", "ol", "table", "blockquote", "pre", "hr", "dt", "dd", "address",
            "section", "article", "header", "footer", "form", "fieldset", "figure",
        }
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":  # an unclosed <head> ends here
            self._skip = 0
        if tag in self._SKIP:
            self._skip += 1
        elif tag in self._BLOCK:
            self._parts.append("\n")
        elif tag in ("td", "th"):
            self._parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            if self._skip:
                self._skip -= 1
        elif tag in self._BLOCK and tag not in ("br", "hr"):
            self._parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._parts.append(_WS.sub(" ", data))

    def text(self) -> str:
        return _tidy_lines("".join(self._parts))


def _tidy_lines(text: str) -> str:
    """Collapse spaces within lines and runs of blank lines to one."""
    out: list[str] = []
    blank = False
    for line in text.split("\n"):
        line = " ".join(line.split())
        if not line:
            blank = True
            continue
        if blank and out:
            out.append("")
        out.append(line)
        blank = False
    return "\n".join(out)


def _defang(m: re.Match[str]) -> str:
    if m.group(2) is not None:
        return f"<{m.group(1)}{m.group(2)}>"
    return "&lt;" if m.group() == "<" else ""


def _html_to_text(markup: str) -> str:
    parser = _HTMLText()
    try:
        parser.feed(_MARKUP.sub(_defang, markup))
        parser.close()
        return parser.text()
    except Exception:  # html.parser can still assert on odd declarations
        return _tidy_lines(html.unescape(_TAG.sub(" ", markup)))
