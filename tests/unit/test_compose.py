"""Threading headers and addresses of the mail mailflow writes: raw, whole, within 998."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailflow.message import compose
from mailflow.outbox import needs_smtputf8
from mailflow.store import OutboxRow

EXCHANGE = "SL2P216MB0329C3E0F0C1B5D16B0F5A1FBF8E9@SL2P216MB0329.KORP216.PROD.OUTLOOK.COM"
NON_ASCII = "a1b2c3d4e5@dömain.test"


def written(fields: list[tuple[str, str]], *, utf8: bool) -> bytes:
    """The header block the email package writes for ``fields`` with our policy."""
    msg = EmailMessage(policy=compose.policy(utf8=utf8))
    for name, value in fields:
        msg[name] = value
    msg.set_content("x")
    return msg.as_bytes().partition(b"\r\n\r\n")[0] + b"\r\n"


def lines(head: bytes) -> list[bytes]:
    return head.rstrip(b"\r\n").split(b"\r\n")


def unfolded(head: bytes, name: bytes) -> bytes:
    (line,) = [h for h in head.replace(b"\r\n ", b" ").split(b"\r\n")
               if h.startswith(name + b":")]
    return line.partition(b": ")[2]


@pytest.mark.parametrize("msgid", [EXCHANGE, NON_ASCII, "x" * 300 + "@" + "d" * 600 + ".test"])
def test_in_reply_to_is_written_raw_whatever_the_id(msgid: str) -> None:
    utf8 = not msgid.isascii()
    head = written(compose.thread_fields(msgid, []), utf8=utf8)
    assert f"In-Reply-To: <{msgid}>\r\n".encode() in head
    assert f"References: <{msgid}>\r\n".encode() in head
    assert b"=?" not in head
    assert max(len(line) for line in lines(head)) <= compose.MAX_LINE


def test_the_stock_policy_would_encode_them() -> None:
    """What this module is for: email's own folding RFC 2047-encodes a long id."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["In-Reply-To"] = f"<{EXCHANGE}>"
    assert b"In-Reply-To: =?utf-8?q?=3C" in msg.as_bytes()


def test_many_references_are_trimmed_to_the_first_and_the_last() -> None:
    refs = [f"ref{i:02d}.{EXCHANGE}" for i in range(25)]
    kept = compose.references(EXCHANGE, refs)
    assert kept == [refs[0], *refs[-(compose.MAX_REFERENCES - 2):], EXCHANGE]
    assert len(kept) == compose.MAX_REFERENCES
    head = written(compose.thread_fields(EXCHANGE, refs), utf8=False)
    assert unfolded(head, b"References") == " ".join(f"<{r}>" for r in kept).encode()
    # folded between ids only: each line holds whole ids, the first beside the name
    for line in lines(head):
        if line.startswith((b"References:", b" ")):
            assert line.endswith(b">") and line.count(b"<") == line.count(b">") >= 1, line
    # past 78 columns only when one id alone is longer
    assert all(len(line) <= 78 or line.count(b"<") == 1 for line in lines(head))
    assert b"=?" not in head


def test_references_follow_rfc_5322() -> None:
    # no References: the parent's In-Reply-To, if it names one message
    assert compose.references("p@x", [], ["gp@x"]) == ["gp@x", "p@x"]
    assert compose.references("p@x", [], ["a@x", "b@x"]) == ["p@x"]
    # each id once, the parent last
    assert compose.references("p@x", ["a@x", "p@x", "a@x", "b@x"]) == ["a@x", "b@x", "p@x"]
    # no Message-ID: the thread so far, and no In-Reply-To
    assert compose.references("", ["a@x"]) == ["a@x"]
    assert compose.thread_fields("", ["a@x"]) == [("References", "<a@x>")]
    assert compose.thread_fields("", []) == []


def test_huge_references_stay_bounded() -> None:
    refs = [f"{i}{'r' * 950}@x.test" for i in range(12)]
    kept = compose.references("p@x", refs)
    assert kept[0] == refs[0] and kept[-1] == "p@x"
    assert sum(len(r) + 3 for r in kept) <= compose.MAX_REFERENCES_OCTETS
    head = written(compose.thread_fields("p@x", refs), utf8=False)
    assert max(len(line) for line in lines(head)) <= compose.MAX_LINE


@pytest.mark.parametrize("bad", ["a b@x", "a<b@x", "a>b@x", "a\x00b@x", "a\tb@x",
                                 "x" * 990 + "@x", "", "lone\udcffsurrogate@x"])
def test_ids_that_cannot_be_written_whole_are_left_out(bad: str) -> None:
    assert not compose.writable_id(bad)
    assert compose.thread_fields(bad, ["a@x", bad]) == [("References", "<a@x>")]


def test_non_ascii_ids_need_a_utf8_header() -> None:
    fields = compose.thread_fields(NON_ASCII, [f"r-ü.{EXCHANGE}"])
    head = written(fields, utf8=True)
    assert f"In-Reply-To: <{NON_ASCII}>\r\n".encode() in head
    assert b"=?" not in head
    with pytest.raises(UnicodeEncodeError):  # never silently encoded in an ASCII message
        written(fields, utf8=False)
    assert compose.utf8_headers(head + b"\r\nbody")
    assert not compose.utf8_headers(b"Subject: x\r\n\r\nbody \xc3\xa9")


@pytest.mark.parametrize(("name", "address", "utf8", "expected"), [
    ("", "=?UTF-16?B?//492Enc?=@example.org", False, "=?UTF-16?B?//492Enc?=@example.org"),
    ("Claire Martin", '"john doe"@client.test', False, 'Claire Martin <"john doe"@client.test>'),
    ("Martin, Claire", "c@client.test", False, '"Martin, Claire" <c@client.test>'),
    ('Jean "JD"', "j@client.test", False, '"Jean \\"JD\\"" <j@client.test>'),
    ("José", "jöse@client.test", True, "José <jöse@client.test>"),
])
def test_address_field_keeps_the_address_exactly(name: str, address: str, utf8: bool,
                                                  expected: str) -> None:
    assert compose.address_field(name, address, utf8=utf8) == expected
    head = written([("To", compose.address_field(name, address, utf8=utf8))], utf8=utf8)
    assert unfolded(head, b"To") == expected.encode()


def test_a_non_ascii_name_in_an_ascii_header_is_encoded_and_reads_back() -> None:
    value = compose.address_field("José García, SA", "jose@client.test", utf8=False)
    assert value.isascii() and value.endswith(" <jose@client.test>")
    head = written([("To", value)], utf8=False)
    parsed = email.message_from_bytes(head + b"\r\n", policy=email.policy.default)
    assert parsed["To"].addresses[0].display_name == "José García, SA"


def test_fold_never_cuts_a_word() -> None:
    words = [f"<{i}.{'w' * (i * 7)}@x>" for i in range(20)]
    folded = compose.fold("References", " ".join(words), 78)
    assert folded.endswith("\r\n")
    assert folded.replace("\r\n ", " ").rstrip("\r\n") == "References: " + " ".join(words)
    assert folded.startswith(f"References: {words[0]}")


def test_outbox_asks_smtputf8_for_utf8_headers_of_mail_we_wrote() -> None:
    utf8 = f"In-Reply-To: <{NON_ASCII}>\r\n\r\nbody".encode()
    legacy = b"Subject: caf\xe9\r\n\r\nbody"

    def row(kind: str, data: bytes, rcpt: str = "c@client.test") -> OutboxRow:
        return OutboxRow(id=1, kind=kind, mail_from="", rcpt_to=(rcpt,), data=data,
                         attempts=0, message=None)

    assert needs_smtputf8(row("ack", utf8))
    assert not needs_smtputf8(row("ack", b"Subject: x\r\n\r\nbody \xc3\xa9"))
    assert not needs_smtputf8(row("relay", legacy))  # a customer's bytes, as they were
    assert needs_smtputf8(row("relay", legacy, "jöse@client.test"))


def _header_bytes(policy: email.policy.EmailPolicy, subject: str) -> bytes:
    msg = EmailMessage(policy=policy)
    msg["Subject"] = subject
    msg["Content-Type"] = 'text/plain; charset="utf-8"'
    msg["Content-Transfer-Encoding"] = "8bit"
    msg["MIME-Version"] = "1.0"
    return msg.as_bytes()


SUBJECTS = ["Re: [CTC-20261208-000123] Ma commande n'est toujours pas arrivee",
            "Bonjour", "x" * 69, "y" * 70, "word " * 40, "Réception de votre demande",
            "=?utf-8?q?caf=C3=A9?=", "a=?b", "tab\there", "Ünïcode and ASCII " * 8,
            "(comment) <angle> \"quoted\" ; , : @ [x]", "=" * 80, ""]


@pytest.mark.parametrize("subject", SUBJECTS)
@pytest.mark.parametrize("utf8", [False, True])
def test_the_writer_writes_a_subject_as_the_email_package_does(subject: str,
                                                               utf8: bool) -> None:
    """A plain subject skips the parse; what is written is the same bytes."""
    stdlib = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    assert (_header_bytes(compose.writer_policy(utf8=utf8), subject)
            == _header_bytes(stdlib, subject))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1,
                        max_size=90), min_size=1, max_size=20).map(" ".join))
def test_any_printable_ascii_subject_is_written_as_the_email_package_does(
        subject: str) -> None:
    assert (_header_bytes(compose.writer_policy(utf8=False), subject)
            == _header_bytes(email.policy.SMTP, subject))
