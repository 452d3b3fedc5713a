"""Triage end to end: prioritise and route in the real daemon, over SMTP, to a real next hop.

The shipped rules, with the chain ``number, deduplicate, prioritise, route,
acknowledge``. What we look at is what the company mail server (the sink)
receives: ``X-Mailflow-Priority``/``-Score``/``-Route``/``-Assignee`` and the
envelope recipients route rewrote. Acknowledgements reach the sink too (null
envelope sender); they are told apart by their own Message-ID.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from clirunner import CliResult, run_cli
from conftest import Daemon, Sink, full_chain_rules, is_ack, parse_email

pytestmark = [pytest.mark.slow, pytest.mark.timeout(20)]  # each test, setup included

LEVELS = ("urgent", "high", "normal", "low")
THRESHOLDS = {"urgent": 10.0, "high": 5.0, "normal": 0.0}  # rules/prioritise.yaml

ALICE, BRUNO, CHLOE = ("alice.moreau@example.com", "bruno.petit@example.com",
                       "chloe.roger@example.com")
DAVID = "david.simon@example.com"
CAROLE = "carole.martin@example.com"  # account manager of @grande-entreprise-exemple.com
LEA_LEGAL = "lea.garnier@example.com"  # the legal team's agent (the lawyer is an expert)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def triage_rules(tmp_path: Path, name: str = "rules-src") -> Path:
    """A copy of the shipped rules running the triage chain (the full one)."""
    return full_chain_rules(tmp_path / name)


def crlf(data: bytes) -> bytes:
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"




def mailflow(*args: str) -> CliResult:
    """``mailflow ARGS...``, in-process."""
    return run_cli(*args)


@dataclass
class Relayed:
    """One customer message as the next hop got it."""

    rcpt_tos: list[str]
    msg: EmailMessage

    def one(self, name: str) -> str | None:
        values = self.msg.get_all(name) or []
        assert len(values) <= 1, f"{name} added {len(values)} times"
        return str(values[0]) if values else None

    @property
    def priority(self) -> str | None:
        return self.one("X-Mailflow-Priority")

    @property
    def score(self) -> float:
        return float(str(self.one("X-Mailflow-Score")))

    @property
    def route(self) -> str | None:
        return self.one("X-Mailflow-Route")

    @property
    def assignee(self) -> str | None:
        return self.one("X-Mailflow-Assignee")

    @property
    def case(self) -> str | None:
        return self.one("X-Mailflow-Case")


def send(daemon: Daemon, sink: Sink, raw: bytes, mail_from: str,
         rcpt_to: list[str]) -> Relayed:
    """Send one message; the relayed copy (the sink has it once the sender has its 250)."""
    message_id = parse_email(raw)["Message-ID"]
    before = len(sink.messages)
    code, text = daemon.send(raw, mail_from, rcpt_to)
    assert code == 250, text
    found = [Relayed(r.rcpt_tos, m) for r in sink.messages[before:]
             for m in [parse_email(r.data)] if not is_ack(r, m) and m["Message-ID"] == message_id]
    assert len(found) == 1, f"{message_id}: relayed {len(found)} times"
    return found[0]


def mail(n: int, *, sender: str, subject: str = "", body: str = "", to: str = "sav@example.com",
         headers: str = "") -> bytes:
    subject = subject or f"Commande {1000 + n}"
    body = body or f"Bonjour, ma commande {1000 + n} n'est pas arrivée (demande {n})."
    return (f"From: Client {n} <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: Mon, 23 Nov 2026 09:30:00 +0100\r\n"
            f"Message-ID: <triage-{n}@{sender.partition('@')[2]}>\r\n{headers}"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n").encode()


def agents(daemon: Daemon, *args: str) -> str:
    """``mailflow agents ...`` against the running daemon's own store (its config)."""
    done = mailflow("agents", *args, "--config", str(daemon.config_path))
    assert done.returncode == 0, done.stderr
    return done.stdout






def level_of(score: float) -> str:
    for level, floor in THRESHOLDS.items():
        if score >= floor:
            return level
    return "low"


# ---------------------------------------------------------------------------
# round-robin and presence, follow-ups, account managers: fresh daemons
# ---------------------------------------------------------------------------


@pytest.fixture
def triage(daemon_factory: Any, tmp_path: Path) -> Daemon:
    d: Daemon = daemon_factory(rules=triage_rules(tmp_path))
    return d


def test_round_robin_and_presence_without_restart(triage: Daemon, sink: Sink) -> None:
    pid = triage.proc.pid if triage.proc else None

    def batch(start: int, count: int) -> list[str | None]:
        return [send(triage, sink, mail(n, sender=f"client{n}@client-exemple.fr"),
                     f"client{n}@client-exemple.fr", ["sav@example.com"]).assignee
                for n in range(start, start + count)]

    first = batch(0, 9)
    assert first == [ALICE, BRUNO, CHLOE] * 3
    assert Counter(first) == {ALICE: 3, BRUNO: 3, CHLOE: 3}

    assert agents(triage, "set", "bruno", "away").strip() == "bruno away"
    listed = dict(line.split() for line in agents(triage, "list").splitlines())
    assert listed["bruno"] == "away"
    assert listed["alice"] == listed["chloe"] == "present"  # known from the rules
    while_away = batch(9, 6)
    assert BRUNO not in while_away
    assert Counter(while_away) == {ALICE: 3, CHLOE: 3}

    agents(triage, "set", "bruno", "present")
    back = batch(15, 6)
    assert Counter(back) == {ALICE: 2, BRUNO: 2, CHLOE: 2}
    assert triage.proc is not None and triage.proc.poll() is None and triage.proc.pid == pid


def test_agents_set_refuses_a_name_routing_does_not_know(triage: Daemon, sink: Sink) -> None:
    done = mailflow("agents", "set", "brunoo", "away", "--config", str(triage.config_path))
    assert done.returncode != 0
    assert "no agent named 'brunoo'" in done.stderr and "bruno" in done.stderr
    assert "away" not in agents(triage, "list")  # the typo changed nothing
    # account managers are agents too (named by their address's local part)
    assert agents(triage, "set", "Carole.Martin", "away").strip() == "carole.martin away"


def test_everybody_away_leaves_it_in_the_team_mailbox(triage: Daemon, sink: Sink) -> None:
    for name in ("alice", "bruno", "chloe"):
        agents(triage, "set", name, "away")
    got = send(triage, sink, mail(1, sender="c1@client-exemple.fr"), "c1@client-exemple.fr",
               ["sav@example.com"])
    assert (got.route, got.assignee, got.rcpt_tos) == ("sav", None, ["sav@example.com"])
    agents(triage, "set", "chloe", "present")
    got = send(triage, sink, mail(2, sender="c2@client-exemple.fr"), "c2@client-exemple.fr",
               ["sav@example.com"])
    assert (got.assignee, got.rcpt_tos) == (CHLOE, [CHLOE])


def test_follow_up_goes_to_the_same_assignee(triage: Daemon, sink: Sink) -> None:
    customer = "lea.blanc@client-exemple.fr"
    first = send(triage, sink, mail(1, sender=customer), customer, ["sav@example.com"])
    assert first.assignee == ALICE
    others = [send(triage, sink, mail(n, sender=f"c{n}@autre-exemple.fr"),
                   f"c{n}@autre-exemple.fr", ["sav@example.com"]).assignee for n in (2, 3, 4)]
    assert others == [BRUNO, CHLOE, ALICE]
    # her reply, to another address of ours, with In-Reply-To her first message
    reply = mail(5, sender=customer, to="contact@example.com", subject="Re: Commande 1001",
                 body="Toujours rien reçu.",
                 headers="In-Reply-To: <triage-1@client-exemple.fr>\r\n"
                         "References: <triage-1@client-exemple.fr>\r\n")
    got = send(triage, sink, reply, customer, ["contact@example.com"])
    assert (got.case, got.route, got.assignee, got.rcpt_tos) == (
        first.case, "sav", ALICE, [ALICE])
    # the turn was not used up by the follow-up
    assert send(triage, sink, mail(6, sender="c6@autre-exemple.fr"), "c6@autre-exemple.fr",
                ["sav@example.com"]).assignee == BRUNO
    # alice away: the case stays with the after-sales team, not contact@'s default team
    agents(triage, "set", "alice", "away")
    again = mail(7, sender=customer, to="contact@example.com", subject="Re: Commande 1001",
                 body="Je relance encore.",
                 headers="In-Reply-To: <triage-5@client-exemple.fr>\r\n")
    got = send(triage, sink, again, customer, ["contact@example.com"])
    assert got.case == first.case
    assert got.route == "sav" and got.assignee in (BRUNO, CHLOE)
    assert got.rcpt_tos == [got.assignee]


def test_account_manager_routing(triage: Daemon, sink: Sink) -> None:
    body = "Bonjour, nous avons un litige sur la facture 88."
    managed = "achats@grande-entreprise-exemple.com"
    got = send(triage, sink, mail(1, sender=managed, body=body), managed, ["sav@example.com"])
    assert (got.route, got.assignee, got.rcpt_tos) == ("account-manager", CAROLE, [CAROLE])
    assert got.score == 8 + 3  # 'litige' in the text, and the customer's domain
    other = "achats@petite-exemple.fr"
    got = send(triage, sink, mail(2, sender=other, body=body), other, ["sav@example.com"])
    assert (got.route, got.assignee, got.rcpt_tos) == ("legal", LEA_LEGAL, [LEA_LEGAL])
    # through the web form: the customer named in it counts, not the web server
    form = mail(3, sender="web@example.com", to="contact@example.com",
                headers="Reply-To: dsi@grande-entreprise-exemple.com\r\n",
                body="Nom : DSI\nCatégorie : Facturation\nDemande :\nUne question.")
    got = send(triage, sink, form, "web@example.com", ["contact@example.com"])
    assert (got.route, got.assignee) == ("account-manager", CAROLE)


def test_a_colleague_in_cc_still_gets_the_customer_mail(triage: Daemon, sink: Sink) -> None:
    """Only the service mailbox is routed: the colleague named beside it is served too."""
    raw = mail(70, sender="cc70@client-exemple.fr",
               headers="Cc: Jean <jean@example.com>, Mme X <x@partner.test>\r\n")
    got = send(triage, sink, raw, "cc70@client-exemple.fr", ["sav@example.com",
                                                             "Jean@example.com"])
    assert got.route == "sav" and got.assignee in (ALICE, BRUNO, CHLOE)
    assert got.rcpt_tos == [got.assignee, "Jean@example.com"]


def test_mail_for_a_colleague_only_is_not_routed(triage: Daemon, sink: Sink) -> None:
    got = send(triage, sink, mail(71, sender="supplier71@fournisseur.test",
                                  to="jean@example.com"),
               "supplier71@fournisseur.test", ["jean@example.com"])
    assert got.rcpt_tos == ["jean@example.com"]
    assert got.route is None and got.assignee is None


def test_a_message_refused_downstream_gives_its_turn_back(triage: Daemon, sink: Sink) -> None:
    """The client's retry takes the same turn; the next message the next member."""
    first = mail(72, sender="turn72@client-exemple.fr")
    sink.handler.data_reply = "451 4.3.0 busy"
    code, _ = triage.send(first, "turn72@client-exemple.fr", ["sav@example.com"])
    assert code == 451
    sink.handler.data_reply = "250 2.0.0 Ok"
    retried = send(triage, sink, first, "turn72@client-exemple.fr", ["sav@example.com"])
    after = send(triage, sink, mail(73, sender="turn73@client-exemple.fr"),
                 "turn73@client-exemple.fr", ["sav@example.com"])
    assert (retried.assignee, after.assignee) == (ALICE, BRUNO)


def test_forged_triage_headers_are_replaced(triage: Daemon, sink: Sink) -> None:
    forged = mail(1, sender="x@client-exemple.fr",
                  headers="X-Mailflow-Priority: urgent\r\nX-Mailflow-Route: legal\r\n"
                          "X-Mailflow-Assignee: boss@example.com\r\n")
    got = send(triage, sink, forged, "x@client-exemple.fr", ["sav@example.com"])
    assert (got.priority, got.route, got.assignee) == ("normal", "sav", ALICE)


# ---------------------------------------------------------------------------
# mailflow check
# ---------------------------------------------------------------------------


def test_check_reports_an_unknown_team_at_its_line(tmp_path: Path) -> None:
    good = triage_rules(tmp_path, "good")
    done = mailflow("check", "--rules", str(good), "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 0, done.stderr
    bad = triage_rules(tmp_path, "bad")
    route = bad / "route.yaml"
    text = route.read_text(encoding="utf-8")
    form_rule = "- name: billing-form\n"
    at = text.index(form_rule)
    assert text.count("team: billing\n", at) >= 1
    route.write_text(text[:at] + text[at:].replace("team: billing\n", "team: facturation\n", 1),
                     encoding="utf-8")
    (line, col), = [(n, ln.index("team: facturation") + 1)
                    for n, ln in enumerate(route.read_text().splitlines(), start=1)
                    if "team: facturation" in ln]
    done = mailflow("check", "--rules", str(bad), "--state-dir", str(tmp_path / "state"))
    assert done.returncode != 0
    assert f"{route}:{line}:{col}: rule 'billing-form' names unknown team 'facturation'" \
        in done.stderr, done.stderr


def test_check_refuses_routing_outside_our_domains(tmp_path: Path) -> None:
    bad = triage_rules(tmp_path, "bad")
    csv = bad / "account-managers.csv"
    csv.write_text(csv.read_text(encoding="utf-8") + "@autre-exemple.fr,jean@gmail.test\n",
                   encoding="utf-8")
    line = len(csv.read_text(encoding="utf-8").splitlines())
    done = mailflow("check", "--rules", str(bad), "--state-dir", str(tmp_path / "state"))
    assert done.returncode != 0
    assert f"{csv}:{line}:1: account manager of '@autre-exemple.fr': 'jean@gmail.test' is " \
        "outside the local domains" in done.stderr, done.stderr
