"""Relaying through the real daemon to a real next hop: what the client hears, what arrives.

The rules here are a minimal chain (``headers`` only), so every message the
sink receives is the relayed one and nothing else (no acknowledgements).
"""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from conftest import Daemon, Sink

pytestmark = pytest.mark.slow  # starts the daemon: `pytest -m 'not slow'` leaves it out

CRLF = b"\r\n"


def write_rules(directory: Path, chain: tuple[str, ...] = ("headers",),
                **sections: Any) -> Path:
    """A rules folder of our own: local domain example.com, the given chain and sections."""
    directory.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"local_domains": ["example.com"], "chain": list(chain),
                            "headers": {"add": {"X-Mailflow-Gateway": "mailflow"}}}
    data.update(sections)
    with open(directory / "rules.yaml", "w", encoding="utf-8") as fh:
        YAML().dump(data, fh)
    return directory


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    return write_rules(tmp_path / "rules-src")


@pytest.fixture
def mf(daemon_factory: Any, rules: Path) -> Daemon:
    d: Daemon = daemon_factory(rules=rules)
    return d


def message(subject: str = "Bonjour", body: bytes = b"Ligne 1\r\nLigne 2\r\n",
            extra: bytes = b"", mid: str = "relay-1@client.test") -> bytes:
    return (b"From: Claire <claire@client.test>\r\nTo: sav@example.com\r\n"
            + f"Subject: {subject}\r\nMessage-ID: <{mid}>\r\n".encode() + extra
            + b"\r\n" + body)


def prepended(got: bytes, original: bytes) -> bytes:
    """The header lines mailflow put in front of ``original`` (which must be the suffix)."""
    assert got.endswith(original), got[:2000]
    added = got[: -len(original)]
    assert added.endswith(CRLF) and CRLF + CRLF not in added and not added.startswith(CRLF)
    for line in added.split(CRLF)[:-1]:  # header fields or their continuation lines only
        assert line[:1] in (b" ", b"\t") or b":" in line, line
    return added


def settle(sink: Sink, count: int, seconds: float = 1.5) -> None:
    """Wait a little longer and check nothing more arrives (no duplicate delivery)."""
    time.sleep(seconds)
    assert len(sink.messages) == count, [m.rcpt_tos for m in sink.messages]


# -- what arrives -----------------------------------------------------------------


def test_headers_prepended_and_body_byte_for_byte(mf: Daemon, sink: Sink) -> None:
    original = message(body=b"Ligne 1\r\n.leading dot\r\n..two dots\r\n\r\n\ttab\r\n"
                            b"trailing spaces   \r\n")
    code, text = mf.send(original, mail_from="claire@client.test")
    assert code == 250, text
    (got,) = sink.wait_for(1)
    assert got.mail_from == "claire@client.test"
    assert got.rcpt_tos == ["sav@example.com"]
    added = prepended(got.data, original)
    assert added.startswith(b"Received: from client.test")
    assert b"by mailflow.test" in added
    assert b"X-Mailflow-Gateway: mailflow\r\n" in added


def test_8bit_body_and_smtputf8_envelope(mf: Daemon, sink: Sink) -> None:
    latin = message(subject="=?iso-8859-1?q?caf=E9?=", mid="latin@client.test",
                    body="Réclamation : le café était froid.\r\n".encode("latin-1"),
                    extra=b"Content-Type: text/plain; charset=iso-8859-1\r\n"
                          b"Content-Transfer-Encoding: 8bit\r\n")
    utf8 = ("From: José <josé@exemple.test>\r\nTo: sav@example.com\r\n"
            "Subject: Où est ma commande ? 📦\r\nMessage-ID: <utf8@exemple.test>\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n"
            "Bonjour, ma commande n° 42 n'est pas arrivée. Merci — José\r\n").encode()
    with mf.smtp() as client:
        assert client.has_extn("smtputf8") and client.has_extn("8bitmime")
        code, text = client.mail("claire@client.test", options=["BODY=8BITMIME"])
        assert code == 250, text
        assert client.rcpt("sav@example.com")[0] == 250
        code, text = client.data(latin)
        assert code == 250, text
        code, text = client.mail("josé@exemple.test", options=["SMTPUTF8", "BODY=8BITMIME"])
        assert code == 250, text
        code, text = client.rcpt("sav@example.com")
        assert code == 250, text
        code, text = client.data(utf8)
        assert code == 250, text
    first, second = sink.wait_for(2)
    prepended(first.data, latin)
    assert second.mail_from == "josé@exemple.test"
    prepended(second.data, utf8)


def test_line_of_5000_octets_is_accepted_and_kept(mf: Daemon, sink: Sink) -> None:
    sink.stop()  # the stock sink answers 500 past 1,001 octets: restart it as a lenient one
    sink.long_lines = True
    sink.start()
    long_line = b"x" * 4995 + b" end."
    assert len(long_line) == 5000
    original = message(body=b"before\r\n" + long_line + b"\r\nafter\r\n")
    code, text = mf.send(original)
    assert code == 250, text
    (got,) = sink.wait_for(1)
    prepended(got.data, original)
    assert long_line + CRLF in got.data


def test_null_sender_is_relayed_as_the_null_sender(mf: Daemon, sink: Sink) -> None:
    original = message(subject="Undelivered Mail Returned to Sender", mid="dsn@client.test")
    code, text = mf.send(original, mail_from="")
    assert code == 250, text
    (got,) = sink.wait_for(1)
    assert got.mail_from == "<>"  # how aiosmtpd, the sink, records MAIL FROM:<>
    prepended(got.data, original)
    assert '"mail_from": ""' in mf.log  # the daemon itself sees the empty sender


# -- when the next hop does not take it -------------------------------------------


def test_next_hop_down_gives_4xx_and_resend_is_delivered_once(mf: Daemon, sink: Sink) -> None:
    original = message(mid="down@client.test")
    sink.stop()
    code, text = mf.send(original)
    assert 400 <= code < 500, (code, text)
    assert b"4.4." in text
    sink.start()  # same port: the next hop is back
    code, text = mf.send(original)
    assert code == 250, text
    (got,) = sink.wait_for(1)
    prepended(got.data, original)
    settle(sink, 1)  # the refused attempt left nothing behind to be sent later


def test_next_hop_451_at_data_gives_4xx(mf: Daemon, sink: Sink) -> None:
    sink.handler.data_reply = "451 4.3.0 Local problem, try later"
    code, text = mf.send(message(mid="451@client.test"))
    assert code == 451, (code, text)
    assert not sink.messages
    sink.handler.data_reply = "250 2.0.0 Ok"
    code, text = mf.send(message(mid="451@client.test"))
    assert code == 250, text
    sink.wait_for(1)
    settle(sink, 1, 1.0)


def test_next_hop_554_gives_5xx(mf: Daemon, sink: Sink) -> None:
    sink.handler.data_reply = "554 5.7.1 Content rejected"
    code, text = mf.send(message(mid="554@client.test"))
    assert 500 <= code < 600, (code, text)
    assert b"Content rejected" in text
    settle(sink, 0, 1.0)  # no retry behind the client's back: it was told 5xx


# -- relaying rules ----------------------------------------------------------------


@pytest.mark.parametrize("rcpt", [
    "someone@outside.org",
    "user%outside.org@example.com",
    "user@[192.0.2.1]",
    "outside.org!user@example.com",
    "sav@example.com.outside.org",
])
def test_stranger_cannot_relay(mf: Daemon, sink: Sink, rcpt: str) -> None:
    with mf.smtp() as client:
        assert client.mail("customer@client.test")[0] == 250
        code, text = client.docmd(f"RCPT TO:<{rcpt}>")
        assert code == 550, (code, text)
        assert text.startswith(b"5.7.1"), text
        # the session goes on: a local recipient is still fine
        assert client.rcpt("sav@example.com")[0] == 250
        code, text = client.data(message(mid="relay-denied@client.test"))
        assert code == 250, text
    (got,) = sink.wait_for(1)
    assert got.rcpt_tos == ["sav@example.com"]


def test_trusted_network_may_relay_outside(daemon_factory: Any, rules: Path,
                                           sink: Sink) -> None:
    mf: Daemon = daemon_factory(config={"trusted_networks": ["127.0.0.0/8"]}, rules=rules)
    original = message(mid="trusted@example.com",
                       extra=b"X-Mailflow-Case: SAV-20260101-00001-7\r\n")
    code, text = mf.send(original, mail_from="agent@example.com",
                         rcpt_to=["someone@outside.org", "paul@example.com"])
    assert code == 250, text
    copies = {tuple(m.rcpt_tos): m.data for m in sink.wait_for(2)}
    # a trusted client's own X-Mailflow headers stay, inside the company only
    prepended(copies[("paul@example.com",)], original)
    outside = copies[("someone@outside.org",)]
    prepended(outside, original.replace(b"X-Mailflow-Case: SAV-20260101-00001-7\r\n", b""))
    assert b"X-Mailflow-Case" not in outside


# -- limits -------------------------------------------------------------------------


def test_more_than_100_received_headers_gets_554(mf: Daemon, sink: Sink) -> None:
    def hops(n: int) -> bytes:
        return b"".join(f"Received: from hop{i}.test by hop{i + 1}.test; "
                        f"Thu, 1 Jan 2026 00:00:00 +0000\r\n".encode() for i in range(n))

    looping = hops(101) + message(mid="loop@client.test")
    code, text = mf.send(looping)
    assert code == 554, (code, text)
    assert text.startswith(b"5.4.6"), text
    at_limit = hops(100) + message(mid="hundred@client.test")
    code, text = mf.send(at_limit)
    assert code == 250, text
    (got,) = sink.wait_for(1)
    prepended(got.data, at_limit)


def test_recipient_refused_with_450_is_retried_through_the_outbox(mf: Daemon,
                                                                   sink: Sink) -> None:
    sink.handler.rcpt_replies = {"contact@example.com": "450 4.2.1 Mailbox busy"}
    original = message(mid="partial@client.test")
    code, text = mf.send(original, rcpt_to=["sav@example.com", "contact@example.com"])
    assert code == 250, text  # the next hop took it for one recipient: it has it
    (first,) = sink.wait_for(1)
    assert first.rcpt_tos == ["sav@example.com"]
    mf.wait_for_log("outbox_not_sent")  # the outbox tried contact@ again, still refused
    sink.handler.rcpt_replies = {}
    _, second = sink.wait_for(2, timeout=15)
    assert second.rcpt_tos == ["contact@example.com"]
    assert second.data == first.data
    settle(sink, 2)


def test_internal_headers_from_strangers_are_removed(mf: Daemon, sink: Sink) -> None:
    forged = (b"X-Mailflow-Case: SAV-20260101-99999-1\r\n"
              b"x-mailflow-priority: urgent\r\n"
              b"X-Mailflow-Route: vip\r\n\tcontinued\r\n")
    head = (b"From: Claire <claire@client.test>\r\nTo: sav@example.com\r\n"
            b"Subject: forged\r\nMessage-ID: <forged@client.test>\r\n")
    body = b"\r\nX-Mailflow-Case: in the body stays\r\n"
    code, text = mf.send(head + forged + body)
    assert code == 250, text
    (got,) = sink.wait_for(1)
    prepended(got.data, head + body)
    assert b"99999" not in got.data and b"vip" not in got.data
    assert b"urgent" not in got.data.lower()


# -- operations -------------------------------------------------------------------------


def test_clients_that_drop_at_once_do_not_keep_session_slots(daemon_factory: Any,
                                                             rules: Path, sink: Sink) -> None:
    mf: Daemon = daemon_factory(config={"smtp": {"max_sessions_per_client": 3}}, rules=rules)
    for _ in range(6):  # TCP health checks, port scanners: connect, close, never read
        socket.create_connection(("127.0.0.1", mf.port), timeout=5).close()
    deadline = time.monotonic() + 5
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{mf.metrics_port}/metrics",
                                    timeout=5) as resp:
            if "mailflow_smtp_sessions 0.0" in resp.read().decode():
                break
        assert time.monotonic() < deadline, "dropped sessions still counted"
        time.sleep(0.1)
    code, text = mf.send(message(mid="after-drops@client.test"))
    assert code == 250, text
    sink.wait_for(1)


def test_metrics_and_healthz(mf: Daemon, sink: Sink) -> None:
    code, text = mf.send(message(mid="metrics@client.test"))
    assert code == 250, text
    sink.wait_for(1)
    base = f"http://127.0.0.1:{mf.metrics_port}"
    with urllib.request.urlopen(f"{base}/healthz", timeout=5) as resp:
        assert resp.status == 200
        assert resp.read().startswith(b"ok")
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
        assert resp.status == 200
        exposition = resp.read().decode()
    assert 'mailflow_messages_total{verdict="deliver"} 1.0' in exposition
    assert "mailflow_relay_duration_seconds_count 1.0" in exposition
