"""Defect notes: what was broken in a message, bounded because the input is hostile."""

from __future__ import annotations

_MAX_DEFECTS = 100
_MAX_DEFECT_LEN = 200

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


def note(defects: list[str], text: str) -> None:
    """Record a defect, bounded in number and length (the input is hostile)."""
    if len(text) > _MAX_DEFECT_LEN:
        text = text[: _MAX_DEFECT_LEN - 3] + "..."
    if text in defects:
        return
    if len(defects) < _MAX_DEFECTS:
        defects.append(text)
    elif len(defects) == _MAX_DEFECTS:
        defects.append("further defects omitted")


def short_repr(s: str) -> str:
    """repr() of an attacker-chosen string, cut to a readable length."""
    return repr(s if len(s) <= 40 else s[:40] + "...")


def describe(defect: object) -> str:
    name = type(defect).__name__
    return _DEFECT_TEXT.get(name, name)
