"""Triage of ../shared/corpus end to end: every message through one daemon, in index order.

What the shipped rules and index.yaml say about each message (priority, route,
follow-ups, copies) against what the next hop receives and `mailflow try`
explains. Collected only where ../shared exists (see tests/conftest.py).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from test_triage import (
    ALICE,
    BRUNO,
    CAROLE,
    CHLOE,
    DAVID,
    LEA_LEGAL,
    Relayed,
    crlf,
    level_of,
    mailflow,
    send,
    triage_rules,
)

from conftest import CORPUS, Daemon, Sink, drain_outbox, is_ack, parse_email, snapshot_store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(20)]  # each test, setup included

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
    "fr_litige_urgent.eml": Want(("urgent",), "legal", LEA_LEGAL),  # 'urgent' + 'litige'
    "fr_html_only_accident.eml": Want(("high", "urgent"), "sav", BRUNO),  # turn 2
    "fr_cp1252_base64_devis_signe.eml": Want(("high", "urgent"), "sales", DAVID),
    "en_question.eml": Want(("normal",), "support", None, ("support@example.com",)),
    "ooo_auto_replied.eml": Want(("low",), "sav", CHLOE),  # turn 3; 'urgence' outweighed
    "bounce_dsn.eml": Want(("low",), "sav", ALICE),  # turn 4
    "list_newsletter.eml": Want(("low",), "accueil", None, ("contact@example.com",)),
    "ms_auto_response_suppress.eml": Want(("low",), "account-manager", CAROLE),
    # a robot's address: automatic mail, lowered like every other (ctx.automatic)
    "noreply_sender.eml": Want(("low",), "accueil", None, ("contact@example.com",)),
    "followup_in_reply_to_ack.eml": Want(("normal",), "sav", ALICE),  # claire's assignee
    "followup_subject_tag.eml": Want(("normal",), "sav", ALICE),  # sent to contact@: same
    "webform_facturation.eml": Want(("normal",), "billing", None,
                                    ("facturation@example.com",)),
    "fr_attachment_pdf.eml": Want(("normal",), "sav", BRUNO),  # turn 5
    "duplicate_copy_a.eml": Want(("normal",), "sav", CHLOE),  # turn 6
    "duplicate_copy_b.eml": Want(("normal",), "sav", CHLOE),  # the copy: its case's person
    "fr_juridique_expert.eml": Want(("urgent",), "legal", LEA_LEGAL),
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
                (ack,) = [m for r in sink.messages for m in [parse_email(r.data)]
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
    assert notes["route"]["assignee"] == LEA_LEGAL
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


