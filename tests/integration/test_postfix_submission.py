"""Agents writing from anywhere: Postfix's submission service (SASL) feeding mailflow's
second listener, configured with part 3 of deploy/postfix/master.cf.snippet.

    customer ─▶ Postfix public smtpd ─▶ mailflow (content_filter) ─▶ reinjection ─▶ sink
    agent (AUTH PLAIN) ─▶ Postfix submission smtpd ─▶ mailflow's submission listener
                                                   ─▶ reinjection ─▶ sink

The daemon trusts 127.0.0.1 only (Postfix, as deploy/mailflow.yaml does), and the test's
clients connect from 127.0.0.2, an address it does not trust, as an agent at home
would: Postfix's XFORWARD names it. An agent's mail is then a reply only because it
came through the submission listener, and the agent writing as the shared mailbox
(``From: sav@``) is known by the login Postfix records in its Received header
(``smtpd_sasl_authenticated_header``). The same message sent to the public port is
no reply.
"""

from __future__ import annotations

import smtplib
import sqlite3
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from conftest import NULL_SENDERS, Daemon, Received, Sink, free_port, full_chain_rules, parse_email
from postfix import PostfixInstance, unavailable

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

SERVICE = "sav@example.com"
CUSTOMER = "nomade@customer.test"
PASSWORD = "s3cret-of-alice"
SAV_TEAM = ("alice.moreau@example.com", "bruno.petit@example.com", "chloe.roger@example.com")
WAIT = 20.0
AWAY = ("127.0.0.2", 0)  # the clients' source address: loopback, but not trusted


def client(port: int | None) -> smtplib.SMTP:
    assert port is not None
    return smtplib.SMTP("127.0.0.1", port, timeout=WAIT, source_address=AWAY)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory,
          module_sink: Sink) -> Iterator[tuple[PostfixInstance, Daemon, Sink]]:
    problem = unavailable()
    if problem is not None:  # never a skip: make test installs what this needs
        pytest.fail(f"no private Postfix can run here: {problem}")
    root = tmp_path_factory.mktemp("postfix-submission")
    submission = free_port()
    daemon = Daemon(root / "mailflow", "smtp://127.0.0.1:1",
                    {"submission_listen": f"127.0.0.1:{submission}",
                     "trusted_networks": ["127.0.0.1/32"]},
                    full_chain_rules(root / "rules"))
    postfix = PostfixInstance(root / "postfix", relay_port=module_sink.port,
                              filter_port=daemon.port)
    postfix.enable_submission(submission, {login: PASSWORD for login in SAV_TEAM})
    try:
        postfix.start()
        daemon.config["next_hop"] = f"smtp://127.0.0.1:{postfix.reinject_port}"
        daemon.start()
        postfix.retarget(daemon.port)
        yield postfix, daemon, module_sink
    finally:
        daemon.stop()
        postfix.stop()


def wait_for(sink: Sink, postfix: PostfixInstance, daemon: Daemon, message_id: str
             ) -> tuple[Received, EmailMessage]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = [(r, m) for r in sink.messages for m in [parse_email(r.data)]
                 if m["Message-ID"] == message_id and r.mail_from not in NULL_SENDERS]
        if found:
            (one,) = found
            return one
        time.sleep(0.05)
    raise AssertionError(f"{message_id} never reached the sink{postfix.log_tail()}\n"
                         f"{daemon.log[-3000:]}")


def reply_bytes(message_id: str, in_reply_to: str) -> bytes:
    return (f"From: Service client <{SERVICE}>\r\nTo: {CUSTOMER}\r\nSubject: Re: Facture\r\n"
            f"Message-ID: {message_id}\r\nIn-Reply-To: {in_reply_to}\r\n\r\n"
            "Voici votre facture corrigée.\r\n").encode()


def roles(daemon: Daemon) -> list[tuple[str, str]]:
    with sqlite3.connect(daemon.db) as db:
        return list(db.execute("SELECT role, sender FROM case_messages ORDER BY id"))


def test_an_agent_logged_in_on_submission_answers_as_the_shared_mailbox(
        stack: tuple[PostfixInstance, Daemon, Sink]) -> None:
    postfix, daemon, sink = stack
    question = make_msgid(domain="customer.test")
    with client(postfix.public_port) as smtp:
        smtp.sendmail(CUSTOMER, [SERVICE], (
            f"From: Nomade <{CUSTOMER}>\r\nTo: {SERVICE}\r\nSubject: Facture\r\n"
            f"Message-ID: {question}\r\n\r\nMa facture est fausse.\r\n").encode())
    relayed, msg = wait_for(sink, postfix, daemon, question)
    case = str(msg["X-Mailflow-Case"])
    assert relayed.rcpt_tos[0] in SAV_TEAM
    # without a login, the submission service relays nothing
    with client(postfix.submission_port) as smtp, pytest.raises(smtplib.SMTPRecipientsRefused):
        smtp.sendmail(SERVICE, [CUSTOMER], reply_bytes("<x@example.com>", question))
    answer = make_msgid(domain="example.com")
    with client(postfix.submission_port) as smtp:
        smtp.ehlo("laptop.home.test")
        smtp.login("alice.moreau@example.com", PASSWORD)
        smtp.sendmail(SERVICE, [CUSTOMER], reply_bytes(answer, question))
    got, reply = wait_for(sink, postfix, daemon, answer)
    assert got.rcpt_tos == [CUSTOMER]
    assert any("Authenticated sender: alice.moreau@example.com" in str(value)
               for value in reply.get_all("Received") or [])
    assert not [n for n in reply if n.lower().startswith("x-mailflow-")]
    postfix.wait_empty()
    # the agent behind the shared mailbox, known by the login: the case's first response
    assert ("agent", "alice.moreau@example.com") in roles(daemon)
    with sqlite3.connect(daemon.db) as db:
        ((number,),) = db.execute("SELECT case_number FROM case_messages WHERE role = 'agent'")
    assert number == case


def test_the_same_reply_through_the_public_port_is_no_reply(
        stack: tuple[PostfixInstance, Daemon, Sink]) -> None:
    """From an untrusted network an agent's address proves nothing: no agent recorded."""
    postfix, daemon, sink = stack
    before = [r for r in roles(daemon) if r[0] == "agent"]
    forged = make_msgid(domain="evil.test")
    with client(postfix.public_port) as smtp:
        smtp.sendmail("alice.moreau@example.com", [SERVICE],
                        reply_bytes(forged, "<nothing@customer.test>").replace(
                            f"To: {CUSTOMER}".encode(), f"To: {SERVICE}".encode()))
    _, msg = wait_for(sink, postfix, daemon, forged)
    assert msg["X-Mailflow-Case"]  # inbound: a case like any customer's
    postfix.wait_empty()
    assert [r for r in roles(daemon) if r[0] == "agent"] == before
