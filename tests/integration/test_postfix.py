"""mailflow behind a real Postfix, configured with the lines of deploy/postfix/.

One private Postfix (tests/postfix.py) and one daemon for the module:

    smtplib ─▶ Postfix public smtpd ─▶ queue ─▶ mailflow (content_filter)
            ─▶ Postfix reinjection smtpd ─▶ queue ─▶ the sink (relayhost)

The daemon runs the shipped rules' full chain and trusts loopback, as
deploy/mailflow.yaml does; its next hop is Postfix's reinjection smtpd, so its
acknowledgements go through Postfix too. What we look at is what the sink (the
company mail server) receives, and what Postfix's queue holds.
"""

from __future__ import annotations

import re
import smtplib
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from conftest import (
    NULL_SENDERS,
    Daemon,
    Received,
    Sink,
    ack_case,
    full_chain_rules,
    is_ack,
    parse_email,
)
from mailflow.cases import ANY_NUMBER
from postfix import PostfixInstance, unavailable, version

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(60),  # each test, the module's Postfix and daemon start included
]

SERVICE = "sav@example.com"  # a service mailbox of the shipped rules (route: team sav)
SAV_TEAM = ("alice.moreau@example.com", "bruno.petit@example.com", "chloe.roger@example.com")
WAIT = 20.0  # seconds a message may take through Postfix, mailflow and Postfix again


@dataclass
class Stack:
    """The module's Postfix, daemon and sink, wired as in production."""

    postfix: PostfixInstance
    daemon: Daemon
    sink: Sink

    def send(self, sender: str, data: bytes, *rcpts: str) -> None:
        """One message into Postfix's public smtpd, as the internet would send it."""
        with smtplib.SMTP("127.0.0.1", self.postfix.public_port, timeout=WAIT) as client:
            client.ehlo("mx.customer.test")
            refused = client.sendmail(sender, list(rcpts or [SERVICE]), data)
            assert not refused, refused

    def wait_for(self, what: str, match: Callable[[Received, EmailMessage], bool],
                 timeout: float = WAIT) -> tuple[Received, EmailMessage]:
        """The one message at the sink that ``match`` picks, polled for up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            found = [(r, m) for r in self.sink.messages for m in [parse_email(r.data)]
                     if match(r, m)]
            if found:
                assert len(found) == 1, f"{what}: {len(found)} copies at the sink"
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} at the sink within {timeout}s"
                                     f"{self.postfix.log_tail()}\n--- daemon log (end) ---\n"
                                     f"{self.daemon.log[-3000:]}")
            time.sleep(0.05)

    def relayed(self, message_id: str) -> tuple[Received, EmailMessage]:
        """The customer's message as the company mail server got it (not an ack)."""
        return self.wait_for(f"relayed copy of {message_id}",
                             lambda r, m: m["Message-ID"] == message_id and not is_ack(r, m))

    def ack_of(self, message_id: str, customer: str) -> tuple[Received, EmailMessage]:
        """mailflow's acknowledgement of ``message_id``, sent to ``customer``."""
        return self.wait_for(f"acknowledgement of {message_id}",
                             lambda r, m: is_ack(r, m) and r.rcpt_tos == [customer]
                             and m["In-Reply-To"] == message_id)




def question(sender: str, subject: str, body: str, headers: str = "") -> tuple[str, bytes]:
    """(Message-ID, bytes) of a customer's plain question to the service mailbox."""
    message_id = make_msgid(domain="customer.test")
    data = (f"From: Client <{sender}>\r\nTo: {SERVICE}\r\nSubject: {subject}\r\n"
            f"Date: Mon, 23 Nov 2026 09:30:00 +0100\r\nMessage-ID: {message_id}\r\n{headers}"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n").encode()
    return message_id, data


def case_of(msg: EmailMessage) -> str:
    """The one case number mailflow gave a relayed message."""
    cases = msg.get_all("X-Mailflow-Case") or []
    assert len(cases) == 1, f"X-Mailflow-Case: {cases}"
    assert ANY_NUMBER.fullmatch(str(cases[0])), cases[0]
    return str(cases[0])


def received_by(msg: EmailMessage) -> list[str]:
    """The hosts of the Received headers, newest first: the path the message took."""
    hosts = []
    for value in msg.get_all("Received") or []:
        by = re.search(r"\sby\s+(\S+)", str(value))  # Postfix folds before "by"
        hosts.append(by.group(1) if by else "?")
    return hosts


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, module_sink: Sink) -> Iterator[Stack]:
    problem = unavailable()
    if problem is not None:  # never a skip: make test installs what this needs
        pytest.fail(f"no private Postfix can run here: {problem}")
    root = tmp_path_factory.mktemp("postfix")
    # each needs the other's port: the daemon's next hop is set once Postfix has its own
    daemon = Daemon(root / "mailflow", "smtp://127.0.0.1:1",
                    {"trusted_networks": ["127.0.0.0/8"]}, full_chain_rules(root / "rules"))
    postfix = PostfixInstance(root / "postfix", relay_port=module_sink.port,
                              filter_port=daemon.port)
    try:
        postfix.start()
        daemon.config["next_hop"] = f"smtp://127.0.0.1:{postfix.reinject_port}"
        start_mailflow(postfix, daemon)
        yield Stack(postfix, daemon, module_sink)
    finally:
        daemon.stop()
        postfix.stop()


def start_mailflow(postfix: PostfixInstance, daemon: Daemon) -> None:
    """mailflow (again: same state), with Postfix's content_filter on its port."""
    daemon.start()
    postfix.retarget(daemon.port)  # only if the daemon had to take another port


@pytest.fixture
def running(stack: Stack) -> Stack:
    """The stack with mailflow up (a test that stopped it and failed left it down)."""
    print(f"Postfix {version()} maillog: {stack.postfix.maillog}\n"
          f"daemon log: {stack.daemon.log_path}")
    if stack.daemon.proc is None:
        start_mailflow(stack.postfix, stack.daemon)
    return stack


def test_customer_mail_goes_through_postfix_mailflow_postfix(running: Stack) -> None:
    customer = "client@customer.test"
    message_id, data = question(customer, "Question sur ma commande",
                                "Bonjour, quand ma commande 4242 sera-t-elle livrée ?")
    running.send(customer, data)

    relayed, msg = running.relayed(message_id)
    case = case_of(msg)
    assert relayed.mail_from == customer
    assert len(relayed.rcpt_tos) == 1 and relayed.rcpt_tos[0] in SAV_TEAM  # route's choice
    # Postfix (public smtpd) -> mailflow -> Postfix (reinjection), newest first
    assert received_by(msg)[:3] == ["postfix.test", "mailflow.test", "postfix.test"]

    ack, ack_msg = running.ack_of(message_id, customer)
    assert ack.mail_from in NULL_SENDERS
    assert ack_case(ack_msg) == case
    assert received_by(ack_msg)[0] == "postfix.test"  # the outbox's next hop is Postfix
    running.postfix.wait_empty()


def test_mail_waits_in_postfix_while_mailflow_is_down(running: Stack) -> None:
    customer = "waiting@customer.test"
    message_id, data = question(customer, "Facture manquante",
                                "Bonjour, je n'ai pas reçu la facture de mars.")
    assert running.daemon.stop() == 0
    running.send(customer, data)  # Postfix takes it: 250 to the internet

    waiting = running.postfix.wait_deferred(customer)
    assert waiting.recipients == (SERVICE,)
    assert any("Connection refused" in reason for reason in waiting.reasons), waiting
    assert not [r for r in running.sink.messages if parse_email(r.data)["Message-ID"] == message_id]

    running.daemon.start()  # same state dir, same port
    # queued mail keeps the content_filter it was queued with: only this port will do
    assert running.daemon.port == running.postfix.filter_port, "mailflow moved ports"
    running.postfix.flush()
    _, msg = running.relayed(message_id)
    case = case_of(msg)
    _, ack_msg = running.ack_of(message_id, customer)
    assert ack_case(ack_msg) == case
    running.postfix.wait_empty()
    running.daemon.settle()
    running.relayed(message_id)  # still exactly one copy: nothing lost, nothing doubled


def test_forged_mailflow_headers_are_removed_by_postfix(running: Stack) -> None:
    customer = "forger@customer.test"
    forged = "SAV-20200101-00001-0"
    message_id, data = question(
        customer, "Demande de rappel", "Bonjour, pouvez-vous me rappeler demain ?",
        headers=f"X-Mailflow-Case: {forged}\r\nX-Mailflow-Priority: urgent\r\n"
                "X-Mailflow-Route: legal\r\n")
    running.send(customer, data)

    _, msg = running.relayed(message_id)
    assert case_of(msg) != forged  # mailflow's own number, the forged header gone
    assert msg.get_all("X-Mailflow-Route") == ["sav"]
    assert (msg.get_all("X-Mailflow-Priority") or ["?"])[0] != "urgent"
    running.ack_of(message_id, customer)
    running.postfix.wait_empty()


def test_only_the_services_mail_is_touched(running: Stack) -> None:
    """A supplier's mail to an employee passes untouched; a colleague in Cc of a
    customer's mail is served, without our routing headers leaving for outside."""
    supplier = "ventes@fournisseur.test"
    supplier_id = make_msgid(domain="fournisseur.test")
    original = (f"From: {supplier}\r\nTo: jean@example.com\r\nSubject: Votre commande\r\n"
                f"Message-ID: {supplier_id}\r\nDate: Thu, 03 Dec 2026 10:00:00 +0100\r\n"
                "\r\nLivraison jeudi.\r\n").encode()
    running.send(supplier, original, "jean@example.com")
    got, msg = running.wait_for("the supplier's mail", lambda r, m: m["Message-ID"] == supplier_id)
    assert got.rcpt_tos == ["jean@example.com"]
    assert got.data.endswith(original)  # Postfix's Received lines, then the very bytes
    assert not [n for n in msg if n.lower().startswith("x-mailflow-")]

    customer = "cc@customer.test"
    message_id, data = question(customer, "Ma commande", "Bonjour, où en est-elle ?",
                                headers="Cc: jean@example.com, ami@elsewhere.test\r\n")
    running.send(customer, data, SERVICE, "jean@example.com", "ami@elsewhere.test")
    copies = {}
    deadline = time.monotonic() + WAIT
    while len(copies) < 3 and time.monotonic() < deadline:
        copies = {rcpt: msg for r in running.sink.messages for msg in [parse_email(r.data)]
                  if msg["Message-ID"] == message_id and not is_ack(r, msg)
                  for rcpt in r.rcpt_tos}
        time.sleep(0.05)
    assert "jean@example.com" in copies and "ami@elsewhere.test" in copies, copies.keys()
    assert [r for r in copies if r in SAV_TEAM]
    assert copies["jean@example.com"]["X-Mailflow-Route"] == "sav"
    assert not [n for n in copies["ami@elsewhere.test"] if n.lower().startswith("x-mailflow-")]
    running.ack_of(message_id, customer)
    running.postfix.wait_empty()


def test_an_agents_reply_leaves_clean_and_is_recorded(running: Stack) -> None:
    customer = "answered@customer.test"
    message_id, data = question(customer, "Remboursement", "Bonjour, et mon remboursement ?")
    running.send(customer, data)
    relayed, msg = running.relayed(message_id)
    case, agent = case_of(msg), relayed.rcpt_tos[0]
    reply_id = make_msgid(domain="example.com")
    reply = (f"From: {agent}\r\nTo: {customer}\r\nSubject: Re: Remboursement\r\n"
             f"Message-ID: {reply_id}\r\nIn-Reply-To: {message_id}\r\n\r\n"
             "C'est fait.\r\n").encode()
    running.send(agent, reply, customer)  # from the office (loopback): a reply
    got, reply_msg = running.wait_for("the agent's reply",
                                      lambda r, m: m["Message-ID"] == reply_id)
    assert got.rcpt_tos == [customer]
    assert not [n for n in reply_msg if n.lower().startswith("x-mailflow-")]
    running.postfix.wait_empty()
    with sqlite3.connect(running.daemon.db) as db:
        assert list(db.execute("SELECT role, sender FROM case_messages WHERE case_number = ?"
                               " AND role = 'agent'", (case,))) == [("agent", agent)]

