"""Bytes on the wire: line endings, forged headers, the relayed copy."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailflow.context import MessageContext
from mailflow.message import Envelope, parse_message
from mailflow.wire import (
    has_bare_newlines,
    normalize_newlines,
    relayed_bytes,
    strip_internal_headers,
)

BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
FUZZ = settings(max_examples=300, deadline=None, database=None)
newline_soup = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"a", b" ", b"\x00"]),
                        max_size=40).map(b"".join)


# -- line endings ---------------------------------------------------------------


@pytest.mark.parametrize(("raw", "clean"), [
    (b"a\r\nb\r\n", b"a\r\nb\r\n"),
    (b"a\nb\n", b"a\r\nb\r\n"),
    (b"a\rb\r", b"a\r\nb\r\n"),
    (b"a\r\r\nb", b"a\r\n\r\nb"),
    (b"a\n\rb", b"a\r\n\r\nb"),
    (b"body\n.\r\nMAIL FROM:<x@y>\r\n", b"body\r\n.\r\nMAIL FROM:<x@y>\r\n"),
    (b"body\r.\r\n", b"body\r\n.\r\n"),
    (b"body\n.\n", b"body\r\n.\r\n"),
    (b"", b""),
])
def test_normalize_newlines(raw: bytes, clean: bytes) -> None:
    assert normalize_newlines(raw) == clean
    assert has_bare_newlines(raw) is (raw != clean)
    assert not has_bare_newlines(clean)


def test_clean_input_is_returned_as_is() -> None:
    raw = b"Subject: x\r\n\r\n" + b"line\r\n" * 1000
    assert normalize_newlines(raw) is raw


@FUZZ
@given(newline_soup)
def test_normalized_bytes_have_no_bare_cr_or_lf(raw: bytes) -> None:
    out = normalize_newlines(raw)
    assert BARE.search(out) is None
    assert not has_bare_newlines(out)
    assert has_bare_newlines(raw) is (BARE.search(raw) is not None)
    assert normalize_newlines(out) == out  # idempotent
    # only line endings change: the text between them is kept, in order
    assert re.split(rb"\r\n|\r|\n", raw) == out.split(b"\r\n")


@FUZZ
@given(st.binary(max_size=200))
def test_normalize_any_bytes(raw: bytes) -> None:
    out = normalize_newlines(raw)
    assert BARE.search(out) is None
    assert out.replace(b"\r", b"").replace(b"\n", b"") == (
        raw.replace(b"\r", b"").replace(b"\n", b""))


# -- forged internal headers ---------------------------------------------------------


def test_internal_headers_removed_from_the_header_block_only() -> None:
    raw = (b"X-Mailflow-Case: FORGED-1\r\n"
           b"From: a@client.test\r\n"
           b"x-mailflow-priority: urgent\r\n"
           b"X-MAILFLOW-ROUTE: vip\r\n\tfolded on\r\n  two lines\r\n"
           b"Subject: hello\r\n"
           b"X-Mailflow-Loop: mx.example.com\r\n"
           b"X-Mailflow-Assignee:boss@example.com\r\n"
           b"\r\n"
           b"X-Mailflow-Case: quoted in the body stays\r\n")
    out, count = strip_internal_headers(raw)
    assert count == 4
    assert out == (b"From: a@client.test\r\n"
                   b"Subject: hello\r\n"
                   b"X-Mailflow-Loop: mx.example.com\r\n"
                   b"\r\n"
                   b"X-Mailflow-Case: quoted in the body stays\r\n")


def test_nothing_to_strip_returns_the_same_bytes() -> None:
    raw = b"From: a@client.test\r\nX-Mailflowery: not ours\r\nSubject: x\r\n\r\nbody\r\n"
    out, count = strip_internal_headers(raw)
    assert (out, count) == (raw, 0)
    assert out is raw


def test_message_without_body() -> None:
    raw = b"Subject: x\r\nX-Mailflow-Case: F-1\r\n"
    assert strip_internal_headers(raw) == (b"Subject: x\r\n", 1)


def test_header_lookalikes_are_kept() -> None:
    raw = (b"Subject: about X-Mailflow-Case: 1\r\n"
           b"Comments: see\r\n X-Mailflow-Case: this is a folded continuation\r\n\r\n")
    assert strip_internal_headers(raw) == (raw, 0)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["X-Mailflow-Case", "x-mailflow-route", "Subject",
                                           "From", "X-Mailflow-Loop", "X-Other"]),
                          st.text(alphabet="abc 123:", max_size=10)), max_size=8),
       st.binary(max_size=50))
def test_no_internal_header_survives(fields: list[tuple[str, str]], body: bytes) -> None:
    def internal(name: str) -> bool:
        return name.lower().startswith("x-mailflow-") and name != "X-Mailflow-Loop"

    raw = b"".join(f"{n}: {v}\r\n".encode() for n, v in fields) + b"\r\n" + body
    expected = b"".join(f"{n}: {v}\r\n".encode() for n, v in fields if not internal(n))
    out, count = strip_internal_headers(raw)
    assert out == expected + b"\r\n" + body
    assert count == sum(1 for n, _ in fields if internal(n))


@pytest.mark.parametrize("raw", [b"x-mailflow-:", b"X-Mailflow-Case: X\r\n folded",
                                 b"Subject: a\r\nX-Mailflow-Route: sav"])
def test_an_internal_header_on_the_last_line_without_its_crlf_goes_too(raw: bytes) -> None:
    out, count = strip_internal_headers(raw)
    assert count == 1 and b"mailflow" not in out.lower()
    assert strip_internal_headers(b"X-Mailflow-Loop: 1") == (b"X-Mailflow-Loop: 1", 0)


# -- assemble ----------------------------------------------------------------------


def assemble(ctx: MessageContext, hostname: str = "mx.example.com") -> bytes:
    return relayed_bytes(ctx, hostname)


def ctx_for(raw: bytes, rcpt: tuple[str, ...] = ("sav@example.com",)) -> MessageContext:
    envelope = Envelope(mail_from="a@client.test", rcpt_to=rcpt, peer="192.0.2.7",
                        helo="client.test")
    return MessageContext(message=parse_message(raw, envelope), queue_id="QID1",
                          recipients=list(rcpt), store=None)


ORIGINAL = (b"From: Claire <claire@client.test>\r\nTo: sav@example.com\r\n"
            b"Subject: Bonjour\r\n\r\nLigne 1\r\n.leading dot\r\n")


def test_assemble_prepends_received_and_our_headers_to_the_original_bytes() -> None:
    ctx = ctx_for(ORIGINAL)
    ctx.set_header("X-Mailflow-Case", "SAV-1")
    ctx.set_header("X-Mailflow-Priority", "high")
    ctx.set_header("X-Mailflow-Case", "SAV-2")  # replaced, not added twice
    data = assemble(ctx)
    assert data.endswith(ORIGINAL)
    head = data[: -len(ORIGINAL)].decode()
    lines = head.split("\r\n")
    assert lines[0].startswith("Received: from client.test ([192.0.2.7]) by mx.example.com "
                               "(mailflow) with ESMTP id QID1 for <sav@example.com>; ")
    assert lines[1:] == ["X-Mailflow-Priority: high", "X-Mailflow-Case: SAV-2", ""]
    assert BARE.search(data) is None


def test_assemble_without_added_headers_and_several_recipients() -> None:
    ctx = ctx_for(ORIGINAL, rcpt=("sav@example.com", "contact@example.com"))
    data = assemble(ctx)
    head, _, rest = data.partition(b"\r\n")
    assert rest == ORIGINAL
    assert head.startswith(b"Received: from client.test ([192.0.2.7]) by mx.example.com")
    assert b" for <" not in head  # no single recipient to name


def test_assemble_keeps_hostile_values_on_one_line() -> None:
    ctx = ctx_for(ORIGINAL)
    ctx.set_header("X-Mailflow-Route", "sales\r\nBcc: victim@elsewhere.test\r\n\r\nbody")
    ctx.set_header("X-Mailflow-Assignee", "Zoë Müller <zoe@example.com>")
    data = assemble(ctx)
    head = data[: -len(ORIGINAL)]
    assert BARE.search(data) is None
    names = [line.split(b":", 1)[0] for line in head.split(b"\r\n")
             if line and not line.startswith((b" ", b"\t"))]
    assert names == [b"Received", b"X-Mailflow-Route", b"X-Mailflow-Assignee"]
    assert head.isascii()  # non-ASCII is RFC 2047-encoded
    assert b"=?utf-8?" in head


def test_assemble_folds_a_received_for_a_long_address() -> None:
    rcpt = "a" * 60 + "@" + "b" * 60 + ".example.com"
    data = assemble(ctx_for(ORIGINAL, rcpt=(rcpt,)))
    head = data[: -len(ORIGINAL)]
    assert BARE.search(data) is None
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    assert head.startswith(b"Received: ")


def test_assemble_subject_tag_added_once() -> None:
    ctx = ctx_for(ORIGINAL)
    ctx.subject_tag = "[SAV-7]"
    data = assemble(ctx)
    assert b"\r\nSubject: [SAV-7] Bonjour\r\n" in data
    assert data.count(b"[SAV-7]") == 1
    # a reply whose Subject already carries the tag is left alone
    tagged = ORIGINAL.replace(b"Subject: Bonjour", b"Subject: Re: [SAV-7] Bonjour")
    ctx = ctx_for(tagged)
    ctx.subject_tag = "[SAV-7]"
    assert assemble(ctx).endswith(tagged)
