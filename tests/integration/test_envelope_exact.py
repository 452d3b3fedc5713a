"""Envelope addresses go through byte for byte, whichever way the mail flows.

The real daemon with the whole chain, loopback trusted (as behind Postfix),
and a next hop that records MAIL FROM and RCPT TO exactly as they came over
the wire. Addresses that look like RFC 2047 words, quoted local parts and
UTF-8 local parts (with SMTPUTF8) must reach the next hop, and the
acknowledgement, as the client wrote them: an envelope is not a header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, full_chain_rules
from exactsink import ExactSink, exact_sink  # noqa: F401 (the sink)
from rawsmtp import RawClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

SENDERS = [
    "=?UTF-16?B?//492Enc?=@example.org",  # decoded by a header parser: 👉@example.org
    "=?utf-8?q?j=C3=B6hn?=@client.test",
    '"john doe"@client.test',
    '"a@b"@client.test',
    '"John"@Client.TEST',  # needless quotes and capitals: kept all the same
    '"=?utf-8?q?x?="@client.test',  # an encoded word inside quotes
    "jöhn.dœ@client.test",  # UTF-8, with SMTPUTF8
]
#: local recipients that are not service mailboxes: they keep the message as addressed
LOCAL_OTHERS = ["=?utf-8?q?jean?=@example.com", '"marie curie"@example.com']
OUTSIDE = ['"x y"@elsewhere.test', "=?UTF-8?B?8J+RiQ==?=@elsewhere.test", '"c@d"@elsewhere.test']


@pytest.fixture
def mf(tmp_path: Path, daemon_factory: Any) -> Daemon:
    daemon: Daemon = daemon_factory(config={"trusted_networks": ["127.0.0.0/8"]},
                                    rules=full_chain_rules(tmp_path / "rules-src"))
    return daemon


def message(sender: str, to: str, n: int) -> bytes:
    return (f"From: Client Test <{sender}>\r\nTo: {to}\r\nSubject: Commande {n}\r\n"
            f"Message-ID: <env-{n}@client.test>\r\nDate: Mon, 23 Nov 2026 09:30:00 +0100\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"Bonjour, ma commande {4000 + n} n'est pas arrivée. Merci.\r\n").encode()


def send(daemon: Daemon, mail_from: str, rcpts: list[str], data: bytes) -> None:
    """One transaction with exactly these bytes on the command lines."""
    utf8 = not all(a.isascii() for a in [mail_from, *rcpts])
    client = RawClient(daemon.port)
    try:
        client.greet()
        code, text = client.cmd(b"MAIL FROM:<" + mail_from.encode() + b">"
                                + (b" SMTPUTF8" if utf8 else b""))
        assert code == 250, (mail_from, text)
        for rcpt in rcpts:
            code, text = client.cmd(b"RCPT TO:<" + rcpt.encode() + b">")
            assert code == 250, (rcpt, text)
        assert client.cmd(b"DATA")[0] == 354
        client.send(data + b".\r\n")
        code, text = client.reply()
        assert code == 250, (mail_from, text)
        client.quit()
    finally:
        client.close()


def to_line(data: bytes) -> bytes:
    head = data.partition(b"\r\n\r\n")[0]
    (line,) = [h for h in head.replace(b"\r\n ", b" ").split(b"\r\n") if h.startswith(b"To:")]
    return line


def test_inbound_envelope_and_ack_address_are_exact(mf: Daemon, sink: ExactSink) -> None:
    for n, sender in enumerate(SENDERS):
        send(mf, sender, ["sav@example.com", *LOCAL_OTHERS], message(sender, "sav@example.com", n))
    got = sink.wait_for(2 * len(SENDERS))
    for sender in SENDERS:
        utf8 = not sender.isascii()
        relayed = [m for m in got if m.mail_from == sender]
        assert len(relayed) == 1, (sender, [m.mail_from for m in got])
        (copy,) = relayed
        # routing replaces sav@ by its team; every other recipient is exactly as sent
        assert [r for r in copy.rcpt_tos if r in LOCAL_OTHERS] == LOCAL_OTHERS, copy.rcpt_tos
        assert "sav@example.com" not in copy.rcpt_tos
        assert copy.smtputf8 is utf8
        acks = [m for m in got if m.mail_from == "" and m.rcpt_tos == [sender]]
        assert len(acks) == 1, (sender, [(m.mail_from, m.rcpt_tos) for m in got])
        (ack,) = acks
        assert ack.smtputf8 is utf8
        assert to_line(ack.data) == b"To: Client Test <" + sender.encode() + b">"
    assert len(got) == 2 * len(SENDERS), [(m.mail_from, m.rcpt_tos) for m in got]


def test_passthrough_envelope_is_exact(mf: Daemon, sink: ExactSink) -> None:
    for n, sender in enumerate(SENDERS):
        send(mf, sender, OUTSIDE, message(sender, OUTSIDE[0], 100 + n))
    got = sink.wait_for(len(SENDERS))
    assert [(m.mail_from, m.rcpt_tos, m.smtputf8) for m in got] == [
        (s, OUTSIDE, not s.isascii()) for s in SENDERS]
    for n, (m, sender) in enumerate(zip(got, SENDERS, strict=True)):
        assert m.data.endswith(message(sender, OUTSIDE[0], 100 + n))  # the bytes as sent


def test_internal_envelope_is_exact(mf: Daemon, sink: ExactSink) -> None:
    cases = [('"pierre dupont"@example.com', LOCAL_OTHERS),
             ("=?utf-8?q?pierre?=@example.com", ['"marie curie"@example.com']),
             ("pierre.müller@example.com", ["=?utf-8?q?jean?=@example.com", "zoé@example.com"])]
    for n, (sender, rcpts) in enumerate(cases):
        send(mf, sender, rcpts, message(sender, rcpts[0], 200 + n))
    got = sink.wait_for(len(cases))
    assert [(m.mail_from, m.rcpt_tos) for m in got] == cases
    assert [m.smtputf8 for m in got] == [False, False, True]
