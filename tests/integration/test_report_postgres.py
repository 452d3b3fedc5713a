"""The report's queries on a real PostgreSQL (tests/pg.py): the same rows as on SQLite
give the same report, figure for figure, through the read-only store."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from mailflow.report.data import Report, build_report
from mailflow.store import open_store
from statsrows import PARIS, UNTIL, WEEK, Rows, fill

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def _report(url: str) -> Report:
    store = open_store(url, readonly=True)
    await store.open([])
    try:
        return await store.run_read(partial(build_report, since=UNTIL - WEEK, until=UNTIL,
                                            zone=PARIS))
    finally:
        await store.close()


def test_postgresql_gives_the_sqlite_report(pg_server: Any, tmp_path: Path) -> None:
    db, url = tmp_path / "mailflow.sqlite3", pg_server.database()
    for target in (db, url):
        rows = Rows()
        fill(rows)
        rows.write(target)
    on_postgres, on_sqlite = asyncio.run(_report(url)), asyncio.run(_report(f"sqlite:///{db}"))
    assert on_postgres.has_statistics and on_postgres.first_responses == 5
    assert on_postgres == on_sqlite
