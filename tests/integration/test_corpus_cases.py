"""Every corpus message, in index.yaml order, through ONE real daemon.

For each message we check what index.yaml expects that belongs to the case
lifecycle (new case or same case, acknowledgement or not and to whom, the
duplicate mark) at a real next hop. The follow-up files carry placeholders
(ACK-MESSAGE-ID, CASE-NUMBER) replaced by the real values from this run.

Before each message is sent, the daemon's store is copied into a fresh state
folder; afterwards ``mailflow try --json`` runs on the same bytes against that
copy and must predict exactly what the daemon did (a dry run changes nothing,
so it is judged on the state the daemon saw).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from clirunner import run_cli
from conftest import (
    CORPUS,
    NULL_SENDERS,
    Daemon,
    Received,
    Sink,
    ack_case,
    drain_outbox,
    parse_email,
    rules_with_chain,
    snapshot_store,
)
from mailflow import cases
from mailflow.message import Envelope, parse_message

pytestmark = pytest.mark.slow  # starts the daemon: `pytest -m 'not slow'` leaves it out

FORMAT = cases.NumberFormat(prefixes=("CASE", "SAV", "CTC", "DEV", "SUP"))
UNTRUSTED_PEER = "198.51.100.7"


@dataclass(frozen=True)
class Expect:
    """What a user expects of one corpus message, as far as cases and acks go."""

    case: str  # "new", or "same:<file>" (the case of that earlier message)
    ack_to: str | None = None  # None: no acknowledgement
    reason: str | None = None  # why there is none
    duplicate: bool = False
    language: str = "fr"


SAME_AS_CLAIRE = "same:fr_question_sav.eml"
EXPECT: dict[str, Expect] = {
    "fr_question_sav.eml": Expect("new", "claire.martin@client-exemple.fr"),
    "fr_subject_latin1_encoded.eml": Expect("new", "jerome.dupre@exemple.net"),
    "fr_litige_urgent.eml": Expect("new", "cabinet.bernard@avocats-exemple.fr"),
    "fr_html_only_accident.eml": Expect("new", "syndic@lespins-exemple.fr"),
    "fr_cp1252_base64_devis_signe.eml": Expect("new", "f.lefevre@pme-exemple.fr"),
    "en_question.eml": Expect("new", "tom@customer-example.co.uk", language="en"),
    "ooo_auto_replied.eml": Expect("new", reason="Auto-Submitted: auto-replied"),
    "bounce_dsn.eml": Expect("new", reason="null sender"),
    "list_newsletter.eml": Expect("new", reason="Precedence: bulk"),
    "ms_auto_response_suppress.eml": Expect("new", reason="X-Auto-Response-Suppress: All"),
    "noreply_sender.eml": Expect("new", reason="robot sender (no-reply)"),
    "followup_in_reply_to_ack.eml": Expect(SAME_AS_CLAIRE,
                                           reason="follow-up on an existing case"),
    "followup_subject_tag.eml": Expect(SAME_AS_CLAIRE, reason="follow-up on an existing case"),
    "webform_facturation.eml": Expect("new", "sophie.roux@client-exemple.fr"),
    "fr_attachment_pdf.eml": Expect("new", "paul.garnier@client-exemple.fr"),
    "duplicate_copy_a.eml": Expect("new", "marc.noel@client-exemple.fr"),
    "duplicate_copy_b.eml": Expect("same:duplicate_copy_a.eml", reason="duplicate",
                                   duplicate=True),
    "fr_juridique_expert.eml": Expect("new", "juridique@asso-conso-exemple.fr"),
    "fr_client_mecontent.eml": Expect("new", "luc.mercier@client-exemple.fr"),
    "long_header.eml": Expect("new", "anne.lambert@client-exemple.fr"),
    "broken_mime.eml": Expect("new", "broken@client-exemple.fr"),
    "raw_8bit_no_charset.eml": Expect("new", "gerard@client-exemple.fr"),
}


@dataclass
class Outcome:
    entry: dict[str, Any]
    data: bytes
    snapshot: Path
    reply: tuple[int, bytes]
    relayed: list[tuple[Received, EmailMessage]] = field(default_factory=list)
    acks: list[tuple[Received, EmailMessage]] = field(default_factory=list)
    case: str | None = None



CHAIN = ["number", "deduplicate", "acknowledge"]


def crlf(data: bytes) -> bytes:
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"








def log_events(daemon: Daemon, event: str, queue_id: str | None = None) -> list[dict[str, Any]]:
    found = []
    for line in daemon.log.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == event and queue_id in (None, entry.get("queue_id")):
                found.append(entry)
    return found


def run_corpus(daemon: Daemon, sink: Sink, tmp_path: Path) -> dict[str, Outcome]:
    index = YAML(typ="safe").load((CORPUS / "index.yaml").read_text(encoding="utf-8"))
    db = daemon.tmp / "state" / "mailflow.sqlite3"
    outcomes: dict[str, Outcome] = {}
    replace: dict[bytes, bytes] = {}
    for n, entry in enumerate(index["messages"]):
        raw = crlf((CORPUS / entry["file"]).read_bytes())  # as an MTA would send it
        for placeholder, value in replace.items():
            raw = raw.replace(placeholder, value)
        state = snapshot_store(db, tmp_path / "snapshots" / f"{n:02d}")
        before = len(sink.messages)
        reply = daemon.send(raw, entry["mail_from"], entry["rcpt_to"])
        drain_outbox(db)
        outcome = Outcome(entry, raw, state, reply)
        for received in sink.messages[before:]:
            msg = parse_email(received.data)
            if received.mail_from in NULL_SENDERS and msg["Auto-Submitted"] == "auto-replied" \
                    and msg["Message-ID"].startswith("<ack."):
                outcome.acks.append((received, msg))
            else:
                outcome.relayed.append((received, msg))
        if outcome.relayed:
            outcome.case = outcome.relayed[0][1]["X-Mailflow-Case"]
        outcomes[entry["file"]] = outcome
        if entry["file"] == "fr_question_sav.eml":  # what the follow-ups refer to
            (_, ack), = outcome.acks
            replace[b"ACK-MESSAGE-ID"] = ack["Message-ID"].strip("<>").encode()
            replace[b"CASE-NUMBER"] = str(outcome.case).encode()
    return outcomes


def run_try(rules: Path, outcome: Outcome) -> dict[str, Any]:
    message = outcome.snapshot / "message.eml"
    message.write_bytes(outcome.data)
    args = ["try", str(message), "--json", "--rules", str(rules),
            "--state-dir", str(outcome.snapshot), "--mail-from", outcome.entry["mail_from"],
            "--peer", UNTRUSTED_PEER]
    for rcpt in outcome.entry["rcpt_to"]:
        args += ["--rcpt-to", rcpt]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@dataclass
class CorpusRun:
    daemon: Daemon
    rules: Path
    outcomes: dict[str, Outcome]


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorpusRun]:
    """The whole corpus, once, in index.yaml order, through one daemon and one next hop."""
    tmp = tmp_path_factory.mktemp("corpus")
    sink = Sink()
    sink.start()
    daemon = Daemon(tmp / "daemon", f"smtp://127.0.0.1:{sink.port}",
                    rules=rules_with_chain(tmp, CHAIN))
    try:
        daemon.start()
        outcomes = run_corpus(daemon, sink, tmp)
        daemon.settle()  # nothing left to send: anything sent twice is here
        extra = len(sink.messages) - sum(len(o.relayed) + len(o.acks) for o in outcomes.values())
        assert extra == 0, f"{extra} unexpected message(s) at the next hop"
    finally:
        daemon.stop()
        sink.stop()
    yield CorpusRun(daemon, daemon.rules, outcomes)


def test_index_and_totals(corpus_run: CorpusRun) -> None:
    index_files = [e["file"] for e in load_index()]
    assert list(corpus_run.outcomes) == index_files
    assert sorted(index_files) == sorted(EXPECT), "index.yaml and this test disagree"
    assert sorted(index_files) == sorted(p.name for p in CORPUS.glob("*.eml"))
    outcomes = corpus_run.outcomes.values()
    assert sum(len(o.acks) for o in outcomes) == sum(1 for e in EXPECT.values() if e.ack_to)
    new_cases = {o.case for name, o in corpus_run.outcomes.items() if EXPECT[name].case == "new"}
    assert len(new_cases) == sum(1 for e in EXPECT.values() if e.case == "new")


@pytest.mark.parametrize("name", list(EXPECT))
def test_corpus_message(corpus_run: CorpusRun, name: str) -> None:
    outcome = corpus_run.outcomes[name]
    check_outcome(EXPECT[name], outcome, corpus_run.outcomes, corpus_run.daemon)
    check_ack(EXPECT[name], outcome, decoded_subject(outcome))


def test_latin1_subject_keeps_its_accents_in_the_ack(corpus_run: CorpusRun) -> None:
    (_, ack), = corpus_run.outcomes["fr_subject_latin1_encoded.eml"].acks
    assert "Colis reçu abîmé - remboursement ?" in ack["Subject"]


@pytest.mark.parametrize("name", list(EXPECT))
def test_try_predicts_what_the_daemon_did(corpus_run: CorpusRun, name: str) -> None:
    outcome = corpus_run.outcomes[name]
    report = run_try(corpus_run.rules, outcome)
    assert report["message"]["subject"] == decoded_subject(outcome)
    check_report(EXPECT[name], outcome, report)


def load_index() -> list[dict[str, Any]]:
    data = YAML(typ="safe").load((CORPUS / "index.yaml").read_text(encoding="utf-8"))
    return list(data["messages"])


def decoded_subject(outcome: Outcome) -> str:
    """The Subject as mailflow decodes it (what the ack template receives)."""
    envelope = Envelope(mail_from=outcome.entry["mail_from"],
                        rcpt_to=tuple(outcome.entry["rcpt_to"]))
    return parse_message(outcome.data, envelope).subject


def check_outcome(expect: Expect, outcome: Outcome, outcomes: dict[str, Outcome],
                  daemon: Daemon) -> None:
    code, text = outcome.reply
    assert code == 250, f"reply {code} {text!r}"
    (received, relayed), = outcome.relayed
    assert received.rcpt_tos == outcome.entry["rcpt_to"]
    assert received.data.endswith(outcome.data), "relayed bytes were changed"
    case = outcome.case
    assert case and FORMAT.valid(case), f"bad case number {case!r}"
    assert relayed.get_all("X-Mailflow-Case") == [case]
    if expect.case == "new":
        names = list(outcomes)
        earlier = [outcomes[n].case for n in names[: names.index(outcome.entry["file"])]]
        assert case not in earlier, f"{case} is an earlier message's case"
        prefix = {"sav": "SAV", "contact": "CTC", "devis": "DEV", "support": "SUP"}[
            outcome.entry["rcpt_to"][0].split("@")[0]]
        assert case.startswith(f"{prefix}-"), case
    else:
        earlier = outcomes[expect.case.removeprefix("same:")].case
        assert case == earlier, f"case {case}, expected the case of {expect.case}: {earlier}"
    duplicate = relayed.get_all("X-Mailflow-Duplicate")
    assert duplicate == ([case] if expect.duplicate else None), f"duplicate mark {duplicate}"

    queue_id = [e for e in log_events(daemon, "message")
                if e.get("message_id") == relayed["Message-ID"].strip("<>")][-1]["queue_id"]
    if expect.ack_to is None:
        assert outcome.acks == [], "an acknowledgement was sent"
        (suppressed,) = log_events(daemon, "ack_suppressed", queue_id)
        assert suppressed["reason"] == expect.reason, suppressed["reason"]


def check_ack(expect: Expect, outcome: Outcome, subject: str) -> None:
    """The acknowledgement: who gets it, and what it says."""
    if expect.ack_to is None:
        return
    (_, relayed), = outcome.relayed
    case = outcome.case
    (ack_env, ack), = outcome.acks
    assert ack_env.mail_from in NULL_SENDERS
    assert ack_env.rcpt_tos == [expect.ack_to]
    assert ack_case(ack) == case
    assert case in ack["Subject"]
    body = ack.get_body(("plain",))
    assert body is not None and case in str(body.get_content())
    assert ack["In-Reply-To"] == relayed["Message-ID"]
    assert relayed["Message-ID"] in ack["References"]
    assert len(ack["Subject"]) <= 200, "ack subject too long"
    subject = " ".join(subject.split())
    if len(subject) < 100:
        assert subject in ack["Subject"], ack["Subject"]
    else:  # shortened, on one line
        assert subject[:50] in ack["Subject"] and ack["Subject"].endswith("…")
    marker = {"fr": "Accusé de réception", "en": "We received your message"}[expect.language]
    assert marker in ack["Subject"], ack["Subject"]


def check_report(expect: Expect, outcome: Outcome, report: dict[str, Any]) -> None:
    """``mailflow try`` predicted what the daemon then did."""
    assert report["chain"] == ["number", "deduplicate", "acknowledge"]
    assert report["verdict"] == "deliver" and not report["failed_stages"]
    decisions = {d["stage"]: d for d in report["decisions"]}
    assert set(decisions) == {"number", "deduplicate", "acknowledge"}
    assert all(d["outcome"] == "ok" for d in decisions.values()), report["decisions"]
    number = decisions["number"]["notes"]
    assert number["case"] == outcome.case, f"try says case {number['case']}"
    status = {"new": "new"}.get(expect.case, "copy" if expect.duplicate else "followup")
    assert number["status"] == status, f"try says status {number['status']}"
    assert {"name": "X-Mailflow-Case", "value": outcome.case} in report["headers"]
    dedupe = decisions["deduplicate"]["notes"]
    assert (dedupe.get("duplicate_of") == outcome.case) if expect.duplicate else not dedupe
    ack = decisions["acknowledge"]["notes"]
    if expect.ack_to is None:
        assert ack == {"sent": False, "reason": expect.reason}, ack
        assert report["outgoing"] == []
    else:
        assert ack["sent"] is True and ack["to"] == expect.ack_to, ack
        assert ack["language"] == expect.language
        assert outcome.case in ack["subject"]
        assert [(m["kind"], m["rcpt_to"], m["mail_from"]) for m in report["outgoing"]] == [
            ("ack", [expect.ack_to], "")]
