"""Behind Postfix: XFORWARD from trusted networks, the submission listener, and no
per-client session cap for the MTA in front. The real daemon, over SMTP."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, Sink, free_port, full_chain_rules, parse_email
from rawsmtp import RawClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(30)]

ALICE = "alice.moreau@example.com"  # a member of the sav team in the shipped rules
XFORWARD_OUTSIDE = b"XFORWARD NAME=mx.client.test ADDR=198.51.100.9 PORT=40000 HELO=mx.client.test"



def mail(sender: str, to: str, mid: str, extra: str = "", subject: str = "Bonjour") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{mid}>\r\n"
            f"{extra}\r\nUne question.\r\n").encode()


def transaction(client: RawClient, mail_from: str, rcpt: str, data: bytes) -> tuple[int, bytes]:
    client.envelope(f"<{mail_from}>".encode(), f"<{rcpt}>".encode())
    client.send(data + b".\r\n")
    return client.reply()


@pytest.fixture
def behind_postfix(tmp_path: Path, daemon_factory: Any) -> Daemon:
    """Loopback trusted (Postfix runs there), with the submission listener."""
    daemon: Daemon = daemon_factory(
        config={"trusted_networks": ["127.0.0.0/8"],
                "submission_listen": f"127.0.0.1:{free_port()}",
                "smtp": {"max_sessions_per_client": 3}},
        rules=full_chain_rules(tmp_path / "rules-src"))
    return daemon


def submission_port(daemon: Daemon) -> int:
    return int(str(daemon.config["submission_listen"]).rsplit(":", 1)[1])


def test_the_forwarded_client_decides_stripping_and_is_logged(behind_postfix: Daemon,
                                                              sink: Sink) -> None:
    client = RawClient(behind_postfix.port)
    assert b"XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE" in client.greet(b"localhost")
    assert client.cmd(XFORWARD_OUTSIDE)[0] == 250
    forged = mail("claire@client.test", "sav@example.com", "xf-1@client.test",
                  "X-Mailflow-Priority: urgent\r\nX-Mailflow-Route: legal\r\n")
    code, text = transaction(client, "claire@client.test", "sav@example.com", forged)
    assert code == 250, text
    relayed = next(m for m in sink.wait_for(2) if m.mail_from == "claire@client.test")
    msg = parse_email(relayed.data)
    assert msg["X-Mailflow-Route"] == "sav" and msg["X-Mailflow-Priority"] == "normal"
    assert "from mx.client.test ([198.51.100.9])" in str(msg["Received"])
    assert '"peer": "198.51.100.9"' in behind_postfix.wait_for_log("internal_headers_removed")
    # relay control is Postfix's: it accepted this recipient, mailflow does not refuse it
    assert client.cmd(XFORWARD_OUTSIDE)[0] == 250
    code, text = transaction(client, "jean@example.com", "ami@elsewhere.test",
                             mail("jean@example.com", "ami@elsewhere.test", "xf-2@example.com"))
    assert code == 250, text
    client.quit()


def test_an_agent_forged_from_outside_is_customer_mail(behind_postfix: Daemon,
                                                       sink: Sink) -> None:
    client = RawClient(behind_postfix.port)
    client.greet(b"localhost")
    assert client.cmd(XFORWARD_OUTSIDE)[0] == 250
    code, text = transaction(client, ALICE, "sav@example.com",
                             mail(ALICE, "sav@example.com", "forged-2@evil.test"))
    assert code == 250, text
    client.quit()
    with sqlite3.connect(behind_postfix.db) as db:
        assert list(db.execute("SELECT role, sender FROM case_messages")) == [
            ("customer", ALICE)]


def test_an_agent_at_home_replies_through_the_submission_listener(behind_postfix: Daemon,
                                                                  sink: Sink) -> None:
    code, _ = behind_postfix.send(mail("claire@client.test", "sav@example.com",
                                       "q-9@client.test"), mail_from="claire@client.test")
    assert code == 250
    sink.wait_for(2)
    with sqlite3.connect(behind_postfix.db) as db:
        ((case,),) = list(db.execute("SELECT number FROM cases"))
    answer = mail(ALICE, "claire@client.test", "a-9@example.com",
                  "In-Reply-To: <q-9@client.test>\r\n", subject="Re: Bonjour")
    # from the main listener, an outside network is not where agents write from
    client = RawClient(behind_postfix.port)
    client.greet(b"localhost")
    assert client.cmd(XFORWARD_OUTSIDE)[0] == 250
    assert transaction(client, ALICE, "claire@client.test", answer)[0] == 250
    client.quit()
    # through the submission listener (Postfix's authenticated submission), it is
    client = RawClient(submission_port(behind_postfix))
    client.greet(b"localhost")
    assert client.cmd(XFORWARD_OUTSIDE)[0] == 250
    assert transaction(client, ALICE, "claire@client.test",
                       answer.replace(b"a-9@", b"a-10@"))[0] == 250
    client.quit()
    with sqlite3.connect(behind_postfix.db) as db:
        agents = list(db.execute("SELECT case_number, message_id, sender FROM case_messages"
                                 " WHERE role = 'agent'"))
    assert agents == [(case, "a-10@example.com", ALICE)]


def test_xforward_refused_from_strangers_in_a_transaction_or_hostile(
        daemon_factory: Any, behind_postfix: Daemon, sink: Sink) -> None:
    stranger: Daemon = daemon_factory()  # loopback NOT trusted here
    client = RawClient(stranger.port)
    assert b"XFORWARD" not in client.greet()
    code, text = client.cmd(XFORWARD_OUTSIDE)
    assert (code, text[:6]) == (550, b"5.7.0 "), text
    client.quit()
    client = RawClient(behind_postfix.port)
    client.greet(b"localhost")
    code, text = client.cmd(b"XFORWARD HELO=evil+0D+0AMAIL+20FROM:<x@y> ADDR=192.0.2.1")
    assert (code, text[:6]) == (501, b"5.5.4 "), text
    assert client.cmd(b"XFORWARD ADDR=" + b"9" * 400)[0] == 501
    assert client.cmd(b"MAIL FROM:<claire@client.test>")[0] == 250
    code, text = client.cmd(b"XFORWARD ADDR=192.0.2.1")
    assert (code, text[:6]) == (503, b"5.5.1 "), text
    client.quit()
    log = behind_postfix.log
    assert "xforward_refused" in log and "evil" not in log and "9" * 400 not in log


def test_no_per_client_cap_for_the_trusted_mta_in_front(behind_postfix: Daemon) -> None:
    clients = [RawClient(behind_postfix.port) for _ in range(6)]  # the cap is 3 per client
    try:
        for client in clients:
            code, text = client.reply()
            assert code == 220, text
    finally:
        for client in clients:
            client.close()
