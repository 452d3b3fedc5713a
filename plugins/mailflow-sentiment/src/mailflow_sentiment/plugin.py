"""The ``sentiment`` plugin (entry point ``mailflow.plugins``): the hooks it implements.

- ``mailflow_stages``: the ``sentiment`` stage (:mod:`mailflow_sentiment.stage`);
- ``mailflow_rules_section``: its ``sentiment:`` section, for the stage, the digest
  and the startup hook alike;
- ``mailflow_schemas`` and ``mailflow_retention``: its table, purged with the cases;
- ``mailflow_timer_handlers`` and ``mailflow_startup``: the daily digest, a standing
  timer (:mod:`mailflow_sentiment.digest`);
- ``mailflow_case_lines``: the case's mood over time in ``mailflow cases show``;
- ``mailflow_report_sections``: messages per route and mood in the report (counts
  only: no customer's words there).

Enabled by name: ``plugins: [sentiment]`` (rules or daemon configuration), and the
stage in the chain.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo

from mailflow.plugin import (
    Host,
    Purge,
    ReportSection,
    Schema,
    Stage,
    TimerHandler,
    Transaction,
    hookimpl,
)
from mailflow_sentiment import digest, stage, store
from mailflow_sentiment.options import SentimentOptions
from mailflow_sentiment.scoring import LABELS


@hookimpl
def mailflow_stages() -> Iterable[type[Stage[Any]]]:
    return stage.stages()


@hookimpl
def mailflow_rules_section() -> tuple[str, type[SentimentOptions]]:
    return "sentiment", SentimentOptions


@hookimpl
def mailflow_schemas() -> Iterable[Schema]:
    return [store.SCHEMA]


@hookimpl
def mailflow_retention() -> Iterable[Purge]:
    return store.PURGES


@hookimpl
def mailflow_timer_handlers() -> dict[str, TimerHandler]:
    return {digest.KIND: digest.send_digest}


@hookimpl
async def mailflow_startup(host: Host, options: SentimentOptions) -> None:
    """The digest's standing timer, when the stage runs and someone is to get it."""
    if options.digest.to and "sentiment" in host.rules.chain:
        await host.ensure_timer(digest.timer(host.clock.now(), options, host))


@hookimpl
def mailflow_case_lines(tx: Transaction, number: str) -> Iterable[tuple[str, str]]:
    moods = store.case_moods(tx, number)
    if not moods:
        return []
    trend = " → ".join(f"{m.label} {m.score:+.2f}" for m in moods)
    since = dt.datetime.fromtimestamp(moods[0].at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [("mood", f"{trend} (since {since})")]


@hookimpl
def mailflow_report_sections(tx: Transaction, since: float, until: float,
                             zone: ZoneInfo | None) -> Iterable[ReportSection]:
    found: dict[str, dict[str, int]] = {}
    for route, label, count in store.counts(tx, since, until):
        found.setdefault(route, dict.fromkeys(LABELS, 0))[label] = count
    if not found:
        return []
    rows: tuple[tuple[str | int | float, ...], ...] = tuple(
        (route, *(by[label] for label in LABELS), sum(by.values()),
         f"{by['negative'] / sum(by.values()):.0%}") for route, by in sorted(found.items()))
    return [ReportSection("Customers' mood", ("route", *LABELS, "scored", "negative share"),
                          rows, "Messages scored by the sentiment plugin, per route"
                          " (counts only).")]
