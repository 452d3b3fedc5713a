"""Tests for the message model: hostile input and fuzzing (../shared/corpus: test_message_corpus).

`parse_message` is the one place mailflow parses mail, and it must never raise,
so most tests here feed it broken bytes and check it degrades gracefully.
"""

from __future__ import annotations

import base64
import functools
import random
import time
from email.parser import BytesParser
from email.policy import compat32
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailflow.message import Envelope, Header, Message, parse_message
from mailflow.message import mime as mime_walk

ENV = Envelope(mail_from="client@example.net", rcpt_to=("sav@example.com",))

# No example database: the tests must not write into the repository.
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check_invariants(msg: Message, raw: bytes) -> None:
    """What every parse must satisfy, whatever the input."""
    assert isinstance(msg, Message)
    assert msg.raw == raw
    assert 0 <= msg.header_bytes_len <= len(raw)
    pos = 0
    for h in msg.headers:
        assert isinstance(h, Header)
        assert "\r" not in h.value and "\n" not in h.value
        assert h.name and ":" not in h.name
        found = raw.find(h.raw, pos)  # the original bytes, in order
        assert found >= 0
        pos = found + len(h.raw)
        assert pos <= msg.header_bytes_len
    assert "\r" not in msg.text
    assert msg.content_type == msg.content_type.lower() and msg.content_type.count("/") == 1
    assert all(isinstance(d, str) and d for d in msg.defects)
    assert "\r" not in msg.subject and "\n" not in msg.subject
    assert "<" not in msg.message_id or ">" not in msg.message_id
    msg.get("From")
    msg.get_all("Received")
    msg.count("Received")
    for name in ("From", "To", "Cc", "Reply-To"):
        assert all(a == a.lower() and a for a in msg.addresses(name))


def mime(headers: str, body: bytes | str) -> bytes:
    """A message from CRLF-joined headers and a body."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    return headers.strip().replace("\n", "\r\n").encode("utf-8") + b"\r\n\r\n" + body


# --------------------------------------------------------------------------- header API


def test_get_get_all_count_and_missing() -> None:
    raw = mime(
        "Received: from a by b\nreceived: from c by d\nRECEIVED: from e\n"
        "To: A <A@Example.COM>, b@example.org\nCc: =?utf-8?q?Dupont=2C_Jean?= <Jean@x.fr>",
        "hi",
    )
    msg = parse_message(raw, ENV)
    assert msg.count("Received") == 3
    assert msg.get_all("received") == ["from a by b", "from c by d", "from e"]
    assert msg.get("Received") == "from a by b"
    assert msg.get("X-Missing") == "" and msg.get("X-Missing", "dflt") == "dflt"
    assert msg.subject == "" and msg.message_id == ""
    assert msg.addresses("to") == ["a@example.com", "b@example.org"]
    # The decoded display name has a comma; addresses are parsed before decoding.
    assert msg.get("Cc") == "Dupont, Jean <Jean@x.fr>"
    assert msg.addresses("Cc") == ["jean@x.fr"]
    assert msg.addresses("Bcc") == []


def test_message_id_angles_and_header_raw() -> None:
    raw = mime("Message-ID:\n  <abc.123@host.example>  \nSubject: a\n\tb", "x")
    msg = parse_message(raw, ENV)
    assert msg.message_id == "abc.123@host.example"
    assert msg.subject == "a\tb"
    assert msg.headers[1].raw == b"Subject: a\r\n\tb"
    assert msg.headers[0].name == "Message-ID"


def test_encoded_crlf_in_subject_is_neutralised() -> None:
    evil_b64 = base64.b64encode(b"\r\nBcc: victim@example.org").decode()
    raw = mime(
        "Subject: =?utf-8?q?Hello=0D=0ABcc:_evil@example.org?=\n"
        f"X-Other: =?utf-8?b?{evil_b64}?=\nX-Lf: =?iso-8859-1?q?a=0Ab=0Dc?=",
        "x",
    )
    msg = parse_message(raw, ENV)
    assert msg.subject == "Hello Bcc: evil@example.org"
    assert msg.get("X-Other") == "Bcc: victim@example.org"
    assert msg.get("X-Lf") == "a b c"
    for h in msg.headers:
        assert "\r" not in h.value and "\n" not in h.value


def test_encoded_word_edge_cases() -> None:
    raw = mime(
        "Subject: =?utf-8?b?a?= ok\nX-A: =?UTF-8*fr?Q?caf=C3=A9?= =?utf-8?q?_cr=C3=A8me?=\n"
        "X-B: =?x-unknown?q?d=E9j=E0?=\nX-C: =?utf-8?Q?Comment =C3=A7a va??=\n"
        "X-D: =?base64?b?eJzLSM3JyQcABiwCFQ==?=",
        "x",
    )
    msg = parse_message(raw, ENV)
    assert msg.subject.endswith("ok")  # bad base64 word: left as is, noted
    assert msg.get("X-A") == "café crème"  # RFC 2231 language; space inside the 2nd word
    assert msg.get("X-B") == "déjà"  # unknown charset: windows-1252 fallback
    assert msg.get("X-C") == "Comment ça va?"
    assert "hello" not in msg.get("X-D")  # zlib-compressed "hello": never decompressed
    joined = "\n".join(msg.defects)
    assert "'x-unknown'" in joined and "'base64'" in joined and "Subject" in joined


# --------------------------------------------------------------------------- body decoding


@pytest.mark.parametrize(
    ("charset", "body", "expected"),
    [
        ("x-unknown", "Caf\xe9".encode("cp1252"), "Café"),
        ("x-unknown", "Café".encode(), "Café"),
        ("unicode-1-1-utf-7", "Caf+AOk-".encode("ascii"), "Café"),
        ("utf-8", "Café €".encode("cp1252"), "Café €"),  # mislabelled: cp1252
        ("iso-8859-1", b"Prix 10\x80", "Prix 10€"),  # latin-1 labels read as cp1252
        ("us-ascii", "Café".encode(), "Café"),
        ("zlib", b"plain text", "plain text"),  # a bytes transform is not a charset
        ("koi8-r", "Привет".encode("koi8-r"), "Привет"),
        ('"UTF-8"', "Noël".encode(), "Noël"),
    ],
)
def test_body_charsets(charset: str, body: bytes, expected: str) -> None:
    raw = mime(f"Content-Type: text/plain; charset={charset}", body)
    assert parse_message(raw, ENV).text == expected


def test_hostile_charset_parameters() -> None:
    raw = mime(
        "Content-Type: multipart/mixed; boundary=a",
        b"--a\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
        b'--b\r\nContent-Type: text/plain; charset="\x00x"\r\n\r\nCaf\xe9\r\n--b--\r\n'
        b"--a\r\nContent-Type: text/plain; charset*=a%00b''x\r\n\r\nNo\xebl\r\n--a--\r\n",
    )
    msg = parse_message(raw, ENV)
    assert msg.text == "Café\n\nNoël"
    assert any("unusable charset" in d for d in msg.defects)


def test_undeclared_8bit_body_utf8_then_cp1252() -> None:
    assert parse_message(mime("Subject: x", "Noël"), ENV).text == "Noël"
    msg = parse_message(mime("Subject: x", "Noël “ok”".encode("cp1252")), ENV)
    assert msg.text == "Noël “ok”"
    assert any("windows-1252" in d for d in msg.defects)


def test_bad_base64_and_bad_qp_are_defects() -> None:
    raw = mime(
        "Content-Type: multipart/mixed; boundary=b",
        "--b\r\nContent-Transfer-Encoding: base64\r\n\r\nQm9u!!am91cg\r\n"
        "--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nCaf=E9 =G1 fin\r\n--b--\r\n",
    )
    msg = parse_message(raw, ENV)
    assert "Bonjour" in msg.text and "Café =G1 fin" in msg.text
    joined = "\n".join(msg.defects)
    assert "base64" in joined and "quoted-printable" in joined


def test_alternative_prefers_plain_then_html() -> None:
    def alternative(plain: str) -> bytes:
        return mime(
            'Content-Type: multipart/alternative; boundary="a"',
            f"--a\r\nContent-Type: text/plain\r\n\r\n{plain}\r\n"
            "--a\r\nContent-Type: text/html\r\n\r\n<p>HTML &amp; version</p>\r\n--a--\r\n",
        )

    assert parse_message(alternative("plain version"), ENV).text == "plain version"
    assert parse_message(alternative("  "), ENV).text == "HTML & version"


def test_mixed_parts_joined_and_attachments_skipped() -> None:
    raw = mime(
        "Content-Type: multipart/mixed; boundary=m",
        "preamble\r\n--m\r\nContent-Type: text/plain\r\n\r\nfirst\r\n"
        "--m\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt"
        "\r\n\r\nsecret attachment\r\n"
        "--m\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        "iVBORw0KGgo=\r\n"
        "--m\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nforwarded\r\n"
        "--m\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<div>second</div>\r\n--m--\r\n"
        "epilogue\r\n",
    )
    msg = parse_message(raw, ENV)
    assert msg.text == "first\n\nsecond"


def test_html_reduction() -> None:
    markup = (
        "<html><head><title>T</title><style>p {color: red}</style></head><body>"
        "<script>var a = '<p>no</p>';</script><h1>Titre</h1><p>Un&nbsp;d&eacute;g&#226;t"
        "<br>ligne&#x20;2</p><ul><li>un</li><li>deux</li></ul>"
        "<table><tr><td>a</td><td>b</td></tr></table><!-- hidden --><p a='x>y'>fin</p>"
    )
    msg = parse_message(mime("Content-Type: text/html; charset=utf-8", markup), ENV)
    assert msg.text == "Titre\n\nUn dégât\nligne 2\n\nun\n\ndeux\n\na b\n\nfin"
    for visible in ("Titre", "Un dégât\nligne 2", "un", "deux", "a b", "fin"):
        assert visible in msg.text
    for hidden in ("color", "var a", "no", "hidden", "T\n", "<", "&"):
        assert hidden not in msg.text


@pytest.mark.parametrize(
    "markup",
    [
        "<a " * 30000,
        "<a b='" * 20000,
        "<a b='x>" * 20000,
        '<p a="' + "x>" * 50000,
        "<!--" * 25000,
        "</" * 50000,
        "<?" * 50000,
        "<![if x]>" * 10,
        "<script>" * 20000,
    ],
)
def test_pathological_html_is_fast(markup: str) -> None:
    start = time.perf_counter()
    parse_message(mime("Content-Type: text/html", markup), ENV)
    assert time.perf_counter() - start < 3.0


# --------------------------------------------------------------------------- hostile framing


def test_nul_bytes() -> None:
    raw = b"Subject: a\x00b\r\nFrom: x\x00@y\r\n\r\nhello\x00world\r\n"
    msg = parse_message(raw, ENV)
    check_invariants(msg, raw)
    assert msg.subject == "a\x00b"
    assert msg.text == "hello\x00world"


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_line_endings(eol: bytes) -> None:
    lines = [
        b"From: Claire <claire@example.fr>",
        b"Subject: =?utf-8?q?r=C3=A9clamation?=",
        b" urgente",
        b"Content-Type: text/plain; charset=utf-8",
        b"",
        b"Ligne 1",
        b"Ligne 2",
    ]
    raw = eol.join(lines)
    msg = parse_message(raw, ENV)
    check_invariants(msg, raw)
    assert msg.subject == "réclamation urgente"
    assert msg.text == "Ligne 1\nLigne 2"
    assert msg.header_bytes_len == raw.index(b"Ligne 1")
    assert msg.headers[1].raw == b"Subject: =?utf-8?q?r=C3=A9clamation?=" + eol + b" urgente"


def test_one_megabyte_header_line() -> None:
    raw = b"Subject: " + b"a" * 1_000_000 + b"\r\nTo: x@y\r\n\r\nbody"
    start = time.perf_counter()
    msg = parse_message(raw, ENV)
    assert time.perf_counter() - start < 2.0
    check_invariants(msg, raw)
    assert len(msg.subject) == 1_000_000
    assert msg.text == "body" and msg.addresses("To") == ["x@y"]
    many_words = b"Subject: " + b"=?utf-8?q?x?= " * 70_000 + b"\r\n\r\nbody"
    msg = parse_message(many_words, ENV)
    assert msg.subject.startswith("x" * 1000) and msg.defects


def test_no_blank_line_and_no_body() -> None:
    only_headers = b"Subject: x\r\nTo: y@z"
    msg = parse_message(only_headers, ENV)
    assert msg.header_bytes_len == len(only_headers) and msg.text == ""
    glued = b"Subject: x\r\nHello there\r\n"
    msg = parse_message(glued, ENV)
    assert msg.header_bytes_len == glued.index(b"Hello")
    assert msg.text == "Hello there" and msg.defects
    for raw in (b"", b"\r\n", b"\r\n\r\n", b":", b" leading continuation\r\n\r\nx"):
        check_invariants(parse_message(raw, ENV), raw)


def nested(depth: int, *, leaf: str = "deep text") -> bytes:
    """``depth`` multiparts inside each other, a shallow text part first."""
    out = b'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n'
    out += b"--b0\r\nContent-Type: text/plain\r\n\r\nshallow text\r\n"
    for i in range(1, depth):
        out += b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i - 1, i)
    out += b"--b%d\r\nContent-Type: text/plain\r\n\r\n%s\r\n" % (depth - 1, leaf.encode())
    for i in range(depth - 1, -1, -1):
        out += b"--b%d--\r\n" % i
    return out


def test_nesting_within_limit() -> None:
    msg = parse_message(nested(10), ENV)
    assert msg.text == "shallow text\n\ndeep text"
    assert msg.defects == []


def test_fifty_level_nesting_is_cut_with_a_defect() -> None:
    raw = nested(50)
    msg = parse_message(raw, ENV)
    check_invariants(msg, raw)
    assert msg.text == "shallow text"
    assert any("nesting deeper than 20" in d for d in msg.defects)


def test_absurd_nesting_is_bounded() -> None:
    raw = nested(400, leaf="x\r\n" * 50_000)
    start = time.perf_counter()
    msg = parse_message(raw, ENV)
    assert time.perf_counter() - start < 3.0
    assert msg.text == "shallow text"
    nested_messages = b"Content-Type: message/rfc822\r\n\r\n" * 3000 + b"Subject: x\r\n\r\nhi"
    check_invariants(parse_message(nested_messages, ENV), nested_messages)


def test_part_limit() -> None:
    parts = "".join(f"--z\r\nContent-Type: text/plain\r\n\r\npart{i}\r\n" for i in range(300))
    msg = parse_message(mime("Content-Type: multipart/mixed; boundary=z", parts + "--z--"), ENV)
    assert "part0" in msg.text and "part198" in msg.text and "part199" not in msg.text
    assert any("more than 200 MIME parts" in d for d in msg.defects)
    few = parse_message(mime("Content-Type: multipart/mixed; boundary=z", parts), ENV, max_parts=3)
    assert few.text == "part0\n\npart1"


def test_defects_are_bounded() -> None:
    headers = "".join(f"X-{i}: =?bogus-{i}?q?x?=\r\n" for i in range(500))
    msg = parse_message(headers.encode() + b"\r\nbody", ENV)
    assert len(msg.defects) == 101 and msg.defects[-1] == "further defects omitted"


def test_plain_message_is_fast() -> None:
    body = (b"Bonjour, ceci est une ligne de texte ordinaire pour le test. " * 2 + b"\r\n") * 80
    raw = mime("From: a@b.fr\nTo: c@d.fr\nSubject: =?utf-8?q?Caf=C3=A9?=", body)
    assert 9_000 < len(raw) < 11_000
    parse_message(raw, ENV)
    start = time.perf_counter()
    for _ in range(100):
        parse_message(raw, ENV)
    assert (time.perf_counter() - start) / 100 < 0.005  # ~0.15 ms on a laptop


# --------------------------------------------------------------------------- fuzzing


@FUZZ
@given(st.binary(max_size=4000))
def test_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    check_invariants(parse_message(raw, ENV), raw)


MIME_TOKENS = [
    b"\r\n", b"\n", b"\r", b" ", b"\t", b"--b", b"--b--", b"--c", b"Subject: ", b"From: ",
    b"Content-Type: multipart/mixed; boundary=b", b"Content-Type: multipart/alternative;",
    b' boundary="c"', b"Content-Type: text/html; charset=x-unknown",
    b"Content-Type: text/plain; charset*=utf-8''%E9", b"Content-Type: message/rfc822",
    b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: quoted-printable",
    b"Content-Transfer-Encoding: x-uuencode", b"Content-Disposition: attachment",
    b"=?utf-8?b?", b"=?iso-8859-1?q?", b"?=", b"=E9", b"=\r\n", b"=ZZ", b"<p>", b"</p>",
    b"<script>", b"<!--", b"&eacute;", b"&#", b"\xe9", b"\xc3\xa9", b"\x00", b"QUJD", b"==",
    b"begin 644 x\r\n", b":", b"<a@b>",
]  # fmt: skip


@FUZZ
@given(st.lists(st.sampled_from(MIME_TOKENS), max_size=120))
def test_never_raises_on_mime_like_bytes(tokens: list[bytes]) -> None:
    raw = b"".join(tokens)
    check_invariants(parse_message(raw, ENV), raw)


def parsed_both_ways(raw: bytes) -> tuple[Message, Message]:
    """``raw`` parsed as shipped, and with the stdlib parser reading every body (the
    one-payload shortcut of mime.parse_tree off)."""
    def full(fields: list[bytes], body: bytes, depth: int) -> Any:
        head = b"\r\n".join(fields) + b"\r\n\r\n" if fields else b"\r\n"
        parser = BytesParser(functools.partial(mime_walk._Part, limit=depth), policy=compat32)
        return parser.parsebytes(head + body)

    shipped = parse_message(raw, ENV)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mime_walk, "parse_tree", full)
        return shipped, parse_message(raw, ENV)


@FUZZ
@given(st.lists(st.sampled_from(MIME_TOKENS), max_size=120))
def test_a_single_payload_parses_as_the_stdlib_parses_it(tokens: list[bytes]) -> None:
    shipped, full = parsed_both_ways(b"".join(tokens))
    assert shipped == full


def mutate(raw: bytes, seed: int, count: int) -> bytes:
    """Apply ``count`` random byte-level edits to ``raw``."""
    rng = random.Random(seed)
    data = bytearray(raw)
    for _ in range(count):
        pos = rng.randrange(len(data) + 1)
        op = rng.randrange(5)
        if op == 0:  # insert random bytes
            data[pos:pos] = rng.randbytes(rng.randrange(1, 8))
        elif op == 1:  # delete a run
            del data[pos : pos + rng.randrange(1, 64)]
        elif op == 2:  # duplicate a run
            data[pos:pos] = data[pos : pos + rng.randrange(1, 200)]
        elif op == 3:  # insert a structural token
            data[pos:pos] = rng.choice(MIME_TOKENS)
        else:  # truncate
            del data[pos:]
    return bytes(data)
