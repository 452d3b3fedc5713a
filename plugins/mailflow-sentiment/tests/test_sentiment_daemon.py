"""End to end: the real daemon (``mailflow serve`` on a test clock) relaying to a real
next hop on loopback, the plugin enabled by name as a third party's would be."""

from __future__ import annotations

import email
import sqlite3
import urllib.request
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

MONDAY_9AM = 1795420800.0  # Monday 23 November 2026, 09:00 in Paris
TUESDAY_915 = MONDAY_9AM + 24 * 3600 + 15 * 60
CALENDARS = {"default": {"timezone": "Europe/Paris", "country": "FR",
                         "hours": {d: ["09:00-12:30", "13:30-18:00"] for d in
                                   ("monday", "tuesday", "wednesday", "thursday", "friday")}}}
RULES = {
    "chain": ["number", "prioritise", "sentiment", "route"],
    "calendars": CALENDARS,
    "route": {"default": "sav", "teams": {"sav": {
        "addresses": ["sav@example.com"],
        "members": [{"address": "alice.moreau@example.com", "name": "alice"}]}}},
    "sentiment": {"weight": 5, "digest": {"at": "09:15",
                                          "to": {"sav": "chef-sav@example.com"}}},
}


def mail(text: str, *, subject: str, mid: str, sender: str = "claire@client.example",
         cc: str = "", replying: str = "") -> bytes:
    message = EmailMessage(policy=SMTP)
    message["From"] = f"Claire Martin <{sender}>"
    message["To"] = "sav@example.com"
    if cc:
        message["Cc"] = cc
    message["Subject"] = subject
    message["Message-ID"] = f"<{mid}>"
    if replying:
        message["In-Reply-To"] = f"<{replying}>"
    message.set_content(text, cte="8bit")
    return message.as_bytes()


def header(data: bytes, name: str) -> str | None:
    head = data.partition(b"\r\n\r\n")[0].decode("utf-8", "replace")
    for line in head.split("\r\n"):
        key, _, value = line.partition(":")
        if key.lower() == name.lower():
            return value.strip()
    return None


@pytest.fixture
def rules(mailflow_rules: Any) -> Path:
    path: Path = mailflow_rules(RULES)
    return path


def test_an_angry_french_follow_up_goes_up_and_into_the_morning_digest(
        rules: Path, mailflow_daemon: Any, mailflow_next_hop: Any, mailflow_cli: Any) -> None:
    daemon = mailflow_daemon(rules, plugins=["sentiment"], test_clock=MONDAY_9AM)
    first = mail("Bonjour, où en est ma commande 48213 ? Merci.", subject="Commande 48213",
                 mid="c1@client.example")
    assert daemon.send(first, mail_from="claire@client.example")[0] == 250
    (relayed,) = mailflow_next_hop.wait_for(1)
    case = header(relayed.data, "X-Mailflow-Case")
    assert header(relayed.data, "X-Mailflow-Priority") == "normal"
    assert header(relayed.data, "X-Mailflow-Sentiment").startswith("neutral")

    angry = mail("Trois semaines et TOUJOURS rien. C'est inadmissible, je veux une réponse"
                 " aujourd'hui.\n\nLe lun. 23 nov. 2026, SAV Example a écrit :\n"
                 "> Bonjour, nous sommes désolés de ce retard et revenons vers vous au plus"
                 " vite.\n> Bien cordialement,\n",
                 subject=f"Re: [{case}] Commande 48213", mid="c2@client.example",
                 replying="c1@client.example")
    assert daemon.send(angry, mail_from="claire@client.example")[0] == 250
    follow_up = mailflow_next_hop.wait_for(2)[1]
    assert header(follow_up.data, "X-Mailflow-Case") == case
    assert header(follow_up.data, "X-Mailflow-Sentiment").startswith("negative; score=-")
    assert header(follow_up.data, "X-Mailflow-Priority") == "high"
    with sqlite3.connect(daemon.db) as db:
        assert db.execute("SELECT priority FROM cases WHERE number = ?",
                          (case,)).fetchone() == ("high",)
        assert db.execute("SELECT count(*) FROM timers WHERE kind = 'sentiment.digest'"
                          " AND state = 'active'").fetchone() == (1,)
        (assignee,) = db.execute("SELECT assignee FROM cases WHERE number = ?",
                                 (case,)).fetchone()
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics",
                                     timeout=10).read().decode()
    assert 'mailflow_sentiment_messages_total{label="negative",route="sav"} 1.0' in metrics
    assert 'mailflow_sentiment_messages_total{label="neutral",route="sav"} 1.0' in metrics
    daemon.set_time(TUESDAY_915)  # the next business morning, 09:15: the digest is due
    digest = mailflow_next_hop.wait_for(3)[2]
    assert digest.rcpt_tos == ["chef-sav@example.com"]
    letter = email.message_from_bytes(digest.data, policy=SMTP)
    text = letter.get_content() if isinstance(letter, EmailMessage) else ""
    assert case is not None and case in text and "route: sav" in text
    assert f"assignee: {assignee or '-'}" in text
    assert "C'est inadmissible, je veux une réponse aujourd'hui." in text
    assert "désolés" not in text  # the company's quoted reply is not the customer's
    assert letter["Auto-Submitted"] == "auto-generated"

    status, out, _ = mailflow_cli("cases", "show", case, "--config", str(daemon.config_path))
    assert status == 0 and "mood " in out and "neutral " in out and "→ negative -" in out


def test_pas_de_probleme_is_not_negative(rules: Path, mailflow_daemon: Any,
                                         mailflow_next_hop: Any) -> None:
    daemon = mailflow_daemon(rules, plugins=["sentiment"], test_clock=MONDAY_9AM)
    question = mail("Bonjour, pas de problème pour la livraison vendredi. Pouvez-vous me"
                    " confirmer le créneau ? Sans urgence.", subject="Livraison",
                    mid="q1@client.example")
    assert daemon.send(question, mail_from="claire@client.example")[0] == 250
    (relayed,) = mailflow_next_hop.wait_for(1)
    assert not header(relayed.data, "X-Mailflow-Sentiment").startswith("negative")
    assert header(relayed.data, "X-Mailflow-Priority") == "normal"


def test_the_header_never_reaches_an_outside_recipient(rules: Path, mailflow_daemon: Any,
                                                       mailflow_next_hop: Any) -> None:
    daemon = mailflow_daemon(rules, plugins=["sentiment"], test_clock=MONDAY_9AM,
                             config={"trusted_networks": ["127.0.0.0/8"]})
    angry = mail("Colis jamais reçu, c'est scandaleux. Je porte plainte.",
                 subject="Colis", mid="o1@client.example", cc="avocat@cabinet.example")
    code, _ = daemon.send(angry, mail_from="claire@client.example",
                          rcpt_to=["sav@example.com", "avocat@cabinet.example"])
    assert code == 250
    copies = mailflow_next_hop.wait_for(2)
    inside = [c for c in copies if "avocat@cabinet.example" not in c.rcpt_tos]
    outside = [c for c in copies if "avocat@cabinet.example" in c.rcpt_tos]
    assert len(inside) == len(outside) == 1
    assert outside[0].rcpt_tos == ["avocat@cabinet.example"]
    assert header(inside[0].data, "X-Mailflow-Sentiment").startswith("negative")
    assert b"X-Mailflow-Sentiment" not in outside[0].data
    assert b"X-Mailflow-" not in outside[0].data.partition(b"\r\n\r\n")[0].replace(
        b"X-Mailflow-Loop", b"")
