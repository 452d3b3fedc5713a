"""The MIME walk: the text of a body's parts, within part and depth budgets."""

from __future__ import annotations

import functools
import re
from email.message import Message as _MimePart
from email.parser import BytesParser
from email.policy import Policy, compat32
from typing import Any

from mailflow.message.charsets import decode_8bit, decode_charset, normalise_newlines
from mailflow.message.defects import describe, note, short_repr
from mailflow.message.headers import unfold
from mailflow.message.htmltext import html_to_text

_BAD_QP = re.compile(r"=(?![0-9A-Fa-f]{2}|[ \t]*(?:\r\n|\r|\n|$))")

_KNOWN_CTES = frozenset(
    {"", "7bit", "8bit", "binary", "quoted-printable", "base64"}
    | {"x-uuencode", "uuencode", "uue", "x-uue"}  # what the stdlib decodes
)


#: the types whose body holds parts: the stdlib parser reads them line by line
_COMPOSITE = ("multipart/", "message/")
#: at most so many attachments are described: enough for a report's one or two
MAX_ATTACHMENTS = 20


def body_text(
    mime_fields: list[bytes], body: bytes, defects: list[str], max_parts: int, max_depth: int
) -> tuple[str, str, tuple[str, ...], tuple[tuple[str, str], ...]]:
    """The text of the body, the top-level content type, the content types of a
    top-level multipart's own parts (a bounce in ``multipart/mixed`` is known by them),
    and the (content type, file name) of the parts that are not read as text (a DMARC
    report is known by its zip file's name).

    Only the MIME header fields go to the stdlib parser with the body: the
    other headers are already split, and need not be parsed twice.
    """
    try:
        root = parse_tree(mime_fields, body, max_depth)
        content_type = root.get_content_type()
    except Exception as exc:  # e.g. RecursionError on absurd nesting
        note(defects, f"message: MIME not parsable ({type(exc).__name__}), raw body used")
        text, _ = decode_8bit(body)
        return normalise_newlines(text).strip(), _content_type_of(mime_fields), (), ()
    attachments: list[tuple[str, str]] = []
    texts = _walk(root, defects, max_parts, max_depth, attachments)
    parts: list[Any] = root.get_payload() if root.is_multipart() else []  # type: ignore[assignment]
    part_types = tuple(p.get_content_type() for p in parts[:max_parts]
                       if isinstance(p, _MimePart))
    return "\n\n".join(texts), content_type, part_types, tuple(attachments)


def parse_tree(mime_fields: list[bytes], body: bytes, max_depth: int) -> _MimePart:
    """The stdlib parser's tree of the body. A body that is not multipart nor a message
    is one payload: only its header fields are parsed, not its lines one by one (the
    stdlib's line reader costs a fifth of a millisecond on a 10 KB message)."""
    head = b"\r\n".join(mime_fields) + b"\r\n\r\n" if mime_fields else b"\r\n"
    parser = BytesParser(functools.partial(_Part, limit=max_depth), policy=compat32)
    if _content_type_of(mime_fields).startswith(_COMPOSITE):  # its header parsed once
        return parser.parsebytes(head + body)
    root = parser.parsebytes(head)  # the stdlib's reading decides, whatever ours said
    if root.get_content_maintype() in ("multipart", "message") or root.get_payload():
        return parser.parsebytes(head + body)
    root.set_payload(body.decode("ascii", "surrogateescape"))
    return root


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
            ctype = unfold(value).partition(b";")[0].strip().lower().decode("latin-1")
            return ctype if ctype.count("/") == 1 else "text/plain"
    return "text/plain"


def _walk(root: _MimePart, defects: list[str], max_parts: int, max_depth: int,
          attachments: list[tuple[str, str]]) -> list[str]:
    """Collect the text of the parts, depth first, within the part and depth budgets;
    the parts that give no text go to ``attachments`` (type, file name).

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
            note(defects, f"message: more than {max_parts} MIME parts, the rest ignored")
            break
        where = f"part {path}" if path else "message"
        try:
            if not part.is_multipart():
                text = _leaf_text(part, where, defects)
                if text:
                    texts.append(text)
                elif len(attachments) < MAX_ATTACHMENTS:
                    attachments.append((part.get_content_type(), _file_name(part)))
            elif part.get_content_maintype() == "message":  # an attached message is not text
                if len(attachments) < MAX_ATTACHMENTS:
                    attachments.append((part.get_content_type(), _file_name(part)))
            elif depth >= max_depth:
                if not too_deep:
                    too_deep = True
                    note(defects, f"{where}: MIME nesting deeper than {max_depth}, ignored")
            else:
                children = [c for c in part.get_payload() if isinstance(c, _MimePart)]
                numbered = list(enumerate(children, 1))
                if part.get_content_type() == "multipart/alternative":
                    numbered = _choose_alternative(numbered)
                prefix = f"{path}." if path else ""
                for i, child in reversed(numbered):
                    stack.append((child, depth + 1, f"{prefix}{i}"))
        except Exception as exc:  # one bad part must not cost the others their text
            note(defects, f"{where}: not decodable ({type(exc).__name__})")
        for d in part.defects:
            note(defects, f"{where}: {describe(d)}")
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


def _file_name(part: _MimePart) -> str:
    """The part's file name (Content-Disposition's, else Content-Type's ``name``), '' if
    none or unreadable."""
    try:
        name = part.get_filename() or part.get_param("name") or ""
    except Exception:  # a hostile RFC 2231 parameter
        return ""
    return " ".join(str(name).split())[:200] if isinstance(name, str) else ""


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
            note(defects, f"{where}: invalid quoted-printable")
    elif cte not in _KNOWN_CTES:
        note(defects, f"{where}: unknown Content-Transfer-Encoding {short_repr(cte)}")
    # The stdlib gives back the exact bytes for 7bit/8bit, decoded ones otherwise.
    decoded = part.get_payload(decode=True)
    data = decoded if isinstance(decoded, bytes) else b""
    charset = None
    if not is_multipart_type:
        try:
            charset = part.get_content_charset()
        except Exception:  # ValueError for a NUL in an RFC 2231 charset
            note(defects, f"{where}: unusable charset parameter")
    text = decode_charset(data, charset, where, defects)
    if ctype == "text/html":
        text = html_to_text(text)
    return normalise_newlines(text).strip()
