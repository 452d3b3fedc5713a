"""``mailflow replay``: a known archive, a known Sent archive and the shipped Paris
calendar; the first responses, reminders and breaches the replay reports are those the
calendar and the rules give. ``--against`` lists what a second rules folder decides
differently. Nothing is sent, the real store is not created.

The archive (an mbox, the mailbox sav@ received) on Monday 23 November 2026, Paris:
09:10 Anne asks about her order; 09:20 Bruno asks about his; 10:00 a lawyer's formal
notice. The Sent archive (a Maildir): Alice, of the after-sales team, answers Anne at
11:00. Timers run on two days past the last message.
"""

from __future__ import annotations

import asyncio
import json
import mailbox
from pathlib import Path

import pytest

from clirunner import run_cli
from conftest import REPO, full_chain_rules
from mailflow.config import load_settings
from mailflow.replay import replay

pytestmark = pytest.mark.slow


def mail(sender: str, to: str, subject: str, mid: str, hour: str, body: str,
         extra: str = "") -> bytes:
    return (f"Return-Path: <{sender}>\nReceived: from mx.client.test by mx.example.com;"
            f" Mon, 23 Nov 2026 {hour}:00 +0100\nFrom: <{sender}>\nTo: {to}\n"
            f"Subject: {subject}\nMessage-ID: <{mid}>\nDate: Mon, 23 Nov 2026 {hour}:00 +0100\n"
            f"{extra}Content-Type: text/plain; charset=utf-8\n\n{body}\n").encode()


@pytest.fixture
def archives(tmp_path: Path) -> tuple[Path, Path]:
    box = mailbox.mbox(tmp_path / "sav.mbox")
    box.add(mail("anne@client.test", "sav@example.com", "Ma commande 1201", "a1@client.test",
                 "09:10", "Bonjour, où en est ma commande 1201 ? Merci."))
    box.add(mail("bruno@client.test", "sav@example.com", "Commande 1202", "b1@client.test",
                 "09:20", "Bonjour, je n'ai pas reçu ma commande 1202. Cordialement."))
    box.add(mail("cabinet@avocats.test", "sav@example.com", "Mise en demeure",
                 "c1@avocats.test", "10:00", "Nous vous mettons en demeure de livrer notre"
                 " client sous huit jours."))
    box.close()
    sent = mailbox.Maildir(tmp_path / "Sent", create=True)
    sent.add(mail("alice.moreau@example.com", "anne@client.test", "Re: Ma commande 1201",
                  "s1@example.com", "11:00", "Bonjour Anne, votre commande part demain.",
                  "In-Reply-To: <a1@client.test>\n"))
    return tmp_path / "sav.mbox", tmp_path / "Sent"


def settings(tmp_path: Path, rules: Path) -> object:
    return load_settings(None, {"rules": str(rules), "state_dir": str(tmp_path / "state")})


def test_first_responses_reminders_and_breaches(tmp_path: Path,
                                                archives: tuple[Path, Path]) -> None:
    box, sent = archives
    rules = full_chain_rules(tmp_path / "rules")
    outcome = asyncio.run(replay(settings(tmp_path, rules), [box], sent=[sent],  # type: ignore[arg-type]
                                 after=2 * 86400))
    anne, bruno, notice, reply = outcome.rows  # in the order they arrived
    assert [r.message_id for r in outcome.rows] == ["a1@client.test", "b1@client.test",
                                                     "c1@avocats.test", "s1@example.com"]
    assert (anne.direction, anne.case_status, anne.route, anne.ack) == (
        "inbound", "new", "sav", "sent")
    assert (reply.direction, reply.case) == ("reply", anne.case)  # Alice's answer joins it
    assert anne.deadline == "met"  # answered Monday 11:00, due Tuesday 12:00
    assert bruno.deadline == "breached"  # nobody answered Bruno by Tuesday 12:00
    assert notice.route == "legal" and notice.priority == "urgent"
    assert notice.escalation == "legal-notice -> maitre.durand@example.com"
    assert notice.deadline == "breached"  # urgent: 2 business hours, by Monday 12:00
    timers = outcome.tally.timers
    # the lawyer is reminded at 15:00 (4 business hours after 10:00) and Tuesday 10:00,
    # then the supervisor is told (Tuesday 14:30); Bruno's and the notice's deadlines
    # warn and breach; Anne's were cancelled by Alice's answer
    assert timers["escalate.remind"] == 2 and timers["escalate.supervisor"] == 1
    assert timers["sla.breach"] == 2 and timers["sla.warn"] == 2
    assert outcome.tally.mail == {"ack": 3, "escalation": 1}
    assert not (tmp_path / "state").exists()  # the real store was never made


def test_the_command_and_against(tmp_path: Path, archives: tuple[Path, Path]) -> None:
    box, sent = archives
    rules = full_chain_rules(tmp_path / "rules")
    other = full_chain_rules(tmp_path / "other")  # after-sales mail to the billing team
    route = (other / "route.yaml").read_text(encoding="utf-8")
    (other / "route.yaml").write_text(route.replace(
        "when: {recipient: [sav@example.com]}\n      team: sav",
        "when: {recipient: [sav@example.com]}\n      team: billing"), encoding="utf-8")
    out = tmp_path / "rows.json"
    html = tmp_path / "report.html"
    result = run_cli("replay", str(box), "--sent", str(sent), "--rules", str(rules),
                     "--state-dir", str(tmp_path / "state"), "--after", "2d",
                     "--output", str(out), "--html", str(html), "--against", str(other),
                     cwd=REPO)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "4 messages replayed" in text
    assert "timers fired:" in text and "escalate.remind 2" in text
    assert "first responses:" in text and "breached 2" in text and "met 1" in text
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert [r["deadline"] for r in rows] == ["met", "breached", "breached", ""]
    assert "<html" in html.read_text(encoding="utf-8")[:200]
    # Anne's and Bruno's route, and Alice's reply, which joins Anne's case: that case's route
    assert "3 of 4 messages decided differently" in text
    listed = text.split("decided differently", 1)[1]
    assert listed.count("route: sav  ->  billing") == 3
    assert "<a1@client.test>" in listed and "<b1@client.test>" in listed
    assert "<s1@example.com>" in listed and "<c1@avocats.test>" not in listed
