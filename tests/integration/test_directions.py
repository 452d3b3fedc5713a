"""Only the service's mail, both ways, in the real daemon with the shipped rules.

Loopback is a trusted network here (as behind Postfix): agents write from it.
What we look at is what the next hop (the sink) receives, what the store
keeps, the log line and the metrics.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from clirunner import run_cli
from conftest import NULL_SENDERS, Daemon, Received, Sink, ack_case, full_chain_rules, parse_email

pytestmark = [pytest.mark.slow, pytest.mark.timeout(30)]

SAV_AGENTS = ("alice.moreau@example.com", "bruno.petit@example.com",
              "chloe.roger@example.com")


def mail(sender: str, to: str, subject: str, mid: str, extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{mid}>\r\n"
            f"Date: Thu, 03 Dec 2026 10:00:00 +0100\r\n{extra}\r\nBonjour,\r\n"
            "une question sur ma commande.\r\n").encode()



def acks(sink: Sink) -> list[Received]:
    return [m for m in sink.messages if m.mail_from in NULL_SENDERS]


def relayed(sink: Sink) -> list[Received]:
    return [m for m in sink.messages if m.mail_from not in NULL_SENDERS]


def query(mf: Daemon, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(mf.db) as db:
        return list(db.execute(sql))


def metric(mf: Daemon, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{mf.metrics_port}/metrics",
                                timeout=5) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


def log_events(mf: Daemon, event: str) -> list[dict[str, Any]]:
    found = []
    for line in mf.log.splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            if item.get("event") == event:
                found.append(item)
    return found


@pytest.fixture
def mf(tmp_path: Path, daemon_factory: Any) -> Daemon:
    rules = full_chain_rules(tmp_path / "rules-src")
    daemon: Daemon = daemon_factory(config={"trusted_networks": ["127.0.0.0/8"]}, rules=rules)
    return daemon


def test_a_suppliers_mail_to_an_employee_passes_untouched(mf: Daemon, sink: Sink) -> None:
    original = mail("Fournisseur <contact@fournisseur.test>", "jean@example.com",
                    "Votre commande de papier", "sup-1@fournisseur.test")
    code, text = mf.send(original, mail_from="contact@fournisseur.test",
                         rcpt_to=["jean@example.com"])
    assert code == 250, text
    (got,) = sink.wait_for(1)
    mf.settle()
    assert got.rcpt_tos == ["jean@example.com"] and got.mail_from == "contact@fournisseur.test"
    assert got.data == original  # the very bytes received: no header of ours
    assert acks(sink) == [] and query(mf, "SELECT COUNT(*) FROM cases") == [(0,)]
    # neither stored nor logged: only the queue id, the direction and the size
    assert query(mf, "SELECT COUNT(*) FROM messages") == [(0,)]
    (line,) = log_events(mf, "message")
    assert line["direction"] == "passthrough" and line["size"] == len(original)
    assert "fournisseur" not in json.dumps(line) and "jean" not in json.dumps(line)
    assert metric(mf, 'mailflow_messages_by_direction_total{direction="passthrough"}') == 1


def test_internal_mail_is_passed_and_counted_apart(mf: Daemon, sink: Sink) -> None:
    original = mail("jean@example.com", "paul@example.com", "Déjeuner ?", "int-1@example.com")
    code, text = mf.send(original, mail_from="jean@example.com", rcpt_to=["paul@example.com"])
    assert code == 250, text
    (got,) = sink.wait_for(1)
    assert got.data == original and got.rcpt_tos == ["paul@example.com"]
    assert metric(mf, 'mailflow_messages_by_direction_total{direction="internal"}') == 1
    assert query(mf, "SELECT COUNT(*) FROM cases") == [(0,)]


def test_customer_mail_with_a_colleague_and_an_outsider_in_cc(mf: Daemon, sink: Sink) -> None:
    """Every recipient served; our routing headers only on the company's copy; the ack
    from the service mailbox written to."""
    original = mail("Claire <claire@client.test>", "sav@example.com", "Ma commande",
                    "cc-1@client.test", "Cc: jean@example.com, ami@elsewhere.test\r\n")
    code, text = mf.send(original, mail_from="claire@client.test",
                         rcpt_to=["sav@example.com", "jean@example.com", "ami@elsewhere.test"])
    assert code == 250, text
    sink.wait_for(3)
    mf.settle()
    copies = {tuple(m.rcpt_tos): parse_email(m.data) for m in relayed(sink)}
    (inside,) = [k for k in copies if "jean@example.com" in k]
    assert inside[0] in SAV_AGENTS and inside[1] == "jean@example.com"
    assert copies[inside]["X-Mailflow-Route"] == "sav"
    outside = copies[("ami@elsewhere.test",)]
    assert not [name for name in outside if name.lower().startswith("x-mailflow-")]
    assert outside["Message-ID"] == "<cc-1@client.test>"
    (ack,) = acks(sink)
    assert ack.rcpt_tos == ["claire@client.test"]
    ack_msg = parse_email(ack.data)
    assert ack_msg["From"].addresses[0].addr_spec == "sav@example.com"
    assert ack_case(ack_msg) == copies[inside]["X-Mailflow-Case"]


def test_an_agents_reply_is_recorded_and_leaves_clean(mf: Daemon, sink: Sink) -> None:
    code, _ = mf.send(mail("Claire <claire@client.test>", "sav@example.com", "Ma commande",
                           "q-1@client.test"), mail_from="claire@client.test")
    assert code == 250
    sink.wait_for(2)
    mf.settle()
    (first,) = relayed(sink)
    case, agent = parse_email(first.data)["X-Mailflow-Case"], first.rcpt_tos[0]
    sink.reset()
    answer = mail(f"Alice <{agent}>", "claire@client.test", f"Re: [{case}] Ma commande",
                  "a-1@example.com", "In-Reply-To: <q-1@client.test>\r\n"
                  "X-Mailflow-Priority: urgent\r\n")
    code, text = mf.send(answer, mail_from=agent, rcpt_to=["claire@client.test"])
    assert code == 250, text
    (got,) = sink.wait_for(1)
    mf.settle()
    assert got.rcpt_tos == ["claire@client.test"]
    assert b"X-Mailflow-" not in got.data.split(b"\r\n\r\n", 1)[0]
    assert acks(sink) == []  # no ack, no new case
    assert query(mf, "SELECT COUNT(*) FROM cases") == [(1,)]
    assert query(mf, "SELECT role, sender FROM case_messages WHERE role = 'agent'") == [
        ("agent", agent)]
    shown = run_cli("cases", "show", case, "--config", str(mf.config_path))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert any(" inbound  customer claire@client.test" in line for line in lines), lines
    assert any(f" reply    agent    {agent}" in line for line in lines), lines
    assert "customer     claire@client.test" in shown.stdout
    assert "first reply  " in shown.stdout and "not yet" not in shown.stdout
    assert metric(mf, 'mailflow_replies_total{outcome="joined"}') == 1


def test_an_agent_writing_about_no_case_opens_nothing(mf: Daemon, sink: Sink) -> None:
    original = mail("alice.moreau@example.com", "ami@elsewhere.test", "Samedi",
                    "perso-1@example.com")
    code, text = mf.send(original, mail_from="alice.moreau@example.com",
                         rcpt_to=["ami@elsewhere.test"])
    assert code == 250, text
    (got,) = sink.wait_for(1)
    mf.settle()
    assert got.data == original and acks(sink) == []
    assert query(mf, "SELECT COUNT(*) FROM cases") == [(0,)]
    assert metric(mf, 'mailflow_replies_total{outcome="no_case"}') == 1
    assert metric(mf, 'mailflow_messages_by_direction_total{direction="passthrough"}') == 1


def test_a_trusted_client_relaying_outside_gets_no_ack(mf: Daemon, sink: Sink) -> None:
    original = mail("app@example.com", "victim@gmail.test", "Newsletter", "nl-1@example.com")
    code, text = mf.send(original, mail_from="app@example.com", rcpt_to=["victim@gmail.test"])
    assert code == 250, text
    (got,) = sink.wait_for(1)
    mf.settle()
    assert got.data == original and acks(sink) == []


def test_a_colleagues_mail_to_the_service_is_a_case_unless_the_rules_say_otherwise(
        mf: Daemon, tmp_path: Path, daemon_factory: Any, sink: Sink) -> None:
    note = mail("jean@example.com", "sav@example.com", "Imprimante", "col-1@example.com")
    code, text = mf.send(note, mail_from="jean@example.com", rcpt_to=["sav@example.com"])
    assert code == 250, text
    (routed,) = sink.wait_for(1)  # a case, the colleague its customer (no ack: one of ours)
    mf.settle()
    assert parse_email(routed.data)["X-Mailflow-Case"] and routed.rcpt_tos != ["sav@example.com"]
    assert query(mf, "SELECT customer FROM cases") == [("jean@example.com",)]
    sink.reset()
    rules = full_chain_rules(tmp_path / "rules-colleagues", route={"colleague_mail": "internal"})
    quiet: Daemon = daemon_factory(config={"trusted_networks": ["127.0.0.0/8"]}, rules=rules)
    code, text = quiet.send(note, mail_from="jean@example.com", rcpt_to=["sav@example.com"])
    assert code == 250, text
    (got,) = sink.wait_for(1)
    quiet.settle()
    assert got.data == note and got.rcpt_tos == ["sav@example.com"] and acks(sink) == []
    assert query(quiet, "SELECT COUNT(*) FROM cases") == [(0,)]
    assert metric(quiet, 'mailflow_messages_by_direction_total{direction="internal"}') == 1
    (tmp_path / "col.eml").write_bytes(note)
    tried = run_cli("try", str(tmp_path / "col.eml"), "--config", str(quiet.config_path),
                    "--state-dir", str(tmp_path / "try-state"), "--peer", "127.0.0.1")
    assert tried.returncode == 0, tried.stderr
    assert "direction internal (a colleague's mail to a service mailbox" in tried.stdout


def test_a_forged_agent_from_outside_is_customer_mail(tmp_path: Path, daemon_factory: Any,
                                                      sink: Sink) -> None:
    """Loopback not trusted: an agent's address is no proof, its mail is inbound."""
    outsider: Daemon = daemon_factory(rules=full_chain_rules(tmp_path / "rules-out"))
    code, text = outsider.send(mail("alice.moreau@example.com", "sav@example.com", "Hello",
                                    "forged-1@evil.test"), mail_from="alice.moreau@example.com")
    assert code == 250, text
    (got,) = sink.wait_for(1)
    assert parse_email(got.data)["X-Mailflow-Case"]
    assert query(outsider, "SELECT role FROM case_messages") == [("customer",)]


def test_a_next_hop_vanishing_after_the_data(mf: Daemon, sink: Sink) -> None:
    """It may have the message: 4xx, nothing sent again; the client's retry is delivered,
    marked, in the same case, to the same assignee, and the case gets one ack."""
    original = mail("Claire <claire@client.test>", "sav@example.com", "Ma commande",
                    "vanish-1@client.test")
    sink.handler.vanish_after_data = 1
    code, text = mf.send(original, mail_from="claire@client.test")
    assert code == 451 and text.startswith(b"4.4.2"), text
    (first,) = sink.wait_for(1)
    case = parse_email(first.data)["X-Mailflow-Case"]
    code, text = mf.send(original, mail_from="claire@client.test")  # the client retries
    assert code == 250, text
    mf.settle()
    copies = relayed(sink)
    assert len(copies) == 2
    retry = parse_email(copies[1].data)
    assert retry["X-Mailflow-Case"] == case and retry["X-Mailflow-Duplicate"] == case
    assert copies[1].rcpt_tos == first.rcpt_tos  # the same assignee
    (ack,) = acks(sink)
    assert ack_case(parse_email(ack.data)) == case
    assert query(mf, "SELECT number FROM cases") == [(case,)]
    assert query(mf, "SELECT state FROM messages ORDER BY received_at") == [
        ("unknown",), ("delivered",)]



def test_the_companys_copy_vanishing_while_the_outside_copy_is_taken(mf: Daemon,
                                                                     sink: Sink) -> None:
    """Two copies (ours with routing headers, the outsider's without): the next hop vanishes
    after the first one's data and takes the second. The client hears 250 (a copy was
    accepted: a retry would send it twice); our copy is retried from the outbox, marked,
    since the first attempt may have arrived; the outsider's never carries our headers."""
    original = mail("Claire <claire@client.test>", "sav@example.com",
                    "Ma commande", "vanish-2@client.test", "Cc: ami@elsewhere.test\r\n")
    sink.handler.vanish_after_data = 1
    code, text = mf.send(original, mail_from="claire@client.test",
                         rcpt_to=["sav@example.com", "ami@elsewhere.test"])
    assert code == 250, text
    sink.wait_for(4)  # our copy twice, the outsider's once, the ack
    mf.settle()
    ours = [m for m in relayed(sink) if "ami@elsewhere.test" not in m.rcpt_tos]
    (theirs,) = [m for m in relayed(sink) if m.rcpt_tos == ["ami@elsewhere.test"]]
    assert len(ours) == 2 and ours[0].rcpt_tos == ours[1].rcpt_tos
    first, again = (parse_email(m.data) for m in ours)
    case = first["X-Mailflow-Case"]
    assert first["X-Mailflow-Duplicate"] is None and again["X-Mailflow-Duplicate"] == case
    assert b"X-Mailflow-" not in theirs.data.partition(b"\r\n\r\n")[0]
    assert len(acks(sink)) == 1
