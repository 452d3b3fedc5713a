"""Agents writing from anywhere: Postfix's submission service (STARTTLS, then a SASL
login checked against the sasldb in its chroot) feeding mailflow's second listener,
configured with the guide's files (deploy/postfix/master.cf's "submission" entry,
sasl/smtpd.conf, main.cf's TLS and SASL settings) and its steps for the sasldb.

    customer ─▶ Postfix port 25 ─▶ mailflow (content_filter) ─▶ reinjection ─▶ company
    agent (STARTTLS, AUTH PLAIN) ─▶ Postfix submission (chrooted) ─▶ mailflow's
        submission listener ─▶ reinjection ─▶ the internet (the customer)

The daemon trusts 127.0.0.1 only (Postfix, as deploy/mailflow.yaml does), and the test's
clients connect from 127.0.0.2, an address it does not trust, as an agent at home
would: Postfix's XFORWARD names it. An agent's mail is then a reply only because it
came through the submission listener, and the agent writing as the shared mailbox
(``From: sav@``) is known by the login Postfix records in its Received header
(``smtpd_sasl_authenticated_header``). The same message sent to port 25 is no reply.
"""

from __future__ import annotations

import smtplib
import sqlite3
from collections.abc import Iterator
from email.utils import make_msgid

import pytest

from conftest import full_chain_rules
from postfix import Stack, running_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

SERVICE = "sav@example.com"
CUSTOMER = "nomade@customer.test"
AGENT = "alice.moreau@example.com"
PASSWORD = "s3cret-of-alice"
SAV_TEAM = (AGENT, "bruno.petit@example.com", "chloe.roger@example.com")
AWAY = "127.0.0.2"  # the clients' source address: loopback, but not trusted


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("postfix-submission")
    with running_stack(root, full_chain_rules(root / "rules"),
                       {"trusted_networks": ["127.0.0.1/32"]},
                       logins={login: PASSWORD for login in SAV_TEAM}) as stack:
        yield stack


def reply_bytes(message_id: str, in_reply_to: str) -> bytes:
    return (f"From: Service client <{SERVICE}>\r\nTo: {CUSTOMER}\r\nSubject: Re: Facture\r\n"
            f"Message-ID: {message_id}\r\nIn-Reply-To: {in_reply_to}\r\n\r\n"
            "Voici votre facture corrigée.\r\n").encode()


def roles(stack: Stack) -> list[tuple[str, str]]:
    with sqlite3.connect(stack.daemon.db) as db:
        return list(db.execute("SELECT role, sender FROM case_messages ORDER BY id"))


def test_an_agent_logged_in_on_submission_answers_as_the_shared_mailbox(stack: Stack) -> None:
    question = make_msgid(domain="customer.test")
    stack.send(CUSTOMER, (f"From: Nomade <{CUSTOMER}>\r\nTo: {SERVICE}\r\nSubject: Facture\r\n"
                          f"Message-ID: {question}\r\n\r\nMa facture est fausse.\r\n").encode(),
               SERVICE, source=AWAY)
    relayed, msg = stack.relayed(question)
    case = str(msg["X-Mailflow-Case"])
    assert relayed.rcpt_tos[0] in SAV_TEAM

    answer = make_msgid(domain="example.com")
    stack.submit(AGENT, PASSWORD, SERVICE, reply_bytes(answer, question), CUSTOMER,
                 source=AWAY)
    got, reply = stack.relayed(answer, at=stack.internet)
    assert got.rcpt_tos == [CUSTOMER]
    received = [str(value) for value in reply.get_all("Received") or []]
    assert any(f"Authenticated sender: {AGENT}" in value for value in received), received
    assert any("with ESMTPSA id" in value for value in received), received  # TLS, AUTH
    assert not [n for n in reply if n.lower().startswith("x-mailflow-")]
    stack.postfix.wait_empty()
    # the agent behind the shared mailbox, known by the login: the case's first response
    assert ("agent", AGENT) in roles(stack)
    with sqlite3.connect(stack.daemon.db) as db:
        ((number,),) = db.execute("SELECT case_number FROM case_messages WHERE role = 'agent'")
    assert number == case


def test_the_submission_port_relays_nothing_without_tls_and_a_login(stack: Stack) -> None:
    """No AUTH before STARTTLS (smtpd_tls_auth_only), no mail in clear
    (smtpd_tls_security_level=encrypt), no relay without a login, a wrong password
    refused."""
    reply = reply_bytes(make_msgid(domain="example.com"), "<x@customer.test>")
    with stack.client(stack.postfix.submission_port, AWAY) as smtp:
        smtp.ehlo("laptop.home.test")
        assert not smtp.has_extn("auth")
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            smtp.sendmail(SERVICE, [CUSTOMER], reply)
        assert refused.value.smtp_code == 530  # Must issue a STARTTLS command first
    with stack.client(stack.postfix.submission_port, AWAY) as smtp:
        smtp.starttls(context=stack.postfix.tls_context)
        smtp.ehlo("laptop.home.test")
        assert smtp.has_extn("auth")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.sendmail(SERVICE, [CUSTOMER], reply)
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login(AGENT, "not-the-password")
    stack.postfix.wait_empty()


def test_the_same_reply_through_port_25_is_no_reply(stack: Stack) -> None:
    """From an untrusted network an agent's address proves nothing: no agent recorded."""
    before = [r for r in roles(stack) if r[0] == "agent"]
    forged = make_msgid(domain="evil.test")
    stack.send(AGENT, reply_bytes(forged, "<nothing@customer.test>").replace(
        f"To: {CUSTOMER}".encode(), f"To: {SERVICE}".encode()), SERVICE, source=AWAY)
    _, msg = stack.relayed(forged)
    assert msg["X-Mailflow-Case"]  # inbound: a case like any customer's
    stack.postfix.wait_empty()
    assert [r for r in roles(stack) if r[0] == "agent"] == before
