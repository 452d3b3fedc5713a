"""Escalation to an expert in the real daemon, on its test clock, with a real next hop.

Shipped rules: a legal notice to contact@ is routed to the legal team's agent
(lea.garnier@) and forwarded to the company's lawyer (maitre.durand@) with a
reply address of its own; reminders every 4 business hours, two of them, then
the supervisor (direction-juridique@). Paris calendar: Mon-Thu 09:00-12:30 and
13:30-18:00, French holidays. Loopback is not trusted: the expert writes from
"outside", as an outside lawyer would.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from ruamel.yaml import YAML

from clirunner import run_cli
from conftest import (
    NULL_SENDERS,
    Daemon,
    Received,
    Sink,
    full_chain_rules,
    metric,
    parse_email,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PARIS = ZoneInfo("Europe/Paris")
NOTICE = (Path(__file__).parents[1] / "data" / "legal_notice.eml").read_bytes()
CUSTOMER = "service.juridique@union-conso.test"
AGENT = "lea.garnier@example.com"
EXPERT = "maitre.durand@example.com"
SUPERVISOR = "direction-juridique@example.com"
REPLY_TO = re.compile(r"experts\+([A-Z0-9-]+)\.([0-9a-f]{24})@example\.com")


def paris(*args: int) -> float:
    return dt.datetime(*args, tzinfo=PARIS).timestamp()  # type: ignore[misc]


MONDAY_10 = paris(2026, 11, 23, 10, 0)


def start(daemon_factory: Any, tmp_path: Path, t0: float, **rule: Any) -> Daemon:
    changes: dict[str, Any] = {}
    if rule:
        shipped = YAML().load((Path(__file__).parents[2] / "rules" / "escalate.yaml")
                              .read_text(encoding="utf-8"))["escalate"]
        shipped["rules"][0].update(rule)
        changes["escalate"] = dict(shipped)
    rules = full_chain_rules(tmp_path / "rules-src", **changes)
    d: Daemon = daemon_factory(rules=rules, test_clock=t0)
    return d


def to(sink: Sink, address: str) -> list[Received]:
    """What ``address`` got; for the supervisor, the escalations only (the same person is
    also told of the legal route's SLA breaches, see rules/sla.yaml)."""
    got = [m for m in sink.messages if address in m.rcpt_tos]
    if address == SUPERVISOR:
        got = [m for m in got if "Escalade" in str(parse_email(m.data)["Subject"])]
    return got


def wait_to(sink: Sink, address: str, count: int, timeout: float = 10.0) -> list[Received]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = to(sink, address)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"expected {count} message(s) to {address}, got "
                         f"{[parse_email(m.data)['Subject'] for m in to(sink, address)]}")


def quiet(d: Daemon) -> None:
    """Let the scheduler poll several times (0.2 s each) and the outbox drain."""
    time.sleep(1.2)
    d.settle()


def escalate(d: Daemon, sink: Sink) -> tuple[str, str, EmailMessage]:
    """The notice sent in: (case, reply address, the forward as the expert got it)."""
    code, text = d.send(NOTICE, mail_from=CUSTOMER, rcpt_to=["contact@example.com"])
    assert code == 250, text
    (forward,) = wait_to(sink, EXPERT, 1)
    d.settle()
    assert forward.mail_from in NULL_SENDERS
    msg = parse_email(forward.data)
    found = REPLY_TO.fullmatch(str(msg["Reply-To"]))
    assert found is not None, msg["Reply-To"]
    return found.group(1), str(msg["Reply-To"]), msg


def answer(d: Daemon, reply_to: str, *, subject: str = "Mon avis", extra: str = "",
           sender: str = "durand.avocat@cabinet-durand.test") -> None:
    """The expert answers from outside, with a Subject of their own and no References."""
    data = (f"From: Maître Durand <{sender}>\r\nTo: {reply_to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <avis-{time.monotonic_ns()}@cabinet-durand.test>\r\n{extra}\r\n"
            "La demande est fondée : proposez un remplacement.\r\n").encode()
    code, text = d.send(data, mail_from=sender, rcpt_to=[reply_to])
    assert code == 250, text


def roles(d: Daemon, case: str) -> list[str]:
    with sqlite3.connect(d.db) as db:
        return [r[0] for r in db.execute("SELECT role FROM case_messages WHERE case_number = ?"
                                         " ORDER BY id", (case,))]


def test_forward_reminders_then_supervisor(daemon_factory: Any, tmp_path: Path,
                                           sink: Sink) -> None:
    d = start(daemon_factory, tmp_path, MONDAY_10)
    case, reply_to, forward = escalate(d, sink)
    # the agent handling the case got the customer's message; the lawyer a forward
    (relayed,) = [m for m in sink.messages if m.mail_from == CUSTOMER]
    assert relayed.rcpt_tos == [AGENT]
    assert case in str(forward["Subject"])
    assert forward["From"].addresses[0].addr_spec == "contact@example.com"
    assert forward["X-Auto-Response-Suppress"] == "OOF"
    assert forward["X-Mailflow-Loop"]
    body = forward.get_body(("plain",))
    assert body is not None and body.get_content().startswith("Pour répondre, répondez")
    (attached,) = [p for p in forward.iter_attachments()
                   if p.get_content_type() == "message/rfc822"]
    original = attached.get_content()
    assert original["Message-ID"] == "<notice-1@union-conso.test>"
    assert "garantie légale" in original.get_content()
    assert "escalation" in roles(d, case)
    # `mailflow timers list` shows the follow-up, due at Monday 15:00 (4 business hours)
    listed = run_cli("timers", "list", "--config", str(d.config_path))
    assert listed.returncode == 0, listed.stderr
    (line,) = [ln for ln in listed.stdout.splitlines() if "escalate.remind" in ln]
    assert case in line and "15:00" in line

    d.set_time(paris(2026, 11, 23, 14, 59))
    quiet(d)
    assert len(to(sink, EXPERT)) == 1
    d.set_time(paris(2026, 11, 23, 15, 0))
    first = parse_email(wait_to(sink, EXPERT, 2)[1].data)
    assert first["Auto-Submitted"] == "auto-generated"
    assert str(first["Reply-To"]) == reply_to
    assert "Relance 1/2" in str(first["Subject"])
    assert "> Nous vous mettons en demeure" in first.get_content()
    # 15:00 + 4bh = Tuesday 10:00 (18:00 closes, 09:00 opens)
    d.set_time(paris(2026, 11, 24, 9, 59))
    quiet(d)
    assert len(to(sink, EXPERT)) == 2
    d.set_time(paris(2026, 11, 24, 10, 0))
    second = parse_email(wait_to(sink, EXPERT, 3)[2].data)
    assert "Relance 2/2" in str(second["Subject"])
    # after the last reminder: the supervisor, 4 business hours later (Tuesday 15:00)
    d.set_time(paris(2026, 11, 24, 15, 0))
    (notice,) = wait_to(sink, SUPERVISOR, 1)
    told = parse_email(notice.data)
    assert told["Auto-Submitted"] == "auto-generated" and case in str(told["Subject"])
    assert EXPERT in told.get_content()
    d.set_time(paris(2026, 11, 30, 12, 0))  # nothing more follows
    quiet(d)
    assert len(to(sink, EXPERT)) == 3 and len(to(sink, SUPERVISOR)) == 1
    assert not to(sink, CUSTOMER)[1:]  # the customer got the acknowledgement only
    assert metric(d, "mailflow_escalations_total", rule="legal-notice") == 1
    assert metric(d, "mailflow_escalation_reminders_total") == 2
    assert metric(d, "mailflow_escalation_supervisor_total") == 1


def test_expert_answer_cancels_and_goes_to_the_agent(daemon_factory: Any, tmp_path: Path,
                                                     sink: Sink) -> None:
    d = start(daemon_factory, tmp_path, MONDAY_10)
    case, reply_to, _ = escalate(d, sink)
    before = len(sink.messages)
    d.set_time(paris(2026, 11, 23, 11, 0))
    answer(d, reply_to, subject="Ma réponse (objet réécrit)")
    relayed = sink.wait_for(before + 1)[before]
    assert relayed.rcpt_tos == [AGENT]  # to the agent, not the customer
    assert b"proposez un remplacement" in relayed.data
    assert roles(d, case).count("expert") == 1
    listed = run_cli("timers", "list", "--config", str(d.config_path))
    assert "escalate." not in listed.stdout
    d.set_time(paris(2026, 11, 25, 18, 0))  # past every follow-up
    quiet(d)
    assert len(to(sink, EXPERT)) == 1 and not to(sink, SUPERVISOR)
    assert not [m for m in to(sink, CUSTOMER) if b"remplacement" in m.data]


def test_wrong_token_is_inbound_customer_mail(daemon_factory: Any, tmp_path: Path,
                                              sink: Sink) -> None:
    d = start(daemon_factory, tmp_path, MONDAY_10)
    case, _, _ = escalate(d, sink)
    forged = f"experts+{case}.{'0' * 24}@example.com"
    before = len(sink.messages)
    answer(d, forged, sender="intrus@elsewhere.test")
    sink.wait_for(before + 2)  # routed like customer mail, and acknowledged
    d.settle()
    (relayed,) = [m for m in sink.messages[before:] if m.mail_from == "intrus@elsewhere.test"]
    got = parse_email(relayed.data)
    # a case of its own, the default team's: not the legal agent, not the escalation's case
    assert relayed.rcpt_tos == ["contact@example.com"]
    assert got["X-Mailflow-Route"] == "accueil" and got["X-Mailflow-Case"] != case
    assert to(sink, "intrus@elsewhere.test")  # the acknowledgement
    assert "expert" not in roles(d, case)
    d.set_time(paris(2026, 11, 23, 15, 0))  # the escalation still waits: it reminds
    wait_to(sink, EXPERT, 2)


def test_expert_may_answer_the_customer(daemon_factory: Any, tmp_path: Path,
                                        sink: Sink) -> None:
    d = start(daemon_factory, tmp_path, MONDAY_10, expert_answers_customer=True)
    case, reply_to, forward = escalate(d, sink)
    assert "va au client" in forward.get_body(("plain",)).get_content()
    before = len(sink.messages)
    answer(d, reply_to)
    relayed = sink.wait_for(before + 1)[before]
    assert relayed.rcpt_tos == [CUSTOMER]
    # the customer is outside: none of our routing headers reach them
    assert b"X-Mailflow-Case" not in relayed.data.partition(b"\r\n\r\n")[0]
    assert "expert-customer" in roles(d, case)
    listed = run_cli("timers", "list", "--config", str(d.config_path)).stdout
    assert "escalate." not in listed
    # the expert's answer is the case's first response: its deadline met, its timers off
    assert "sla.breach" not in listed and "sla.warn" not in listed
    with sqlite3.connect(d.db) as db:
        ((met_at, kind),) = db.execute("SELECT met_at, kind FROM sla_deadlines"
                                       " WHERE case_number = ?", (case,)).fetchall()
    assert kind == "first_response" and met_at is not None
    shown = run_cli("cases", "show", case, "--config", str(d.config_path)).stdout
    assert "expert (to the customer)" in shown


def test_follow_up_due_while_closed_waits_for_the_opening(daemon_factory: Any,
                                                          tmp_path: Path, sink: Sink) -> None:
    """The clock jumps past the reminder's due time into the night (a daemon stopped over
    the evening): the reminder is not sent at 23:00 but at the next opening."""
    d = start(daemon_factory, tmp_path, MONDAY_10)
    escalate(d, sink)
    d.set_time(paris(2026, 11, 23, 23, 0))  # due at 15:00, fired now: deferred
    d.wait_for_log("escalation_follow_up_deferred")
    quiet(d)
    assert len(to(sink, EXPERT)) == 1
    d.set_time(paris(2026, 11, 24, 9, 0))
    assert "Relance 1/2" in str(parse_email(wait_to(sink, EXPERT, 2)[1].data)["Subject"])


def test_out_of_office_does_not_cancel(daemon_factory: Any, tmp_path: Path,
                                       sink: Sink) -> None:
    d = start(daemon_factory, tmp_path, MONDAY_10)
    case, reply_to, _ = escalate(d, sink)
    before = len(sink.messages)
    answer(d, reply_to, subject="Absence du bureau", sender=EXPERT,
           extra="Auto-Submitted: auto-replied\r\n")
    quiet(d)
    assert len(sink.messages) == before  # recorded, not relayed to the agent
    assert "expert-auto" in roles(d, case) and "expert" not in roles(d, case)
    d.set_time(paris(2026, 11, 23, 15, 0))
    assert "Relance 1/2" in str(parse_email(wait_to(sink, EXPERT, 2)[1].data)["Subject"])


def test_out_of_office_may_advance_to_the_supervisor(daemon_factory: Any, tmp_path: Path,
                                                     sink: Sink) -> None:
    d = start(daemon_factory, tmp_path, MONDAY_10, advance_on_auto_reply=True)
    _, reply_to, _ = escalate(d, sink)
    answer(d, reply_to, subject="Out of office", sender=EXPERT,
           extra="Auto-Submitted: auto-replied\r\n")
    wait_to(sink, SUPERVISOR, 1)  # at once: it is working time
    d.set_time(paris(2026, 11, 25, 18, 0))
    quiet(d)
    assert len(to(sink, EXPERT)) == 1  # no reminder follows


def test_no_reminder_at_night_nor_on_a_holiday(daemon_factory: Any, tmp_path: Path,
                                               sink: Sink) -> None:
    # Tuesday 10 November 17:00 + 4 hours = 21:00; Wednesday 11 is Armistice Day
    d = start(daemon_factory, tmp_path, paris(2026, 11, 10, 17, 0), remind_after="4h")
    escalate(d, sink)
    for moment in (paris(2026, 11, 10, 22, 0), paris(2026, 11, 11, 10, 0),
                   paris(2026, 11, 12, 8, 59)):
        d.set_time(moment)
        quiet(d)
        assert len(to(sink, EXPERT)) == 1, dt.datetime.fromtimestamp(moment, PARIS)
    d.set_time(paris(2026, 11, 12, 9, 0))
    wait_to(sink, EXPERT, 2)


def test_try_explains_the_rule_and_knows_the_answer(daemon_factory: Any, tmp_path: Path,
                                                    sink: Sink) -> None:
    d = start(daemon_factory, tmp_path, MONDAY_10)
    notice = tmp_path / "notice.eml"
    notice.write_bytes(NOTICE)
    tried = run_cli("try", str(notice), "--config", str(d.config_path), "--peer", "203.0.113.9")
    assert tried.returncode == 0, tried.stderr
    assert "rule: legal-notice" in tried.stdout and f"experts: ['{EXPERT}']" in tried.stdout
    assert "timer     escalate.remind" in tried.stdout
    case, reply_to, _ = escalate(d, sink)
    reply = tmp_path / "answer.eml"
    reply.write_bytes(f"From: {EXPERT}\r\nTo: {reply_to}\r\nSubject: avis\r\n\r\nOui.\r\n"
                      .encode())
    tried = run_cli("try", str(reply), "--config", str(d.config_path), "--peer", "203.0.113.9")
    assert f"direction reply (to the reply address of case {case}" in tried.stdout
    assert f"deliver   to {AGENT}" in tried.stdout
    forged = tmp_path / "forged.eml"
    forged.write_bytes(reply.read_bytes().replace(reply_to.split("@")[0].encode(),
                                                  f"experts+{case}.{'1' * 24}".encode()))
    tried = run_cli("try", str(forged), "--config", str(d.config_path), "--peer", "203.0.113.9")
    assert "direction inbound (for reply address" in tried.stdout
