"""Triage end to end: prioritise and route in the real daemon, over SMTP, to a real next hop.

The shipped rules, with the chain ``number, deduplicate, prioritise, route,
acknowledge``. What we look at is what the company mail server (the sink)
receives: ``X-Mailflow-Priority``/``-Score``/``-Route``/``-Assignee`` and the
envelope recipients route rewrote. Acknowledgements reach the sink too (null
envelope sender); they are told apart by their own Message-ID.
"""

from __future__ import annotations

import email
import json
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from clirunner import CliResult, run_cli
from conftest import CORPUS, RULES, Daemon, Received, Sink, drain_outbox, snapshot_store

pytestmark = pytest.mark.timeout(20)  # each test, setup included

CHAIN = "chain: [number, deduplicate, prioritise, route, acknowledge]\n"
NULL_SENDERS = ("", "<>")
LEVELS = ("urgent", "high", "normal", "low")
THRESHOLDS = {"urgent": 10.0, "high": 5.0, "normal": 0.0}  # rules/prioritise.yaml

ALICE, BRUNO, CHLOE = ("alice.moreau@example.com", "bruno.petit@example.com",
                       "chloe.roger@example.com")
DAVID = "david.simon@example.com"
CAROLE = "carole.martin@example.com"  # account manager of @grande-entreprise-exemple.com
DURAND = "maitre.durand@example.com"  # the legal team's one member


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def triage_rules(tmp_path: Path, name: str = "rules-src") -> Path:
    """A copy of the shipped rules running the triage chain."""
    rules = tmp_path / name
    shutil.copytree(RULES, rules)
    (rules / "chain.yaml").write_text(CHAIN, encoding="utf-8")
    return rules


def crlf(data: bytes) -> bytes:
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    return msg


def is_ack(received: Received, msg: EmailMessage) -> bool:
    return received.mail_from in NULL_SENDERS and str(msg["Message-ID"]).startswith("<ack.")


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
    message_id = parse(raw)["Message-ID"]
    before = len(sink.messages)
    code, text = daemon.send(raw, mail_from, rcpt_to)
    assert code == 250, text
    found = [Relayed(r.rcpt_tos, m) for r in sink.messages[before:]
             for m in [parse(r.data)] if not is_ack(r, m) and m["Message-ID"] == message_id]
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
# the corpus, through one daemon, in index.yaml order
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Want:
    """What the shipped rules and index.yaml say about one corpus message."""

    priority: tuple[str, ...]  # acceptable levels
    route: str
    assignee: str | None
    rcpt: tuple[str, ...] = ()  # default: the assignee


# The after-sales team (sav@) is round-robin over alice, bruno, chloe: each message
# routed there as a NEW case takes the next turn; follow-ups and copies go to their
# case's assignee and take none. The turns are counted in the comments.
EXPECT: dict[str, Want] = {
    "fr_question_sav.eml": Want(("normal",), "sav", ALICE),  # turn 1
    "fr_subject_latin1_encoded.eml": Want(("normal",), "accueil", None,
                                          ("contact@example.com",)),
    "fr_litige_urgent.eml": Want(("urgent",), "legal", DURAND),  # 'urgent' + 'litige'
    "fr_html_only_accident.eml": Want(("high", "urgent"), "sav", BRUNO),  # turn 2
    "fr_cp1252_base64_devis_signe.eml": Want(("high", "urgent"), "sales", DAVID),
    "en_question.eml": Want(("normal",), "support", None, ("support@example.com",)),
    "ooo_auto_replied.eml": Want(("low",), "sav", CHLOE),  # turn 3; 'urgence' outweighed
    "bounce_dsn.eml": Want(("low",), "sav", ALICE),  # turn 4
    "list_newsletter.eml": Want(("low",), "accueil", None, ("contact@example.com",)),
    "ms_auto_response_suppress.eml": Want(("low",), "account-manager", CAROLE),
    "noreply_sender.eml": Want(("normal",), "accueil", None, ("contact@example.com",)),
    "followup_in_reply_to_ack.eml": Want(("normal",), "sav", ALICE),  # claire's assignee
    "followup_subject_tag.eml": Want(("normal",), "sav", ALICE),  # sent to contact@: same
    "webform_facturation.eml": Want(("normal",), "billing", None,
                                    ("facturation@example.com",)),
    "fr_attachment_pdf.eml": Want(("normal",), "sav", BRUNO),  # turn 5
    "duplicate_copy_a.eml": Want(("normal",), "sav", CHLOE),  # turn 6
    "duplicate_copy_b.eml": Want(("normal",), "sav", CHLOE),  # the copy: its case's person
    "fr_juridique_expert.eml": Want(("urgent",), "legal", DURAND),
    "fr_client_mecontent.eml": Want(("high", "urgent"), "sav", ALICE),  # turn 7
    "long_header.eml": Want(("normal",), "sav", BRUNO),  # turn 8
    "broken_mime.eml": Want(("normal",), "sav", CHLOE),  # turn 9
    "raw_8bit_no_charset.eml": Want(("urgent",), "sav", ALICE),  # turn 10
}
TRIED = ("fr_litige_urgent.eml", "webform_facturation.eml", "ooo_auto_replied.eml",
         "ms_auto_response_suppress.eml", "followup_subject_tag.eml", "long_header.eml")


@dataclass
class CorpusRun:
    daemon: Daemon
    rules: Path
    index: list[dict[str, Any]]
    relayed: dict[str, Relayed] = field(default_factory=dict)
    data: dict[str, bytes] = field(default_factory=dict)
    snapshots: dict[str, Path] = field(default_factory=dict)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorpusRun]:
    tmp = tmp_path_factory.mktemp("triage")
    index = YAML(typ="safe").load((CORPUS / "index.yaml").read_text(encoding="utf-8"))
    sink = Sink()
    sink.start()
    daemon = Daemon(tmp / "daemon", f"smtp://127.0.0.1:{sink.port}", rules=triage_rules(tmp))
    run = CorpusRun(daemon, daemon.rules, list(index["messages"]))
    db = daemon.tmp / "state" / "mailflow.sqlite3"
    try:
        daemon.start()
        replace: dict[bytes, bytes] = {}
        for n, entry in enumerate(run.index):
            name = entry["file"]
            raw = crlf((CORPUS / name).read_bytes())
            for placeholder, value in replace.items():
                raw = raw.replace(placeholder, value)
            if name in TRIED:
                run.snapshots[name] = snapshot_store(db, tmp / "snapshots" / f"{n:02d}")
            run.data[name] = raw
            run.relayed[name] = send(daemon, sink, raw, entry["mail_from"], entry["rcpt_to"])
            if name == "fr_question_sav.eml":  # what the follow-ups refer to
                drain_outbox(db)
                (ack,) = [m for r in sink.messages for m in [parse(r.data)]
                          if is_ack(r, m) and m["In-Reply-To"] == "<q4821.1@client-exemple.fr>"]
                replace[b"ACK-MESSAGE-ID"] = str(ack["Message-ID"]).strip("<>").encode()
                replace[b"CASE-NUMBER"] = str(run.relayed[name].case).encode()
    finally:
        daemon.stop()
        sink.stop()
    yield run


def test_every_corpus_message_is_expected(corpus: CorpusRun) -> None:
    assert sorted(e["file"] for e in corpus.index) == sorted(EXPECT)
    assert list(corpus.relayed) == [e["file"] for e in corpus.index]


@pytest.mark.parametrize("name", list(EXPECT))
def test_corpus_priority_and_route(corpus: CorpusRun, name: str) -> None:
    want, got = EXPECT[name], corpus.relayed[name]
    assert got.priority in want.priority, (got.priority, got.score)
    assert got.priority == level_of(got.score)  # the score and the level agree
    assert got.route == want.route
    assert got.assignee == want.assignee
    assert tuple(got.rcpt_tos) == (want.rcpt or (want.assignee,))


def test_follow_ups_and_copies_stay_on_their_case(corpus: CorpusRun) -> None:
    first = corpus.relayed["fr_question_sav.eml"]
    for name in ("followup_in_reply_to_ack.eml", "followup_subject_tag.eml"):
        assert corpus.relayed[name].case == first.case, name
    assert corpus.relayed["duplicate_copy_b.eml"].case == \
        corpus.relayed["duplicate_copy_a.eml"].case


def test_round_robin_shares_the_corpus_evenly(corpus: CorpusRun) -> None:
    new_sav = [r.assignee for name, r in corpus.relayed.items()
               if r.route == "sav" and name not in ("followup_in_reply_to_ack.eml",
                                                    "followup_subject_tag.eml",
                                                    "duplicate_copy_b.eml")]
    counts = Counter(new_sav)
    assert set(counts) == {ALICE, BRUNO, CHLOE}
    assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_words_found_where_index_says(corpus: CorpusRun) -> None:
    """The scores come from the words index.yaml names (decoded, folded, in place)."""
    assert corpus.relayed["fr_litige_urgent.eml"].score >= 10 + 8  # urgency + legal rules
    assert corpus.relayed["fr_html_only_accident.eml"].score >= 8  # 'accident' in HTML
    assert corpus.relayed["raw_8bit_no_charset.eml"].score >= 10
    assert corpus.relayed["fr_cp1252_base64_devis_signe.eml"].score >= 5
    # bulk, auto-replies, bounces: well below zero whatever words they contain
    for name in ("list_newsletter.eml", "ooo_auto_replied.eml", "bounce_dsn.eml"):
        assert corpus.relayed[name].score < 0, name


def run_try(corpus: CorpusRun, name: str) -> dict[str, Any]:
    entry = next(e for e in corpus.index if e["file"] == name)
    state = corpus.snapshots[name]
    message = state / "message.eml"
    message.write_bytes(corpus.data[name])
    args = ["try", str(message), "--json", "--rules", str(corpus.rules), "--state-dir",
            str(state), "--mail-from", entry["mail_from"], "--peer", "198.51.100.7"]
    for rcpt in entry["rcpt_to"]:
        args += ["--rcpt-to", rcpt]
    done = mailflow(*args)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.mark.parametrize("name", TRIED)
def test_try_json_explains_what_the_daemon_did(corpus: CorpusRun, name: str) -> None:
    """On the store as the daemon saw it, `try --json` predicts and explains the triage."""
    report = run_try(corpus, name)
    notes = {d["stage"]: d["notes"] for d in report["decisions"]}
    got = corpus.relayed[name]
    prioritise, route = notes["prioritise"], notes["route"]
    assert prioritise["level"] == got.priority
    assert prioritise["score"] == got.score
    assert isinstance(prioritise["matched"], dict)
    assert route["route"] == got.route
    assert route["assignee"] == got.assignee
    assert route["because"]
    assert report["recipients"] == got.rcpt_tos
    headers = {h["name"]: h["value"] for h in report["headers"]}
    assert headers["X-Mailflow-Priority"] == got.priority
    assert headers["X-Mailflow-Route"] == got.route


def test_try_json_names_the_matched_rules(corpus: CorpusRun) -> None:
    report = run_try(corpus, "fr_litige_urgent.eml")
    notes = {d["stage"]: d["notes"] for d in report["decisions"]}
    matched = notes["prioritise"]["matched"]
    assert {key.split(":")[0] for key in matched} == {"urgency", "legal"}
    assert any(key.endswith("(subject)") for key in matched)
    assert notes["prioritise"]["score"] == 2 * 6 + 2 * 8  # both in the Subject, once each
    assert notes["route"]["because"] == "rule legal"
    assert notes["route"]["assignee"] == DURAND
    ooo = {d["stage"]: d["notes"] for d in run_try(corpus, "ooo_auto_replied.eml")["decisions"]}
    assert ooo["prioritise"]["matched"]["bulk, list or automatic mail"] == -20
    assert ooo["prioritise"]["level"] == "low"
    form = {d["stage"]: d["notes"]
            for d in run_try(corpus, "webform_facturation.eml")["decisions"]}
    assert form["route"]["because"] == "rule billing-form"
    follow = {d["stage"]: d["notes"]
              for d in run_try(corpus, "followup_subject_tag.eml")["decisions"]}
    assert follow["route"]["because"] == "case assignee"
    manager = {d["stage"]: d["notes"]
               for d in run_try(corpus, "ms_auto_response_suppress.eml")["decisions"]}
    assert manager["route"]["because"] == "account manager"
    assert manager["prioritise"]["matched"]["sender @grande-entreprise-exemple.com"] == 3


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
    assert (got.route, got.assignee, got.rcpt_tos) == ("legal", DURAND, [DURAND])
    # through the web form: the customer named in it counts, not the web server
    form = mail(3, sender="web@example.com", to="contact@example.com",
                headers="Reply-To: dsi@grande-entreprise-exemple.com\r\n",
                body="Nom : DSI\nCatégorie : Facturation\nDemande :\nUne question.")
    got = send(triage, sink, form, "web@example.com", ["contact@example.com"])
    assert (got.route, got.assignee) == ("account-manager", CAROLE)


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
    assert text.count("team: billing\n") == 1
    route.write_text(text.replace("team: billing\n", "team: facturation\n"), encoding="utf-8")
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
