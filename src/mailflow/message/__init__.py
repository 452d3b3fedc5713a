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

from mailflow.message.charsets import decode_8bit, normalise_newlines
from mailflow.message.headers import decode_value, split_headers, strip_angles, unfolded_text
from mailflow.message.mime import body_text
from mailflow.message.model import Envelope, Header, Message

__all__ = ["Envelope", "Header", "Message", "parse_message"]


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
        text, _ = decode_8bit(raw)
        return Message(
            envelope=envelope,
            raw=raw,
            headers=[],
            text=normalise_newlines(text),
            subject="",
            message_id="",
            content_type="text/plain",
            defects=[f"message could not be parsed ({type(exc).__name__}); text is the raw bytes"],
            header_bytes_len=0,
        )


def _parse(raw: bytes, envelope: Envelope, max_parts: int, max_depth: int) -> Message:
    defects: list[str] = []
    spans, body_start = split_headers(raw, defects)
    headers: list[Header] = []
    mime_fields: list[bytes] = []
    for start, name_end, colon, end in spans:
        name = raw[start:name_end].decode("ascii")
        field = raw[start:end]
        headers.append(Header(name, decode_value(raw[colon + 1 : end], name, defects), field))
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
            message_id = strip_angles(unfolded_text(h.raw))

    text, content_type, part_types, attachments = body_text(
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
        part_types=part_types,
        attachments=attachments,
    )
