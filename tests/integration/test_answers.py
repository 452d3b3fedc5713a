"""Suggested answers in the real daemon, with a real next hop, for the sample company.

A customer asks sav@ about a late delivery: the case goes to an agent of the
after-sales team (round robin: alice first) and beside it a companion holding the
delivery-delay answer filled in, with its own reply address. The agent replies
through the submission listener (where agents write from), in Outlook's or
Thunderbird's shape, text or HTML, edited or not: the customer gets the answer,
threaded on their message, from sav@, without any of the companion's quoting, and
the agent a copy; the case records it as its first response. The same reply
through the main listener (loopback is not trusted here: a stranger's network)
sends nothing to the customer. A robot's mail gets no companion.
"""

from __future__ import annotations

import re
import smtplib
import sqlite3
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from clirunner import run_cli
from conftest import FULL_CHAIN, Daemon, Received, Sink, full_chain_rules, parse_email
from mailflow.testing.nexthop import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CUSTOMER = "claire.martin@client.test"
AGENT = "alice.moreau@example.com"
#: the shipped chain: the whole chain with the answers stage
CHAIN = FULL_CHAIN.replace("acknowledge,", "acknowledge, answers,")
REPLY_TO = re.compile(r"answers\+([A-Z0-9-]+)\.([0-9a-f]{24})@example\.com")
QUESTION = ("From: Claire Martin <claire.martin@client.test>\r\nTo: sav@example.com\r\n"
            "Subject: Retard de livraison commande 48213\r\n"
            "Message-ID: <{mid}@client.test>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            "Bonjour,\r\n\r\nMa commande 48213 devait être livrée mardi, nous sommes jeudi et"
            " toujours rien.\r\nQuand vais-je recevoir mon colis ?\r\n\r\nCordialement,\r\n"
            "Claire Martin\r\n")


@pytest.fixture
def daemon(daemon_factory: Any, tmp_path: Path) -> Daemon:
    rules = full_chain_rules(tmp_path / "rules-src", CHAIN)
    d: Daemon = daemon_factory(config={"submission_listen": f"127.0.0.1:{free_port()}"},
                               rules=rules)
    return d


def wait_for(sink: Sink, test: Any, count: int = 1, timeout: float = 10.0) -> list[Received]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in sink.messages if test(m)]
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"expected {count} message(s), got {len(sink.messages)} in all")


def ask(d: Daemon, sink: Sink, mid: str) -> tuple[str, str, EmailMessage]:
    """The customer's question sent in: (case, reply address, the companion)."""
    code, text = d.send(QUESTION.format(mid=mid).encode(), mail_from=CUSTOMER,
                        rcpt_to=["sav@example.com"])
    assert code == 250, text
    (companion,) = wait_for(sink, lambda m: AGENT in m.rcpt_tos and b"Reply-To: answers+"
                            in m.data and mid.encode() in m.data)
    msg = parse_email(companion.data)
    found = REPLY_TO.fullmatch(str(msg["Reply-To"]))
    assert found is not None, msg["Reply-To"]
    return found.group(1), str(msg["Reply-To"]), msg


def submit(d: Daemon, data: bytes, rcpt: str, *, submission: bool = True) -> tuple[int, bytes]:
    port = int(str(d.config["submission_listen"]).rsplit(":", 1)[1]) if submission else d.port
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("agent.example.com")
        client.mail(AGENT)
        client.rcpt(rcpt)
        return client.data(data)


def outlook_html(reply_to: str, companion: str, mine: str) -> bytes:
    quoted = "<br>".join(companion.splitlines())
    html = (f"<html><body><div>{mine}</div><br><div id=\"divRplyFwdMsg\"><hr>"
            "<b>De :</b> Service client &lt;sav@example.com&gt;<br><b>Envoyé :</b> jeudi 3"
            " décembre 2026 10:05<br><b>À :</b> Alice Moreau<br><b>Objet :</b> LIV-01</div>"
            f"<div>{quoted}</div></body></html>")
    return (f"From: Alice Moreau <{AGENT}>\r\nTo: {reply_to}\r\nSubject: RE: LIV-01\r\n"
            f"Message-ID: <ol-{time.monotonic_ns()}@example.com>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n").encode()


def thunderbird_text(reply_to: str, companion: str, mine: str) -> bytes:
    quoted = "\r\n".join(f"> {line}".rstrip() for line in companion.splitlines())
    body = (f"{mine}\r\n\r\nLe 03/12/2026 à 10:05, Service client a écrit :\r\n{quoted}\r\n")
    return (f"From: Alice Moreau <{AGENT}>\r\nTo: {reply_to}\r\nSubject: Re: LIV-01\r\n"
            f"Message-ID: <tb-{time.monotonic_ns()}@example.com>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=UTF-8; format=flowed\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n" + body).encode()


def to_customer(sink: Sink) -> list[Received]:
    return [m for m in sink.messages if CUSTOMER in m.rcpt_tos
            and b"Auto-Submitted: auto-replied" not in m.data]


def case_roles(d: Daemon, case: str) -> list[str]:
    with sqlite3.connect(d.db) as db:
        return [r[0] for r in db.execute("SELECT role FROM case_messages WHERE"
                                         " case_number = ? ORDER BY id", (case,))]


@pytest.mark.parametrize(("shape", "mine"), [
    ("outlook", ""), ("outlook", "Bonjour Claire, votre colis part ce soir. Alice"),
    ("thunderbird", ""), ("thunderbird", "Bonjour Claire,\r\n\r\nC'est reparti ce matin.\r\n\r\n"
                                         "Cordialement,\r\nAlice")])
def test_the_agent_sends_the_companion_in_one_reply(daemon: Daemon, sink: Sink, shape: str,
                                                    mine: str) -> None:
    case, reply_to, companion = ask(daemon, sink, f"q-{shape}-{bool(mine)}")
    body = companion.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert text.startswith("Bonjour Claire Martin,") and case in text
    assert "{{" not in text and "Alice Moreau" in text
    assert "LIV-01" in str(companion["Subject"])
    daemon.settle()
    build = outlook_html if shape == "outlook" else thunderbird_text
    code, said = submit(daemon, build(reply_to, text, mine), reply_to)
    assert code == 250, said
    (answer,) = wait_for(sink, lambda m: m in to_customer(sink))
    daemon.settle()
    assert answer.rcpt_tos == [CUSTOMER, AGENT]  # the agent's copy: the same bytes
    sent = parse_email(answer.data)
    assert sent["From"].addresses[0].addr_spec == "sav@example.com"
    assert sent["In-Reply-To"] == f"<q-{shape}-{bool(mine)}@client.test>"
    assert str(sent["Subject"]).startswith("Re: Retard de livraison")
    assert not any(h.lower().startswith("x-mailflow-") and h.lower() != "x-mailflow-loop"
                   for h in sent)
    got = sent.get_body(("plain",))
    assert got is not None
    content = got.get_content()
    for quoting in ("a écrit", "De :", "Envoyé", ">", "answers+"):
        assert quoting not in content
    if mine:
        assert content.split()[:3] == mine.split()[:3]
        assert "Nous avons interrogé le transporteur" not in content
    else:
        assert content.strip() == text.strip()
    assert "agent" in case_roles(daemon, case)
    shown = run_cli("cases", "show", case, "--config", str(daemon.config_path))
    assert "first reply" in shown.stdout and "companion" in shown.stdout
    assert f"sent by {AGENT}" in shown.stdout and "suggested    1. LIV-01" in shown.stdout


def test_the_same_reply_from_elsewhere_sends_nothing(daemon: Daemon, sink: Sink) -> None:
    _, reply_to, companion = ask(daemon, sink, "q-untrusted")
    body = companion.get_body(("plain",))
    assert body is not None
    code, said = submit(daemon, thunderbird_text(reply_to, body.get_content(), "OK"),
                        reply_to, submission=False)
    assert code == 250, said  # inbound mail to a service mailbox, like any other
    daemon.settle()
    assert to_customer(sink) == []


def test_a_robot_gets_no_suggestion(daemon: Daemon, sink: Sink) -> None:
    robot = ("From: Alerts <noreply@shop.client.test>\r\nTo: sav@example.com\r\n"
             "Subject: Retard de livraison commande 48213\r\nAuto-Submitted: auto-generated\r\n"
             "Message-ID: <robot-1@client.test>\r\n\r\nVotre colis est en retard de"
             " livraison, commande toujours pas reçue.\r\n").encode()
    code, _ = daemon.send(robot, mail_from="noreply@shop.client.test",
                          rcpt_to=["sav@example.com"])
    assert code == 250
    wait_for(sink, lambda m: b"robot-1@client.test" in m.data)
    daemon.settle()
    assert not [m for m in sink.messages if b"Reply-To: answers+" in m.data]


def test_answers_search_finds_answers_and_check_catches_a_broken_one(tmp_path: Path) -> None:
    rules = full_chain_rules(tmp_path / "rules", CHAIN)
    found = run_cli("answers", "search", "mot de passe oublié", "--rules", str(rules))
    assert found.returncode == 0 and "CPT-01" in found.stdout.splitlines()[1]
    broken = rules / "answers" / "livraison" / "delivery-delay.fr.md"
    broken.write_text(broken.read_text(encoding="utf-8").replace("{{ case }}", "{{ cas }}"),
                      encoding="utf-8")
    checked = run_cli("check", "--rules", str(rules))
    assert checked.returncode == 2
    assert "delivery-delay.fr.md:" in checked.stderr and "did you mean 'case'" in checked.stderr
