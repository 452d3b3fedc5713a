"""mailflow behind a real Postfix, configured with the guide's files (deploy/postfix/).

One private Postfix (tests/postfix.py: the shipped main.cf and master.cf, on other
ports) and one daemon for the module:

    smtplib ─▶ Postfix port 25 ─▶ queue ─▶ mailflow (content_filter)
            ─▶ Postfix reinjection smtpd ─▶ queue ─▶ example.com: the company server
                                                  ─▶ anywhere else: the internet

The daemon runs the shipped rules' full chain and trusts loopback, as
deploy/mailflow.yaml does; its next hop is Postfix's reinjection smtpd, so its
acknowledgements go through Postfix too. What we look at is what the company mail
server and the internet (two sinks) receive, and what Postfix's queue holds.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest

from conftest import NULL_SENDERS, ack_case, full_chain_rules, is_ack, parse_email
from mailflow.cases import ANY_NUMBER
from postfix import (
    ADDITIONS_MARK,
    DEBIAN_MASTER_CF,
    DEPLOY,
    FILES,
    HOSTNAME,
    Stack,
    question,
    received_by,
    running_stack,
    version,
    write_settled,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(60),  # each test, the module's Postfix and daemon start included
]

SERVICE = "sav@example.com"  # a service mailbox of the shipped rules (route: team sav)
SAV_TEAM = ("alice.moreau@example.com", "bruno.petit@example.com", "chloe.roger@example.com")
#: the services deploy/postfix/master.cf has and Debian's has not (its "#submission" block
#: is commented out)
MAILFLOWS_SERVICES = {("submission", "inet"), ("mailflow", "unix"),
                      ("mailflow-submission", "unix"), ("127.0.0.1:10026", "inet")}


def case_of(msg: EmailMessage) -> str:
    """The one case number mailflow gave a relayed message."""
    cases = msg.get_all("X-Mailflow-Case") or []
    assert len(cases) == 1, f"X-Mailflow-Case: {cases}"
    assert ANY_NUMBER.fullmatch(str(cases[0])), cases[0]
    return str(cases[0])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("postfix")
    with running_stack(root, full_chain_rules(root / "rules"),
                       {"trusted_networks": ["127.0.0.0/8"]},
                       logins={"alice.moreau@example.com": "s3cret"}) as stack:
        yield stack


@pytest.fixture
def running(stack: Stack) -> Stack:
    """The stack with mailflow up (a test that stopped it and failed left it down)."""
    print(f"Postfix {version()} maillog: {stack.postfix.maillog}\n"
          f"daemon log: {stack.daemon.log_path}")
    if stack.daemon.proc is None:
        stack.start_mailflow()
    return stack


def test_the_guides_files_run_as_shipped(running: Stack) -> None:
    """The private Postfix runs deploy/postfix/ verbatim: each installed file is the
    shipped one with exactly the changes PostfixInstance.changes() lists (ports, paths,
    the company server's address), main.cf with the additions it lists at its end."""
    postfix = running.postfix
    for name in FILES:
        installed = (postfix.config_dir / name).read_text(encoding="utf-8")
        if name == "main.cf":
            installed, mark, added = installed.partition(ADDITIONS_MARK)
            assert mark and added.splitlines() == [line for line, _ in postfix.additions()]
        for change in postfix.changes():
            if change.file == name:
                assert installed.count(change.test) == 1, (name, change)
                installed = installed.replace(change.test, change.shipped)
        assert installed == (DEPLOY / name).read_text(encoding="utf-8"), name
    assert (postfix.config_dir / "transport.db").exists()  # postmap, as the guide says


def test_postfix_check_and_start_warn_of_nothing(running: Stack) -> None:
    """``postfix check`` (the guide's step before ``start``) and the start itself: no
    warning, no duplicate master.cf entry. The one expected: postfix check compares the
    chroot's sasldb with the machine's /etc/sasldb2, which the guide copies from (here
    the test's own sasldb: the machine's is not the test's to change)."""
    postfix = running.postfix
    expected = f"{postfix.queue_dir}/etc/sasldb2 and /etc/sasldb2 differ"
    assert [line for line in postfix.check() if expected not in line] == []
    assert "daemon started" in postfix.started_log
    assert [line for line in postfix.started_log.splitlines()
            if ("warning:" in line or "fatal:" in line) and expected not in line] == [], (
        postfix.log_tail())


def services(master_cf: Path, tmp: Path) -> dict[tuple[str, str], str]:
    """master.cf's services as ``postconf -M`` reads them: (name, type) -> the entry on
    one line (its -o options included)."""
    write_settled(tmp / "main.cf", f"compatibility_level = 3.6\nmyhostname = {HOSTNAME}\n")
    write_settled(tmp / "master.cf", master_cf.read_text(encoding="utf-8"))
    done = subprocess.run(["/usr/sbin/postconf", "-c", str(tmp), "-M"], check=True,
                          capture_output=True, text=True, timeout=10)
    assert not done.stderr, done.stderr  # postconf's own warnings
    found: dict[tuple[str, str], str] = {}
    for line in done.stdout.splitlines():
        name, kind, rest = line.split(None, 2)
        assert (name, kind) not in found, f"two {name} {kind} entries in {master_cf}"
        found[name, kind] = " ".join(rest.split())
    return found


def test_master_cf_is_debians_with_mailflows_services(tmp_path: Path) -> None:
    """deploy/postfix/master.cf is the master.cf Debian installs, every entry of it
    unchanged, plus mailflow's: Debian's "#submission" block switched on in place (its
    very options, then mailflow's two), not a second entry."""
    ours = services(DEPLOY / "master.cf", tmp_path / "ours")
    debian = services(DEBIAN_MASTER_CF, tmp_path / "debian")
    assert set(ours) - set(debian) == MAILFLOWS_SERVICES
    assert {key: ours[key] for key in debian} == debian
    commented = re.search(r"^#submission inet .*?\n(?=#\S|[^#])", DEBIAN_MASTER_CF.read_text(
        encoding="utf-8"), re.MULTILINE | re.DOTALL)
    assert commented, f"no #submission block in {DEBIAN_MASTER_CF}"
    options = [line.removeprefix("#  -o ") for line in commented.group(0).splitlines()
               if line.startswith("#  -o ")]
    entry = ours["submission", "inet"].split(" -o ")
    assert entry[0] == "n - y - - smtpd"  # Debian's, chroot included
    assert entry[1:] == [*options, "smtpd_sasl_authenticated_header=yes",
                         "content_filter=mailflow-submission:[127.0.0.1]:10027"]
    shipped = (DEPLOY / "master.cf").read_text(encoding="utf-8")
    assert "\n#submission inet" not in shipped and "\nsubmission inet" in shipped


def test_customer_mail_goes_through_postfix_mailflow_postfix(running: Stack) -> None:
    customer = "client@customer.test"
    message_id, data = question(customer, "Question sur ma commande",
                                "Bonjour, quand ma commande 4242 sera-t-elle livrée ?")
    running.send(customer, data, SERVICE)

    relayed, msg = running.relayed(message_id)  # at the company server
    case = case_of(msg)
    assert relayed.mail_from == customer
    assert len(relayed.rcpt_tos) == 1 and relayed.rcpt_tos[0] in SAV_TEAM  # route's choice
    # Postfix (public smtpd) -> mailflow -> Postfix (reinjection), newest first
    assert received_by(msg)[:3] == [HOSTNAME, "mailflow.test", HOSTNAME]

    ack, ack_msg = running.ack_of(message_id, customer)  # out to the internet
    assert ack.mail_from in NULL_SENDERS
    assert ack_case(ack_msg) == case
    assert received_by(ack_msg)[0] == HOSTNAME  # the outbox's next hop is Postfix
    running.postfix.wait_empty()


def test_the_relayhost_alternative_sends_everything_to_the_company_server(
        running: Stack) -> None:
    """main.cf's other way, ``relayhost`` uncommented: the acknowledgement to the
    customer goes to the company mail server too, not to the internet."""
    customer = "relayhost@customer.test"
    message_id, data = question(customer, "Livraison", "Bonjour, où est mon colis ?")
    running.postfix.use_relayhost(True)
    try:
        running.send(customer, data, SERVICE)
        running.relayed(message_id)
        ack, _ = running.wait_for(f"acknowledgement of {message_id}", running.company,
                                  lambda r, m: is_ack(r, m) and m["In-Reply-To"] == message_id)
        assert ack.rcpt_tos == [customer]
        running.postfix.wait_empty()
    finally:
        running.postfix.use_relayhost(False)
        running.company.reset()  # the ack there is no misrouting for the next tests


def test_mail_waits_in_postfix_while_mailflow_is_down(running: Stack) -> None:
    customer = "waiting@customer.test"
    message_id, data = question(customer, "Facture manquante",
                                "Bonjour, je n'ai pas reçu la facture de mars.")
    assert running.daemon.stop() == 0
    running.send(customer, data, SERVICE)  # Postfix takes it: 250 to the internet

    waiting = running.postfix.wait_deferred(customer)
    assert waiting.recipients == (SERVICE,)
    assert any("Connection refused" in reason for reason in waiting.reasons), waiting
    assert not [r for sink in (running.company, running.internet) for r in sink.messages
                if parse_email(r.data)["Message-ID"] == message_id]

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
    running.send(customer, data, SERVICE)

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
    got, msg = running.relayed(supplier_id)
    assert got.rcpt_tos == ["jean@example.com"]
    assert got.data.endswith(original)  # Postfix's Received lines, then the very bytes
    assert not [n for n in msg if n.lower().startswith("x-mailflow-")]

    customer = "cc@customer.test"
    message_id, data = question(customer, "Ma commande", "Bonjour, où en est-elle ?",
                                headers="Cc: jean@example.com, ami@elsewhere.test\r\n")
    running.send(customer, data, SERVICE, "jean@example.com", "ami@elsewhere.test")
    company, mine = running.relayed(message_id)  # the service's copy, and the colleague's
    assert "jean@example.com" in company.rcpt_tos
    assert [r for r in company.rcpt_tos if r in SAV_TEAM]
    assert mine["X-Mailflow-Route"] == "sav"
    outside, theirs = running.relayed(message_id, at=running.internet)
    assert outside.rcpt_tos == ["ami@elsewhere.test"]
    assert not [n for n in theirs if n.lower().startswith("x-mailflow-")]
    running.ack_of(message_id, customer)
    running.postfix.wait_empty()


def test_an_agents_reply_leaves_clean_and_is_recorded(running: Stack) -> None:
    customer = "answered@customer.test"
    message_id, data = question(customer, "Remboursement", "Bonjour, et mon remboursement ?")
    running.send(customer, data, SERVICE)
    relayed, msg = running.relayed(message_id)
    case, agent = case_of(msg), relayed.rcpt_tos[0]
    reply_id = make_msgid(domain="example.com")
    reply = (f"From: {agent}\r\nTo: {customer}\r\nSubject: Re: Remboursement\r\n"
             f"Message-ID: {reply_id}\r\nIn-Reply-To: {message_id}\r\n\r\n"
             "C'est fait.\r\n").encode()
    running.send(agent, reply, customer)  # from the office (loopback): a reply
    got, reply_msg = running.relayed(reply_id, at=running.internet)
    assert got.rcpt_tos == [customer]
    assert not [n for n in reply_msg if n.lower().startswith("x-mailflow-")]
    running.postfix.wait_empty()
    with sqlite3.connect(running.daemon.db) as db:
        assert list(db.execute("SELECT role, sender FROM case_messages WHERE case_number = ?"
                               " AND role = 'agent'", (case,))) == [("agent", agent)]

