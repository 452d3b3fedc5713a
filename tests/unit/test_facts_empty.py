"""Which messages are empty: nothing to open a case about (relayed and counted all the same)."""

from __future__ import annotations

import pytest

from mailflow.automatic import SHIPPED
from mailflow.facts import MessageFacts
from mailflow.message import Envelope, parse_message

HEAD = b"From: <claire@client.test>\r\nTo: sav@example.com\r\nMessage-ID: <e@client.test>\r\n"
PHOTO = (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
         b"--b\r\nContent-Type: text/plain\r\n\r\n\r\n"
         b"--b\r\nContent-Type: image/jpeg; name=colis.jpg\r\n"
         b"Content-Transfer-Encoding: base64\r\n\r\n/9j/4AAQ\r\n--b--\r\n")
NOTHING_IN_PARTS = (b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n"
                    b"\r\n--b\r\nContent-Type: text/plain\r\n\r\n \r\n"
                    b"--b\r\nContent-Type: text/html\r\n\r\n<html><body></body></html>\r\n"
                    b"--b--\r\n")


def empty(data: bytes) -> bool:
    message = parse_message(data, Envelope("claire@client.test", ("sav@example.com",)))
    return MessageFacts(message, SHIPPED).empty


@pytest.mark.parametrize(("rest", "expected"), [
    (b"\r\n", True),
    (b"\r\n  \r\n\r\n", True),
    (b"Subject: \r\n\r\n", True),
    (b"Subject: Commande 4821\r\n\r\n", False),
    (b"\r\nBonjour\r\n", False),
    (PHOTO, False),  # a photo of the parcel, nothing written: still something to answer
    (NOTHING_IN_PARTS, True),
])
def test_empty_means_no_subject_no_text_no_attachment(rest: bytes, expected: bool) -> None:
    assert empty(HEAD + rest) is expected
