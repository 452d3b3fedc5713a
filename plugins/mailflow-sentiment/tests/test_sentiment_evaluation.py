"""The frozen evaluation set through the daemon's own reception and chain: precision and
recall of "negative", printed, against the targets (recall ≥ 85 %, precision ≥ 80 %).

Each message goes in as its customer sent it; what counts is the label the stage puts
in ``X-Mailflow-Sentiment``, on the customer's text the framework extracted (quotes,
signatures and disclaimers left out) in the language it guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from mailflow_sentiment import plugin as sentiment
from mailflow_sentiment import store
from sentiment_eval import as_mail, figures, messages, report

from mailflow.plugin import Schema

RECALL_TARGET = 0.85
PRECISION_TARGET = 0.80


@pytest.fixture
def mailflow_schemas() -> Sequence[Schema]:
    return [store.SCHEMA]


async def test_evaluation_precision_and_recall_of_negative(
        mailflow_rules: Any, mailflow_runtime: Any, mailflow_receive: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    rules: Path = mailflow_rules({"chain": ["number", "sentiment"], "sentiment": {}})
    runtime = mailflow_runtime(rules, plugins=[sentiment])
    results, misses = [], []
    entries = messages()
    assert len(entries) >= 200
    for i, entry in enumerate(entries):
        ctx = await mailflow_receive(runtime, as_mail(entry), queue_id=f"EVAL{i:04d}")
        decided = (ctx.header("X-Mailflow-Sentiment") or "unscored").partition(";")[0]
        results.append((entry, decided))
        if decided != entry["label"]:
            misses.append(f"  {entry['id']} ({entry['kind']}): {entry['label']} read as"
                          f" {decided}")
    found = figures(results)
    with capsys.disabled():
        print("\n" + report(found, ["other labels missed:", *misses] if misses else []))
    overall = found[0]
    assert overall.count == len(entries)
    assert overall.recall >= RECALL_TARGET, report(found)
    assert overall.precision >= PRECISION_TARGET, report(found)
