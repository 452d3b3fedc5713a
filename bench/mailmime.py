"""MIME for the benchmark's generated mail, written by hand as wire bytes (CRLF).

Python's email generator would do, but it re-encodes the whole body at each try;
here a body grows paragraph by paragraph and each paragraph's encoded size is known
at once, so a message reaches its target size without being rendered again and
again (50,000 messages are generated in seconds). The result is checked by the
unit test with Python's email parser.
"""

from __future__ import annotations

import base64
import binascii
import html
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from email.header import Header
from email.utils import formataddr

CRLF = b"\r\n"
WIDTH = 76
HTML_FROM = 4096  # smaller targets get text/plain alone: an HTML twin would pass them


def wrap(text: str, width: int = WIDTH) -> list[str]:
    """Greedy wrap on spaces, each given line apart (a signature keeps its lines)."""
    out: list[str] = []
    for line in text.split("\n"):
        current = ""
        for word in line.split(" "):
            if current and len(current) + 1 + len(word) > width:
                out.append(current)
                current = word
            else:
                current = f"{current} {word}" if current else word
        out.append(current)
    return out


def header(name: str, value: str) -> str:
    """``Name: value``, RFC 2047-encoded and folded when the value is not ASCII."""
    if value.isascii():
        return f"{name}: {value}"
    return f"{name}: " + Header(value, "utf-8", header_name=name).encode(linesep="\r\n")


def address(name: str, addr: str) -> str:
    return formataddr((name, addr), "utf-8")


def qp(text: str) -> bytes:
    return binascii.b2a_qp(text.encode(), istext=True).replace(b"\n", CRLF)


@dataclass(frozen=True)
class Para:
    """One paragraph, encoded once: its text/plain bytes and its HTML twin's."""

    plain: bytes
    html: bytes

    @property
    def cost(self) -> int:
        return len(self.plain) + 4 + (len(self.html) + 2 if self.html else 0)


@dataclass
class Text:
    """A text body (and, with ``html``, its text/html twin) that grows by paragraphs
    between its opening and its signature: each paragraph's cost is known once
    encoded (see ``fill``)."""

    cte: str = "quoted-printable"  # or 8bit (text/plain alone: the HTML twin is always QP)
    html: bool = False
    lead: list[Para] = field(default_factory=list)
    pad: list[Para] = field(default_factory=list)
    tail: list[Para] = field(default_factory=list)
    after: list[Para] = field(default_factory=list)  # below the signature: quoted mail

    @property
    def paras(self) -> list[Para]:
        return [*self.lead, *self.pad, *self.tail, *self.after]

    def para(self, text: str, quoted: bool = False) -> Para:
        lines = wrap(text, WIDTH - 2 if quoted else WIDTH)
        if quoted:
            lines = [f"> {line}".rstrip() for line in lines]
        plain = "\n".join(lines)
        data = qp(plain) if self.cte == "quoted-printable" else plain.encode().replace(b"\n", CRLF)
        if not self.html:
            return Para(data, b"")
        inner = "<br>\n".join(html.escape(line) for line in wrap(text))
        markup = (f'<blockquote type="cite">{inner}</blockquote>' if quoted
                  else f"<p>{inner}</p>")
        return Para(data, qp(markup))

    def add(self, where: list[Para], *texts: str, quoted: bool = False) -> None:
        where.extend(self.para(text, quoted) for text in texts)

    def plain_bytes(self) -> bytes:
        return b"\r\n\r\n".join(p.plain for p in self.paras) + CRLF

    def html_bytes(self) -> bytes:
        body = CRLF.join(p.html for p in self.paras)
        return (b'<html><head><meta http-equiv="Content-Type" content="text/html; '
                b'charset=UTF-8"></head><body>\r\n' + body + b"\r\n</body></html>\r\n")

    def parts(self) -> list[Part]:
        plain = Part(["Content-Type: text/plain; charset=UTF-8",
                      f"Content-Transfer-Encoding: {self.cte}"], self.plain_bytes())
        if not self.html:
            return [plain]
        return [plain, Part(["Content-Type: text/html; charset=UTF-8",
                             "Content-Transfer-Encoding: quoted-printable"], self.html_bytes())]


@dataclass
class Part:
    """A MIME part: its header lines and either bytes or sub-parts (then ``subtype``)."""

    head: list[str]
    body: bytes = b""
    children: list[Part] = field(default_factory=list)
    subtype: str = ""  # mixed, alternative, report…
    params: str = ""  # after the boundary: ``; report-type=delivery-status``

    def render(self, boundary: str) -> bytes:
        """The part's bytes; a sub-part's boundary is its parent's with its index in
        front, so no boundary line starts with another's."""
        head = list(self.head)
        if self.children:
            head.append(f'Content-Type: multipart/{self.subtype}; boundary="{boundary}"'
                        + self.params)
        out = CRLF.join(line.encode() for line in head) + CRLF + CRLF
        if not self.children:
            return out + self.body
        for index, child in enumerate(self.children):
            out += f"--{boundary}".encode() + CRLF + child.render(f"{index}{boundary}") + CRLF
        return out + f"--{boundary}--".encode() + CRLF


def text_part(text: Text) -> Part:
    """The body of a text message: text/plain alone, or multipart/alternative."""
    parts = text.parts()
    return parts[0] if len(parts) == 1 else Part([], children=parts, subtype="alternative")


def message(head: Sequence[str], body: Part, boundary: str) -> bytes:
    """The whole message: its headers, MIME-Version, then the body part."""
    top = Part([*head, "MIME-Version: 1.0", *body.head], body.body, body.children,
               body.subtype, body.params)
    return top.render(boundary)


def base64_size(raw: int) -> int:
    """Bytes of ``raw`` bytes in base64 at 76 characters a line, CRLF after each."""
    encoded = 4 * math.ceil(raw / 3)
    return encoded + 2 * math.ceil(encoded / WIDTH)


def raw_for(encoded: int) -> int:
    """The largest raw size whose base64 (see ``base64_size``) fits in ``encoded``."""
    raw = max(0, encoded * 57 // 78)
    while raw and base64_size(raw) > encoded:
        raw -= 1
    return raw


def attachment(filename: str, ctype: str, data: bytes) -> Part:
    encoded = base64.encodebytes(data).replace(b"\n", CRLF)
    return Part([f'Content-Type: {ctype}; name="{filename}"',
                 f'Content-Disposition: attachment; filename="{filename}"',
                 "Content-Transfer-Encoding: base64"], encoded)


def pdf(title: str, lines: Iterable[str], size: int) -> bytes:
    """A valid text-only PDF (Helvetica, 60 lines a page) of at most about ``size``
    bytes (one page at least): an invoice or a statement as customers attach them,
    never random bytes. ``lines``
    is cycled until the file is big enough; ASCII only (PDF strings in WinAnsi)."""
    source = [line.encode("ascii", "replace").replace(b"\\", b"").replace(b"(", b"[")
              .replace(b")", b"]") for line in lines]
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b"",
                            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    pages: list[int] = []
    total, index = 200, 0
    while True:
        rows = [b"BT /F1 14 Tf 50 800 Td (" + title.encode("ascii", "replace") + b") Tj ET"]
        for row in range(60):
            text = source[index % len(source)]
            index += 1
            rows.append(b"BT /F1 9 Tf 50 %d Td (%s) Tj ET" % (780 - 12 * row, text))
        stream = b"\n".join(rows)
        content = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)
        page = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
                b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>"
                % (len(objects) + 1))
        if pages and total + len(content) + len(page) + 80 > size:
            break
        objects += [content, page]
        pages.append(len(objects))
        total += len(content) + len(page) + 80
    kids = b" ".join(b"%d 0 R" % page for page in pages)
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(pages))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


#: where a padding paragraph goes: before the signature, or below it (quoted mail)
Padding = Iterator[tuple[str, str, bool]]  # ("pad" | "after", text, quoted)


@dataclass
class Draft:
    """A message before its size is set: headers, a text that grows, how the text (and
    an attachment, for big sizes) make the body, and where more text comes from."""

    head: list[str]
    text: Text
    padding: Padding
    mail_from: str  # the envelope, and what a label says of the message
    rcpt_to: str
    message_id: str
    subject: str
    language: str
    shape: Callable[[Text, Part | None], Part] = lambda text, extra: with_attachment(
        text_part(text), extra)
    attach: Callable[[int], Part] | None = None  # an attachment of about N raw bytes


def with_attachment(body: Part, extra: Part | None) -> Part:
    return body if extra is None else Part([], children=[body, extra], subtype="mixed")


def fill(draft: Draft, target: int, boundary: str, attach_above: int = 16384) -> bytes:
    """The draft's bytes, as near ``target`` as whole paragraphs allow (never above it
    unless the bare message already is): an attachment takes the bulk of a big size."""
    extra = None
    base = len(message(draft.head, draft.shape(draft.text, None), boundary))
    if draft.attach is not None and target - base > attach_above:
        keep = min(6000, (target - base) // 4)  # the text grows too, as people write more
        extra = draft.attach(raw_for(target - base - keep))
        base = len(message(draft.head, draft.shape(draft.text, extra), boundary))
    size, misses = base, 0
    lists = {"pad": draft.text.pad, "after": draft.text.after}
    for where, line, quoted in draft.padding:
        para = draft.text.para(line, quoted)
        if size + para.cost <= target:
            lists[where].append(para)
            size += para.cost
            misses = 0
        else:
            misses += 1
            if misses > 8:  # nothing small enough comes: as near as it gets
                break
    return message(draft.head, draft.shape(draft.text, extra), boundary)
