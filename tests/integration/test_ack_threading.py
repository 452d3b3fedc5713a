"""The acknowledgement threads in the customer's client, and greets them cleanly.

The real daemon with the whole chain and a next hop that keeps the bytes and
the envelope as they came. Outlook and Exchange write Message-IDs of 80-100
characters, and some ids carry a non-ASCII domain: ``In-Reply-To`` and
``References`` must reach the customer raw (never RFC 2047-encoded, never
folded inside an id), or their client cannot put the ack in the thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, full_chain_rules, parse_email
from exactsink import ExactReceived, ExactSink, exact_sink  # noqa: F401 (the sink)
from rawsmtp import RawClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

EXCHANGE_DOMAIN = "SL2P216MB0329.KORP216.PROD.OUTLOOK.COM"
#: a 100-character Exchange Message-ID (without its angle brackets)
EXCHANGE_ID = "SL2P216MB0329C3E0F0C1B5D16B0F5A1FBF8E9".ljust(100 - 1 - len(EXCHANGE_DOMAIN),
                                                           "A") + "@" + EXCHANGE_DOMAIN


@pytest.fixture
def mf(tmp_path: Path, daemon_factory: Any) -> Daemon:
    daemon: Daemon = daemon_factory(rules=full_chain_rules(tmp_path / "rules-src"))
    return daemon


def send(daemon: Daemon, sender: str, data: bytes) -> None:
    client = RawClient(daemon.port)
    try:
        client.greet()
        client.envelope(b"<" + sender.encode() + b">")
        client.send(data + b".\r\n")
        code, text = client.reply()
        assert code == 250, text
        client.quit()
    finally:
        client.close()


def customer_mail(sender: str, message_id: str, *, name: str = "Claire Martin",
                  subject: str = "Ma commande", headers: str = "") -> bytes:
    return (f"From: {name} <{sender}>\r\nTo: sav@example.com\r\nSubject: {subject}\r\n"
            f"Date: Mon, 23 Nov 2026 09:30:00 +0100\r\nMessage-ID: <{message_id}>\r\n"
            f"{headers}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            "Bonjour, ma commande 4821 n'est pas arrivée. Merci.\r\n").encode()


def ack_for(sink: ExactSink, customer: str, count: int) -> ExactReceived:
    acks = [m for m in sink.wait_for(count) if m.mail_from == "" and m.rcpt_tos == [customer]]
    assert len(acks) == 1, [(m.mail_from, m.rcpt_tos) for m in sink.messages]
    return acks[0]


def header_lines(data: bytes) -> list[bytes]:
    return data.partition(b"\r\n\r\n")[0].split(b"\r\n")


def field(data: bytes, name: bytes) -> bytes:
    """One header field's value, unfolded (folding is only ever at spaces)."""
    text = data.partition(b"\r\n\r\n")[0].replace(b"\r\n ", b" ")
    (line,) = [h for h in text.split(b"\r\n") if h.lower().startswith(name.lower() + b":")]
    return line.partition(b":")[2].strip()


def test_exchange_message_id_threads_raw(mf: Daemon, sink: ExactSink) -> None:
    customer = "claire.martin@client.test"
    earlier = f"PA4P190MB1234ABCD5678EF90{'B' * 40}@PA4P190MB1234.EURP190.PROD.OUTLOOK.COM"
    send(mf, customer, customer_mail(customer, EXCHANGE_ID,
                                     headers=f"References: <{earlier}>\r\n"))
    ack = ack_for(sink, customer, 2)
    assert len(EXCHANGE_ID) == 100
    assert b"\r\nIn-Reply-To: <" + EXCHANGE_ID.encode() + b">\r\n" in ack.data
    assert field(ack.data, b"References") == f"<{earlier}> <{EXCHANGE_ID}>".encode()
    lines = header_lines(ack.data)
    assert not [h for h in lines if b"=?" in h and not h.startswith((b"From:", b"Subject:"))]
    assert max(len(h) for h in lines) <= 998
    assert not ack.smtputf8  # all ASCII: no SMTPUTF8 needed


def test_non_ascii_id_and_long_references_thread_raw(mf: Daemon, sink: ExactSink) -> None:
    customer = "jose.garcia@client.test"
    message_id = "a1b2c3d4e5@dömain.test"  # 25 characters, one of them not ASCII
    refs = [f"thread-{i:02d}.{'r' * 60}@exchange.client.test" for i in range(14)]
    refs[3] = "ref-ü@dömain.test"
    references = "References: " + "\r\n ".join(f"<{r}>" for r in refs) + "\r\n"
    send(mf, customer, customer_mail(customer, message_id, headers=references))
    ack = ack_for(sink, customer, 2)
    assert b"\r\nIn-Reply-To: <" + message_id.encode() + b">\r\n" in ack.data
    kept = field(ack.data, b"References").decode().split(" ")
    # RFC 5322 3.6.4, trimmed: the first of the thread, the last ones, then the parent
    assert kept == [f"<{r}>" for r in [refs[0], *refs[-8:], message_id]]
    lines = header_lines(ack.data)
    assert not [h for h in lines if b"=?" in h and not h.startswith((b"From:", b"Subject:"))]
    assert max(len(h) for h in lines) <= 998
    for line in lines:  # folded between ids only: every id whole on its line
        if line.startswith((b"References:", b" <")):
            assert line.rstrip().endswith(b">"), line
    assert ack.smtputf8  # a UTF-8 header (RFC 6532) travels with SMTPUTF8
    parsed = parse_email(ack.data)
    assert str(parsed["In-Reply-To"]) == f"<{message_id}>"


@pytest.mark.parametrize("name", [
    "=?UTF-8?B?bad base64?=",
    "=?x-unknown-charset?Q?Jean_Dupont?=",
    "=?utf-8?q?Jean=0D=0ABcc:_victim@elsewhere.test?=",
    "=?utf-8?q?Jean=00Dupont?=",
    "=?UTF-8?B?SmVhbg",  # an encoded word never finished
])
def test_a_broken_name_is_greeted_by_address(mf: Daemon, sink: ExactSink, name: str) -> None:
    customer = "broken.name@client.test"
    send(mf, customer, customer_mail(customer, "broken-1@client.test", name=name,
                                     subject="=?utf-8?q?Commande=00_4821=07_perdue?="))
    ack = ack_for(sink, customer, 2)
    parsed = parse_email(ack.data)
    body = parsed.get_content()
    assert f"Bonjour {customer}," in body
    assert "=?" not in body
    assert field(ack.data, b"To") == customer.encode()
    assert "Commande 4821 perdue" in body and "\x00" not in body and "\x07" not in body
    assert "\x00" not in str(parsed["Subject"]) and "\x07" not in str(parsed["Subject"])
