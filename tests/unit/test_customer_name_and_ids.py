"""The customer's name and the ids a reply threads on, as read from the message."""

from __future__ import annotations

import pytest

from mailflow.message import Envelope, Message, parse_message
from mailflow.message.headers import decode_phrase
from mailflow.stages.number import customer_of

SENDER = "a@b.test"


def message(headers: bytes, mail_from: str = SENDER) -> Message:
    return parse_message(headers + b"\r\n\r\nbody\r\n", Envelope(mail_from, ("sav@example.com",)))


@pytest.mark.parametrize(("raw", "name"), [
    (b"From: Claire Martin <a@b.test>", "Claire Martin"),
    (b'From: "Martin, Claire" <a@b.test>', "Martin, Claire"),
    (b"From: =?utf-8?q?Jos=C3=A9?= =?utf-8?q?_Garc=C3=ADa?= <a@b.test>", "José García"),
    (b"From: =?utf-8?q?Dupont,_Jean?= <a@b.test>", "Dupont, Jean"),  # comma in the word
    (b'From: "=?iso-8859-1?q?Ren=E9?=" <a@b.test>', "René"),
    (b"From: Ren\xc3\xa9 <a@b.test>", "René"),  # raw UTF-8
    (b"From: a@b.test (Claire)", "Claire"),
    (b"From: a@b.test", ""),
])
def test_names_that_decode_cleanly(raw: bytes, name: str) -> None:
    msg = message(raw)
    assert msg.display_name("From") == name
    assert customer_of(msg, ()) == (SENDER, name)


@pytest.mark.parametrize("raw", [
    b"From: =?UTF-8?B?bad base64?= <a@b.test>",
    b"From: =?x-unknown?Q?Jean?= <a@b.test>",
    b"From: =?utf-8?q?Jean=FF?= <a@b.test>",  # not UTF-8
    b"From: =?utf-8?q?Jean=0D=0ABcc:_victim@elsewhere.test?= <a@b.test>",
    b"From: =?utf-8?q?Jean=00?= <a@b.test>",
    b"From: Jean\x01Dupont <a@b.test>",
    b"From: =?UTF-8?B?SmVhbg <a@b.test>",  # never finished
    b"From: Jean ?= <a@b.test>",
])
def test_a_name_that_cannot_be_decoded_cleanly_falls_back_to_the_address(raw: bytes) -> None:
    msg = message(raw)
    assert msg.display_name("From") is None
    assert customer_of(msg, ()) == (SENDER, SENDER)
    # the envelope's own spelling, not the lower-cased one the case keeps
    assert customer_of(message(raw, "A@B.test"), ()) == (SENDER, "A@B.test")


def test_decode_phrase_is_bounded() -> None:
    assert decode_phrase("=?utf-8?q?a?= " * 2000) is None
    assert decode_phrase("=?utf-8?q?a?= =?utf-8?q?b?=") == "ab"  # RFC 2047 6.2


def test_ids_are_taken_exactly_as_written() -> None:
    msg = message(b"Message-ID: <=?utf-8?q?x?=@client.test>\r\n"
                  b"In-Reply-To: <p\xc3\xa8re@d\xc3\xb6main.test>\r\n"
                  b"References: <=?utf-8?q?a?=@x.test>\r\n <b@x.test>\r\nReferences: <c@x>")
    assert msg.message_id == "=?utf-8?q?x?=@client.test"
    assert msg.message_ids("References") == [
        "=?utf-8?q?a?=@x.test", "b@x.test", "c@x"]
    assert msg.message_ids("In-Reply-To") == ["père@dömain.test"]
    # the decoded value would have lost it
    assert msg.get("References").startswith("<a@x.test>")
