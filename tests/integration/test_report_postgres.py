"""The report's queries on a real PostgreSQL (tests/pg.py): the same rows as on SQLite
give the same report, figure for figure, through the read-only store."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from mailflow.report.data import Report, build_report
from mailflow.store import Transaction, open_store
from statsrows import PARIS, STATS_DDL, UNTIL, WEEK, Rows, fill, make_store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def _fill_postgres(url: str) -> None:
    store = open_store(url)
    await store.open()
    try:
        def tables(tx: Transaction) -> None:
            if not tx.execute("SELECT 1 FROM schema_versions WHERE owner = 'stats'"):
                for statement in STATS_DDL:
                    tx.execute(statement.format(
                        id="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"))
                tx.execute("INSERT INTO schema_versions (owner, version) VALUES ('stats', 1)")
        await store.run_write(tables)
        statements: list[tuple[str, dict[str, Any]]] = []
        fill(Rows(lambda sql, params: statements.append((sql, dict(params)))))

        def insert(tx: Transaction) -> None:
            for sql, params in statements:
                tx.execute(sql, params)
        await store.run_write(insert)
    finally:
        await store.close()


async def _report(url: str) -> Report:
    store = open_store(url, readonly=True)
    await store.open([])
    try:
        return await store.run_read(partial(build_report, since=UNTIL - WEEK, until=UNTIL,
                                            zone=PARIS))
    finally:
        await store.close()


def test_postgresql_gives_the_sqlite_report(pg_server: Any, tmp_path: Path) -> None:
    db = tmp_path / "mailflow.sqlite3"
    make_store(db)
    fill(Rows(db))
    url = pg_server.database()
    asyncio.run(_fill_postgres(url))
    on_postgres, on_sqlite = asyncio.run(_report(url)), asyncio.run(_report(f"sqlite:///{db}"))
    assert on_postgres.has_statistics and on_postgres.first_responses == 5
    assert on_postgres == on_sqlite
