"""SLA deadlines in the real daemon, on its test clock, with a real next hop (the sink).

Shipped rules (Paris calendar: Mon-Thu 09:00-12:30, 13:30-18:00, Friday until
17:00, French holidays) with an SLA of 2 business hours for a first response
and for an update, warned 30 minutes before. Loopback is trusted: agents
reply from it. Time moves by rewriting the daemon's clock file.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from clirunner import run_cli
from conftest import (
    NULL_SENDERS,
    Daemon,
    Sink,
    ack_case,
    full_chain_rules,
    is_ack,
    metric,
    parse_email,
)
from mailflow.business_hours import BusinessCalendar, CalendarOptions

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

PARIS = ZoneInfo("Europe/Paris")
SUPERVISOR = "chef-service@example.com"
SLA = {"priorities": {p: {"first_response": "2bh", "update": "2bh", "warn_before": "30m"}
                      for p in ("urgent", "high", "normal", "low")}}


def paris(*args: int) -> float:
    return dt.datetime(*args, tzinfo=PARIS).timestamp()  # type: ignore[misc]


def start(daemon_factory: Any, tmp_path: Path, t0: float, **sla: Any) -> Daemon:
    rules = full_chain_rules(tmp_path / "rules-src", sla={**SLA, **sla})
    d: Daemon = daemon_factory(config={"trusted_networks": ["127.0.0.0/8"]}, rules=rules,
                               test_clock=t0)
    return d


def customer_mail(subject: str, mid: str, extra: str = "") -> bytes:
    return (f"From: Claire <claire@client.test>\r\nTo: sav@example.com\r\n"
            f"Subject: {subject}\r\nMessage-ID: <{mid}>\r\n{extra}\r\n"
            "Bonjour,\r\nma commande 4821 n'est pas arrivée.\r\n").encode()


def agent_mail(agent: str, case: str, mid: str, in_reply_to: str, extra: str = "") -> bytes:
    return (f"From: {agent}\r\nTo: claire@client.test\r\nSubject: Re: [{case}] Commande\r\n"
            f"Message-ID: <{mid}>\r\nIn-Reply-To: <{in_reply_to}>\r\n{extra}\r\n"
            "Bonjour, votre colis part demain.\r\n").encode()


def open_case(d: Daemon, sink: Sink, mid: str = "q-1@client.test") -> tuple[str, str]:
    """A customer's new case: (number, the agent it went to)."""
    code, text = d.send(customer_mail("Commande en retard", mid),
                        mail_from="claire@client.test")
    assert code == 250, text
    sink.wait_for(2)
    d.settle()
    (relayed,) = [m for m in sink.messages if m.mail_from not in NULL_SENDERS]
    sink.reset()
    return parse_email(relayed.data)["X-Mailflow-Case"], relayed.rcpt_tos[0]


def reply(d: Daemon, sink: Sink, agent: str, case: str, mid: str, to: str,
          extra: str = "") -> None:
    code, text = d.send(agent_mail(agent, case, mid, to, extra), mail_from=agent,
                        rcpt_to=["claire@client.test"])
    assert code == 250, text
    sink.wait_for(1)
    d.settle()
    sink.reset()


def out_of_office(d: Daemon, sink: Sink, mid: str) -> None:
    """The customer's automatic answer to the agent's reply."""
    code, text = d.send(customer_mail("Réponse automatique : Re: Commande", mid,
                                      "Auto-Submitted: auto-replied\r\n"
                                      "In-Reply-To: <a-1@example.com>\r\n"),
                        mail_from="claire@client.test")
    assert code == 250, text
    sink.wait_for(1)
    d.settle()
    sink.reset()


def notices(sink: Sink) -> list[tuple[list[str], Any]]:
    return [(m.rcpt_tos, parse_email(m.data)) for m in sink.messages
            if str(parse_email(m.data)["Message-ID"]).startswith("<sla")]


def wait_for_notices(d: Daemon, sink: Sink, count: int,
                     timeout: float = 10.0) -> list[tuple[list[str], Any]]:
    deadline = time.monotonic() + timeout
    while len(notices(sink)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    d.settle()
    found = notices(sink)
    assert len(found) == count, [str(m["Subject"]) for _, m in found]
    return found


def quiet(d: Daemon) -> None:
    """Let the scheduler poll (0.2 s) a few times, then let the outbox drain."""
    time.sleep(1.2)
    d.settle()


def query(d: Daemon, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(d.db) as db:
        return list(db.execute(sql, args))


def cases_cli(d: Daemon, *args: str) -> Any:
    return run_cli("cases", *args, "--config", str(d.config_path))


def test_warning_and_breach_wait_for_business_hours(daemon_factory: Any, tmp_path: Path,
                                                    sink: Sink) -> None:
    # Tuesday 10 November 2026, 17:00; Wednesday 11 is a public holiday (Armistice):
    # 2 business hours are 17:00-18:00 and Thursday 09:00-10:00
    d = start(daemon_factory, tmp_path, paris(2026, 11, 10, 17, 0))
    case, agent = open_case(d, sink)
    due = paris(2026, 11, 12, 10, 0)
    assert query(d, "SELECT promised_at FROM cases WHERE number = ?", case) == [(due,)]
    assert query(d, "SELECT kind, due FROM timers WHERE key = ? ORDER BY due", case) == [
        ("sla.warn", paris(2026, 11, 12, 9, 30)), ("sla.breach", due)]
    d.set_time(paris(2026, 11, 10, 22, 0))  # the night
    quiet(d)
    d.set_time(paris(2026, 11, 11, 11, 0))  # the holiday
    quiet(d)
    assert notices(sink) == []
    d.set_time(paris(2026, 11, 12, 9, 29))
    quiet(d)
    assert notices(sink) == []
    d.set_time(paris(2026, 11, 12, 9, 31))
    ((to, warning),) = wait_for_notices(d, sink, 1)
    assert to == [agent]
    assert case in str(warning["Subject"]) and "2026-11-12 10:00 CET" in str(warning["Subject"])
    assert warning["Auto-Submitted"] == "auto-generated"
    assert warning["X-Auto-Response-Suppress"] == "All"
    assert warning["Precedence"] == "bulk"
    assert all(m.mail_from in NULL_SENDERS for m in sink.messages)
    assert metric(d, "mailflow_sla_warnings_total", route="sav", priority="normal") == 1
    assert metric(d, "mailflow_sla_breaches_total", route="sav", priority="normal") == 0
    sink.reset()
    d.set_time(paris(2026, 11, 12, 10, 1))
    ((to, breach),) = wait_for_notices(d, sink, 1)
    assert to == [SUPERVISOR]
    assert "breached" in str(breach["Subject"]) and agent in breach.get_content()
    assert metric(d, "mailflow_sla_breaches_total", route="sav", priority="normal") == 1
    shown = cases_cli(d, "show", case)
    assert "first response due 2026-11-12 10:00 CET: breached" in shown.stdout, shown.stdout


def test_a_reply_in_time_cancels_them_and_the_ack_promises_the_deadline(
        daemon_factory: Any, tmp_path: Path, sink: Sink) -> None:
    d = start(daemon_factory, tmp_path, paris(2026, 11, 23, 9, 0))  # a Monday
    code, _ = d.send(customer_mail("Commande en retard", "q-1@client.test"),
                     mail_from="claire@client.test")
    assert code == 250
    sink.wait_for(2)
    d.settle()
    (ack,) = [parse_email(m.data) for m in sink.messages if is_ack(m, parse_email(m.data))]
    case = ack_case(ack)
    agent = next(m.rcpt_tos[0] for m in sink.messages if m.mail_from not in NULL_SENDERS)
    sink.reset()
    due = paris(2026, 11, 23, 11, 0)
    assert query(d, "SELECT promised_at FROM cases WHERE number = ?", case) == [(due,)]
    assert query(d, "SELECT due FROM sla_deadlines WHERE case_number = ?", case) == [(due,)]
    calendar = BusinessCalendar(CalendarOptions())
    said = calendar.format(dt.datetime.fromtimestamp(due, PARIS), "fr")  # "… à 11:00"
    assert said in ack.get_content(), ack.get_content()
    d.set_time(paris(2026, 11, 23, 10, 0))
    reply(d, sink, agent, case, "a-1@example.com", "q-1@client.test")
    assert query(d, "SELECT state FROM timers WHERE key = ? ORDER BY kind", case) == [
        ("cancelled",), ("cancelled",)]
    d.set_time(paris(2026, 11, 23, 15, 0))
    quiet(d)
    assert notices(sink) == []
    shown = cases_cli(d, "show", case)
    assert "first response due 2026-11-23 11:00 CET: met (2026-11-23 10:00 CET)" in \
        shown.stdout, shown.stdout


def test_the_update_clock_runs_only_while_the_customer_wrote_last(
        daemon_factory: Any, tmp_path: Path, sink: Sink) -> None:
    d = start(daemon_factory, tmp_path, paris(2026, 11, 23, 9, 0))
    case, agent = open_case(d, sink)
    d.set_time(paris(2026, 11, 23, 9, 30))
    reply(d, sink, agent, case, "a-1@example.com", "q-1@client.test")
    d.set_time(paris(2026, 11, 24, 16, 0))  # the agent wrote last: no clock runs
    quiet(d)
    assert notices(sink) == []
    code, _ = d.send(customer_mail("Re: Commande", "q-2@client.test",
                                   "In-Reply-To: <a-1@example.com>\r\n"),
                     mail_from="claire@client.test")
    assert code == 250
    sink.wait_for(1)
    d.settle()
    sink.reset()
    update_due = paris(2026, 11, 24, 18, 0)
    assert query(d, "SELECT kind, due FROM sla_deadlines WHERE case_number = ? ORDER BY id",
                 case) == [("first_response", paris(2026, 11, 23, 11, 0)),
                           ("update", update_due)]
    # the agent's out-of-office is no answer: the clock keeps running
    d.set_time(paris(2026, 11, 24, 16, 10))
    code, _ = d.send(agent_mail(agent, case, "ooo-1@example.com", "q-2@client.test",
                                "Auto-Submitted: auto-replied\r\n"), mail_from=agent,
                     rcpt_to=["claire@client.test"])
    assert code == 250
    sink.wait_for(1)
    d.settle()
    sink.reset()
    d.set_time(paris(2026, 11, 24, 17, 31))
    ((to, warning),) = wait_for_notices(d, sink, 1)
    assert to == [agent] and "update due 2026-11-24 18:00 CET" in str(warning["Subject"])
    sink.reset()
    # the next agent reply stops it: no breach at 18:00
    reply(d, sink, agent, case, "a-2@example.com", "q-2@client.test")
    d.set_time(paris(2026, 11, 25, 10, 0))
    quiet(d)
    assert notices(sink) == []
    shown = cases_cli(d, "show", case).stdout
    assert "update due 2026-11-24 18:00 CET: met" in shown, shown


def test_auto_close_then_the_customer_reopens(daemon_factory: Any, tmp_path: Path,
                                             sink: Sink) -> None:
    d = start(daemon_factory, tmp_path, paris(2026, 11, 23, 9, 0), auto_close_after="1bd")
    case, agent = open_case(d, sink)
    d.set_time(paris(2026, 11, 23, 9, 30))
    reply(d, sink, agent, case, "a-1@example.com", "q-1@client.test")
    # the customer's out-of-office answers the agent: no word of the customer's
    d.set_time(paris(2026, 11, 23, 9, 31))
    out_of_office(d, sink, "ooo-1@client.test")
    d.set_time(paris(2026, 11, 24, 9, 29))
    quiet(d)
    assert query(d, "SELECT status FROM cases WHERE number = ?", case) == [("open",)]
    d.set_time(paris(2026, 11, 24, 9, 31))
    deadline = time.monotonic() + 10
    while query(d, "SELECT status FROM cases WHERE number = ?", case) != [("closed",)]:
        assert time.monotonic() < deadline, d.log[-2000:]
        time.sleep(0.05)
    assert metric(d, "mailflow_cases_auto_closed_total") == 1
    # another out-of-office does not reopen it
    out_of_office(d, sink, "ooo-2@client.test")
    assert query(d, "SELECT status FROM cases WHERE number = ?", case) == [("closed",)]
    assert query(d, "SELECT COUNT(*) FROM cases") == [(1,)]
    code, _ = d.send(customer_mail(f"Re: [{case}] Commande", "q-2@client.test",
                                   "In-Reply-To: <a-1@example.com>\r\n"),
                     mail_from="claire@client.test")
    assert code == 250
    (again,) = sink.wait_for(1)
    assert parse_email(again.data)["X-Mailflow-Case"] == case
    assert query(d, "SELECT status FROM cases WHERE number = ?", case) == [("open",)]


def test_closing_a_case_by_hand_cancels_its_timers(daemon_factory: Any, tmp_path: Path,
                                                   sink: Sink) -> None:
    d = start(daemon_factory, tmp_path, paris(2026, 11, 23, 9, 0))
    case, _ = open_case(d, sink)
    assert {s for (s,) in query(d, "SELECT state FROM timers WHERE key = ?", case)} == {
        "active"}
    closed = cases_cli(d, "close", case)
    assert closed.returncode == 0, closed.stderr
    assert {s for (s,) in query(d, "SELECT state FROM timers WHERE key = ?", case)} == {
        "cancelled"}
    d.set_time(paris(2026, 11, 23, 15, 0))
    quiet(d)
    assert notices(sink) == []
    assert "first response due 2026-11-23 11:00 CET: cancelled" in cases_cli(
        d, "show", case).stdout


def test_robots_get_no_deadline(daemon_factory: Any, tmp_path: Path, sink: Sink) -> None:
    d = start(daemon_factory, tmp_path, paris(2026, 11, 23, 9, 0))
    code, _ = d.send(customer_mail("Réponse automatique : absent", "ooo@client.test",
                                   "Auto-Submitted: auto-replied\r\n"),
                     mail_from="claire@client.test")
    assert code == 250
    sink.wait_for(1)
    d.settle()
    assert query(d, "SELECT COUNT(*) FROM sla_deadlines") == [(0,)]
    assert query(d, "SELECT COUNT(*) FROM timers") == [(0,)]
    assert query(d, "SELECT promised_at FROM cases") == [(None,)]


def test_a_suppressed_ack_still_gives_the_case_its_deadline(daemon_factory: Any,
                                                            tmp_path: Path, sink: Sink) -> None:
    # one acknowledgement per address and day: the customer's second case gets none
    rules = full_chain_rules(tmp_path / "rules-src", sla=SLA, acknowledge={"limits": {
        "per_case": 1, "per_address_per_day": 1, "global_per_minute": 60}})
    d: Daemon = daemon_factory(config={"trusted_networks": ["127.0.0.0/8"]}, rules=rules,
                               test_clock=paris(2026, 11, 23, 9, 0))
    first, _ = open_case(d, sink)
    d.set_time(paris(2026, 11, 23, 10, 0))
    code, _ = d.send(customer_mail("Autre question", "q-2@client.test").replace(
        "ma commande 4821 n'est pas arrivée".encode(), b"puis-je changer d'adresse ?"),
        mail_from="claire@client.test")
    assert code == 250
    sink.wait_for(1)
    d.settle()
    (relayed,) = sink.messages  # no acknowledgement
    assert not is_ack(relayed, parse_email(relayed.data))
    second = parse_email(relayed.data)["X-Mailflow-Case"]
    assert second != first
    assert query(d, "SELECT promised_at FROM cases WHERE number = ?", second) == [
        (paris(2026, 11, 23, 12, 0),)]
    assert [k for (k,) in query(d, "SELECT kind FROM timers WHERE key = ? ORDER BY due",
                                second)] == ["sla.warn", "sla.breach"]
    assert "first response due 2026-11-23 12:00 CET: pending" in cases_cli(
        d, "show", second).stdout


def test_the_rules_robot_tables_move_no_clock(daemon_factory: Any, tmp_path: Path,
                                              sink: Sink) -> None:
    """What the rules add under ``automatic:`` marks a robot for the SLA too: an agent's
    out-of-office in the company's own words is no response, and a supplier's alert robot
    gets no deadline."""
    robots = {"languages": ["fr", "en"], "subjects": ["Note d'absence"],
              "senders": ["alertes"], "headers": []}
    rules = full_chain_rules(tmp_path / "rules-src", sla=SLA, automatic=robots)
    d: Daemon = daemon_factory(config={"trusted_networks": ["127.0.0.0/8"]}, rules=rules,
                               test_clock=paris(2026, 11, 23, 9, 0))
    case, agent = open_case(d, sink)
    absent = agent_mail(agent, case, "absent-1@example.com", "q-1@client.test").replace(
        f"Subject: Re: [{case}] Commande".encode(), b"Subject: Note d'absence : Re: Commande")
    code, text = d.send(absent, mail_from=agent, rcpt_to=["claire@client.test"])
    assert code == 250, text
    sink.wait_for(1)
    d.settle()
    assert query(d, "SELECT met_at FROM sla_deadlines WHERE case_number = ?", case) == [
        (None,)]
    assert "agent" not in [r for (r,) in query(
        d, "SELECT role FROM case_messages WHERE case_number = ?", case)]
    sink.reset()
    code, text = d.send(customer_mail("Stock bas", "alerte-1@fournisseur.test").replace(
        b"From: Claire <claire@client.test>", b"From: <alertes@fournisseur.test>"),
        mail_from="alertes@fournisseur.test")
    assert code == 250, text
    sink.wait_for(1)
    d.settle()
    assert query(d, "SELECT COUNT(*) FROM sla_deadlines WHERE case_number <> ?", case) == [
        (0,)]
