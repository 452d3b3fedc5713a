"""The stage, its table, its hooks and its digest, with mailflow's shipped fixtures: the
daemon's own reception and chain on a real temporary store, a fake clock."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from mailflow_sentiment import digest, store
from mailflow_sentiment import plugin as sentiment
from mailflow_sentiment.options import SentimentOptions

from mailflow.plugin import Schema, Timer

PARIS = {"default": {"timezone": "Europe/Paris", "country": "FR",
                     "hours": {d: ["09:00-12:30", "13:30-18:00"] for d in
                               ("monday", "tuesday", "wednesday", "thursday", "friday")}}}
SECTION = {"weight": 5, "digest": {"at": "09:15", "to": {"*": "chef@example.com"}}}
ROUTE = {"default": "sav", "teams": {"sav": {"addresses": ["sav@example.com"]}}}
ANGRY = "Trois semaines et toujours rien. C'est inadmissible !"
CALM = "Pas de problème pour vendredi, je serai là toute la journée. Bonne journée."


def mail(text: str, subject: str = "Commande 1234", mid: str = "m1@client.example",
         sender: str = "claire@client.example", extra: str = "") -> bytes:
    return (f"From: <{sender}>\r\nTo: sav@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <{mid}>\r\n{extra}Content-Type: text/plain; charset=utf-8\r\n\r\n"
            f"{text}\r\n").encode()


@pytest.fixture
def mailflow_schemas() -> Sequence[Schema]:
    return [store.SCHEMA]


@pytest.fixture
def rules(mailflow_rules: Any) -> Path:
    path: Path = mailflow_rules({"chain": ["number", "prioritise", "sentiment", "route"],
                                 "sentiment": SECTION, "route": ROUTE, "calendars": PARIS})
    return path


async def test_a_negative_message_goes_up_and_is_recorded(
        rules: Path, mailflow_runtime: Any, mailflow_receive: Any, mailflow_commit: Any,
        mailflow_store: Any) -> None:
    runtime = mailflow_runtime(rules, plugins=[sentiment])
    ctx = await mailflow_receive(runtime, mail(ANGRY))
    assert ctx.header("X-Mailflow-Sentiment").startswith("negative; score=-0.")
    assert ctx.triage.priority == "high"
    assert [(s.name, s.weight) for s in ctx.triage.signals] == [("sentiment", 5.0)]
    await mailflow_commit(ctx)
    rows = await mailflow_store.run_read(lambda tx: tx.execute(
        "SELECT case_number, route, label, sentence FROM sentiment_moods"))
    assert rows == [(ctx.case.number, "sav", "negative", "C'est inadmissible !")]
    (priority,), = await mailflow_store.run_read(lambda tx: tx.execute(
        "SELECT priority FROM cases"))
    assert priority == "high"


async def test_a_calm_message_with_negative_words_is_not_negative(
        rules: Path, mailflow_runtime: Any, mailflow_receive: Any, mailflow_commit: Any,
        mailflow_store: Any) -> None:
    runtime = mailflow_runtime(rules, plugins=[sentiment])
    ctx = await mailflow_receive(runtime, mail(CALM))
    assert not ctx.header("X-Mailflow-Sentiment").startswith("negative")
    assert ctx.triage.priority == "normal" and ctx.triage.signals == ()
    await mailflow_commit(ctx)
    (label, sentence), = await mailflow_store.run_read(lambda tx: tx.execute(
        "SELECT label, sentence FROM sentiment_moods"))
    assert label != "negative" and sentence == ""  # no customer's words kept for nothing


async def test_the_quoted_reply_and_robots_do_not_count(
        rules: Path, mailflow_runtime: Any, mailflow_receive: Any) -> None:
    runtime = mailflow_runtime(rules, plugins=[sentiment])
    quoting = ("Voici le numéro de série : LL7-2231.\r\n\r\nLe 3 nov. 2026, SAV a écrit :\r\n"
               "> Nous sommes désolés, c'est inadmissible, toutes nos excuses pour ce retard"
               " scandaleux.\r\n")
    ctx = await mailflow_receive(runtime, mail(quoting))
    assert not ctx.header("X-Mailflow-Sentiment").startswith("negative")
    robot = await mailflow_receive(runtime, mail(ANGRY, mid="r@client.example",
                                                 sender="noreply@client.example"),
                                   mail_from="")
    assert robot.automatic is not None and robot.header("X-Mailflow-Sentiment") is None


async def test_an_english_follow_up_is_scored_in_english(
        rules: Path, mailflow_runtime: Any, mailflow_receive: Any, mailflow_commit: Any,
        mailflow_store: Any) -> None:
    runtime = mailflow_runtime(rules, plugins=[sentiment])
    first = await mailflow_receive(runtime, mail("Hello, where is my order 5512? Thanks"))
    await mailflow_commit(first)
    again = await mailflow_receive(runtime, mail(
        "It's been three weeks and still nothing. Absolutely unacceptable.",
        subject=f"Re: [{first.case.number}] Order", mid="m2@client.example",
        extra="In-Reply-To: <m1@client.example>\r\n"), queue_id="TEST0002")
    assert again.case.number == first.case.number
    assert again.header("X-Mailflow-Sentiment").startswith("negative")
    await mailflow_commit(again)
    lines = await mailflow_store.run_read(lambda tx: list(
        sentiment.mailflow_case_lines(tx, first.case.number)))
    ((label, value),) = lines
    assert label == "mood" and value.startswith("neutral ") and " → negative -0." in value


def test_check_points_at_a_typo(mailflow_rules: Any, mailflow_check: Any) -> None:
    rules = mailflow_rules({"chain": ["number", "sentiment"],
                            "sentiment": {"wieght": 3, "digest": {"at": "25:00"}}})
    problems = mailflow_check(rules, plugins=[sentiment])
    assert len(problems) == 2, problems
    assert all("sentiment.yaml:" in p for p in problems)
    assert any("wieght" in p for p in problems) and any("25:00" in p for p in problems)


async def test_the_digest_lists_the_most_negative_cases_then_waits_for_tomorrow(
        rules: Path, mailflow_runtime: Any, mailflow_receive: Any, mailflow_commit: Any,
        mailflow_host: Any, mailflow_timer_context: Any, mailflow_clock: Any,
        mailflow_store: Any) -> None:
    runtime = mailflow_runtime(rules, plugins=[sentiment])
    for i, text in enumerate((ANGRY, CALM, "Je suis déçue, la machine fuit encore.")):
        ctx = await mailflow_receive(runtime, mail(text, mid=f"d{i}@client.example",
                                                   sender=f"c{i}@client.example"),
                                     queue_id=f"Q{i}")
        await mailflow_commit(ctx)
    mailflow_clock.advance(24 * 3600 + 15 * 60)  # Tuesday 09:15
    now = mailflow_clock.now()
    ctx = mailflow_timer_context(Timer(digest.KIND, now, digest.KEY),
                                 host=mailflow_host(rules), options=SentimentOptions(**SECTION))
    await digest.send_digest(ctx)
    (sent,) = ctx.outgoing
    text = sent.data.decode()
    assert sent.rcpt_to == ("chef@example.com",) and "Auto-Submitted: auto-generated" in text
    assert "2 cases since yesterday" in text  # the calm one is not there
    assert text.index("inadmissible") < text.index("fuit encore")  # most negative first
    assert "route: sav" in text and "waiting: 1d 0h" in text
    (following,) = ctx.timers
    assert dt.datetime.fromtimestamp(following.due, dt.UTC).strftime("%a %H:%M") == "Wed 08:15"
    assert (digest.KIND, digest.KEY) in ctx.cancelled_timers


async def test_no_negative_case_no_digest(rules: Path, mailflow_host: Any,
                                          mailflow_timer_context: Any,
                                          mailflow_clock: Any) -> None:
    ctx = mailflow_timer_context(Timer(digest.KIND, mailflow_clock.now(), digest.KEY),
                                 host=mailflow_host(rules), options=SentimentOptions(**SECTION))
    await digest.send_digest(ctx)
    assert ctx.outgoing == [] and len(ctx.timers) == 1


async def test_the_sentence_is_purged_with_its_closed_case(
        rules: Path, mailflow_runtime: Any, mailflow_receive: Any, mailflow_commit: Any,
        mailflow_store: Any) -> None:
    from mailflow.retention import collect_purges, purge  # the daemon's own purge

    runtime = mailflow_runtime(rules, plugins=[sentiment])
    for i in range(2):
        ctx = await mailflow_receive(runtime, mail(ANGRY, mid=f"p{i}@client.example",
                                                   sender=f"p{i}@client.example"),
                                     queue_id=f"P{i}")
        await mailflow_commit(ctx)
    await mailflow_store.run_write(lambda tx: tx.execute(
        "UPDATE cases SET status = 'closed', updated_at = 100.0 WHERE customer = :c",
        {"c": "p0@client.example"}))
    purges = collect_purges(runtime.pm)
    await mailflow_store.run_write(lambda tx: purge(tx, purges, cutoff=1000.0))
    left = await mailflow_store.run_read(lambda tx: tx.execute(
        "SELECT c.customer FROM sentiment_moods m JOIN cases c ON c.number = m.case_number"))
    assert left == [("p1@client.example",)]  # the open case keeps its own
    (count,), = await mailflow_store.run_read(lambda tx: tx.execute(
        "SELECT count(*) FROM sentiment_moods"))
    assert count == 1


def test_the_dashboard_queries_only_what_the_plugin_exports() -> None:
    from importlib.resources import files

    from mailflow_sentiment.stage import METRIC, SentimentStage
    from prometheus_client import CollectorRegistry

    from mailflow.metrics import MetricFactory
    from mailflow.testing import make_stage

    text = files("mailflow_sentiment").joinpath("data").joinpath(
        "grafana-dashboard.json").read_text(encoding="utf-8")
    board = json.loads(text)
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    assert len(exprs) >= 3
    assert {m for e in exprs for m in re.findall(r"mailflow_\w+", e)} == {METRIC}
    titles = " ".join(p["title"] for p in board["panels"])
    assert "per day" in titles and "per team" in titles
    registry = CollectorRegistry()
    make_stage(SentimentStage, {}, metrics=MetricFactory(registry))
    assert METRIC.removesuffix("_total") in {m.name for m in registry.collect()}
