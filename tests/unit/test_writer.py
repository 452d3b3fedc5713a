"""The one mail writer: the two profiles, threading written raw, UTF-8 when needed."""

from __future__ import annotations

from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8, default

import pytest

from mailflow.message import Envelope, compose, parse_message
from mailflow.message.writer import (
    AUTOMATIC,
    TO_ANSWER,
    Letter,
    MailWriter,
    answering,
    set_text,
)

LONG_ID = "SL2P216MB1234567890ABCDEF1234567890ABCDEF.fr-1.prod.outlook.example@outlook.example"
WRITER = MailWriter("mx.example.com")


def customer(headers: str) -> bytes:
    return (f"From: Claire <claire@client.test>\r\nTo: sav@example.com\r\nSubject: Q\r\n"
            f"{headers}\r\nBonjour.\r\n").encode()


def test_an_automatic_answer() -> None:
    message = parse_message(customer(f"Message-ID: <{LONG_ID}>\r\n"),
                            Envelope("claire@client.test", ("sav@example.com",)))
    written = WRITER.write(Letter("sav@example.com", [("Claire", "claire@client.test")],
                                  "[SAV-1] Accusé de réception", "Votre message est arrivé.",
                                  **answering(message)), kind="ack", now=1795420800.0,
                           id_prefix="ack.SAV-1")
    data = written.mail.data
    head = data.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nAuto-Submitted: auto-replied\r\n" in head
    assert b"\r\nX-Auto-Response-Suppress: All\r\n" in head
    assert b"\r\nPrecedence: bulk\r\n" in head
    assert b"\r\nX-Mailflow-Loop: mx.example.com\r\n" in head
    assert f"\r\nIn-Reply-To: <{LONG_ID}>\r\n".encode() in head  # raw, never encoded
    assert written.message_id.startswith("ack.SAV-1.") and written.message_id.endswith(
        "@mx.example.com")
    assert written.mail.rcpt_to == ("claire@client.test",) and written.mail.mail_from == ""
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF lines only


def test_an_answer_to_a_message_without_id_is_still_auto_replied() -> None:
    message = parse_message(customer(""), Envelope("paul@client.test", ("sav@example.com",)))
    written = WRITER.write(Letter("sav@example.com", ["paul@client.test"], "Reçu", "Reçu.",
                                  **answering(message)), kind="ack", now=1795420800.0)
    head = written.mail.data.split(b"\r\n\r\n", 1)[0]
    assert b"Auto-Submitted: auto-replied" in head and b"In-Reply-To" not in head


def test_a_notice_and_mail_to_answer() -> None:
    notice = WRITER.write(Letter("sla@example.com", ["chef@example.com"], "Breach", "x"),
                          kind="sla-breach", now=1795420800.0).mail.data
    assert b"Auto-Submitted: auto-generated" in notice
    forward = WRITER.write(Letter("sav@example.com", ["lawyer@example.com"], "Avis", "x",
                                  reply_to="experts+SAV-1.abc@example.com",
                                  attached=customer("Message-ID: <m@c>\r\n")),
                           kind="escalation", profile=TO_ANSWER, now=1795420800.0).mail.data
    head = forward.split(b"\r\n\r\n", 1)[0]
    assert b"Auto-Submitted" not in head and b"X-Auto-Response-Suppress: OOF" in head
    assert b"Precedence" not in head and b"X-Mailflow-Loop: mx.example.com" in head
    parsed = message_from_bytes(forward, policy=default)
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain",
                                                                   "message/rfc822"]


def test_a_non_ascii_address_makes_the_header_utf8() -> None:
    written = WRITER.write(Letter("sav@example.com", ["josé@exemple.test"], "Reçu", "x",
                                  replying=True), kind="ack", profile=AUTOMATIC,
                           now=1795420800.0)
    assert "To: josé@exemple.test".encode() in written.mail.data


SHORT_LINES = ["", "Hello,\nyour case is CTC-1.\n", "no final newline", "crlf\r\nlines\r\n",
               "Bonjour,\n\nNous avons bien reçu votre message « commande » du 3 décembre.\n",
               "a" * 78 + "\n", "é" * 39 + "\n", "trailing space \n\tand tab\n=equals\n.dot\n"]
LONG_LINES = ["long " * 40 + "\n", "é" * 60 + "\n", "Veuillez trouver ci-dessous la réponse à votre"
              " question, que nous avons préparée avec soin : " * 3 + "\n.\nFrom here=\n",
              "Здравствуйте! Ваше обращение принято и будет рассмотрено в ближайшее время.\n"]


@pytest.mark.parametrize("text", SHORT_LINES)
@pytest.mark.parametrize("utf8", [False, True])
def test_a_body_in_short_lines_is_what_set_content_writes(text: str, utf8: bool) -> None:
    shipped = EmailMessage(policy=compose.writer_policy(utf8=utf8))
    stdlib = EmailMessage(policy=SMTPUTF8 if utf8 else SMTP)
    set_text(shipped, text)
    stdlib.set_content(text)
    assert shipped.as_bytes() == stdlib.as_bytes()


@pytest.mark.parametrize("text", LONG_LINES)
def test_a_body_in_long_lines_reads_as_set_content_writes_it(text: str) -> None:
    """Encoded as the email package chooses (quoted-printable, or base64 for text it
    makes shorter), in lines of at most 76 characters, read back the same."""
    shipped = EmailMessage(policy=compose.writer_policy(utf8=False))
    stdlib = EmailMessage(policy=SMTP)
    set_text(shipped, text)
    stdlib.set_content(text)
    assert shipped["Content-Transfer-Encoding"] == stdlib["Content-Transfer-Encoding"]
    assert shipped.keys() == stdlib.keys()
    data = shipped.as_bytes()
    assert max(map(len, data.split(b"\r\n"))) <= 78 and data.isascii()
    again = message_from_bytes(data, policy=default)
    assert again.get_content() == message_from_bytes(stdlib.as_bytes(), policy=default
                                                     ).get_content()
