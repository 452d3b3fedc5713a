"""``mailflow replay``: last month's mail through the daemon, before it is switched on.

An archive (mbox, Maildir, folder of ``.eml``; :mod:`mailflow.replay.archive`) runs
through the daemon's own path as live, against a scratch store, a next hop that
keeps nothing and a clock that follows the archive (:mod:`mailflow.replay.engine`);
agents' Sent items, merged by time, are replies from where agents write. The result
is one row per message (:mod:`mailflow.replay.rows`), what the period would have had
(reminders, SLA warnings and breaches, escalations, auto-closes), and the report page
of the replayed period. Nothing is sent anywhere; the real store is never opened.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mailflow.config import Settings
from mailflow.replay.archive import Archived, read
from mailflow.replay.engine import Replay, Tally
from mailflow.replay.rows import Row, differences, write
from mailflow.rules import load_rules

__all__ = ["Archived", "Outcome", "Row", "differences", "replay", "write"]


@dataclass
class Outcome:
    """One replay's rows, what the period had, and the report page (when asked)."""

    rows: list[Row]
    tally: Tally
    seconds: float = 0.0
    html: str | None = None
    period: tuple[float, float] = (0.0, 0.0)
    deadlines: dict[str, str] = field(default_factory=dict)


async def replay(settings: Settings, archives: Sequence[Path], *, sent: Sequence[Path] = (),
                 after: float = 0.0, html: bool = False,
                 progress: Callable[[int, int], None] = lambda done, total: None,
                 messages: list[Archived] | None = None) -> Outcome:
    """Replay ``archives`` (and ``sent``) through ``settings.rules``; timers keep firing
    ``after`` seconds past the last message."""
    import time

    items = messages if messages is not None else read(
        archives, load_rules(settings.rules).is_local, sent=sent)
    start = items[0].at if items else time.time()
    end = (items[-1].at if items else start) + after
    rows: list[Row] = []
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mailflow-replay-") as work:
        async with Replay(settings, Path(work), start) as run:
            for index, item in enumerate(items):
                rows.append(await run.feed(item, index))
                progress(index + 1, len(items))
            await run.fire_until(end)
            deadlines = await run.deadlines()
            for row in rows:
                row.deadline = deadlines.get(row.case, "") if row.case_status == "new" else ""
            page = await _page(run, start, end) if html else None
        seconds = time.perf_counter() - began
    return Outcome(rows, run.tally, seconds, page, (start, end), deadlines)


async def _page(run: Replay, since: float, until: float) -> str:
    """The report page of the replayed period, from the scratch store."""
    from functools import partial

    from mailflow.report.data import build_report
    from mailflow.report.page import render

    calendars = run.runtime.rules.calendars
    zone = calendars.default.zone if calendars.configured else None
    report = await run.store.run_read(partial(
        build_report, since=since, until=until, zone=zone,
        per_agent=run.settings.statistics.per_agent))
    return render(report, inline_js=True)
