"""The store backends a suite runs on, and what the store suites share.

SQLite on a file, or a fresh database on the session's private PostgreSQL
(``pg_server`` in conftest, started only when a test asks for it). A suite
parametrizes a fixture over ``BACKENDS`` and builds its URL with ``store_url``;
the PostgreSQL half is ``slow``, so ``pytest -m "not slow"`` needs no PostgreSQL.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from mailflow.clock import FakeClock
from mailflow.plugins import builtin_schemas
from mailflow.store import Store, Transaction
from mailflow.values import OutgoingMail

BACKENDS = ("sqlite", pytest.param("postgresql", marks=pytest.mark.slow))

#: each built-in owner at its latest version (core 3: the nodes of a shared database)
LATEST = {"core": 4, "cases": 2, "acknowledge": 3, "agents": 1,
          **{s.owner: s.version for s in builtin_schemas()
             if s.owner not in ("core", "cases", "acknowledge", "agents")}}


def store_url(request: pytest.FixtureRequest, sqlite_path: Path) -> str:
    """The URL of an empty store for the backend ``request.param`` names: ``sqlite_path``
    (not created yet), or a new database of its own on the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{sqlite_path}"
    return str(request.getfixturevalue("pg_server").database())


def is_postgres(store: Store) -> bool:
    return store.url.startswith(("postgresql://", "postgres://"))


async def outlive_lease(store: Store, clock: FakeClock, lease: float) -> None:
    """Let a lease of ``lease`` seconds taken just now run out. SQLite's leases run by the
    store's injected clock (moved here), PostgreSQL's by the database's own (waited out)."""
    clock.advance(lease + 1)
    if is_postgres(store):
        await asyncio.sleep(lease + 0.1)


def mail(kind: str = "ack", not_before: float = 0.0) -> OutgoingMail:
    return OutgoingMail(kind, ("claire@client.test",), b"Subject: ack\r\n\r\nhello\r\n",
                        not_before=not_before)


async def rows(store: Store, sql: str,
               params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """One statement in a read transaction (``:name`` parameters: both backends)."""
    return await store.run_read(lambda tx: tx.execute(sql, params or {}))


def pending(tx: Transaction, queue_id: str) -> None:
    tx.record_message(queue_id, message_id=f"{queue_id}@client.test",
                      mail_from="claire@client.test", rcpt_to=["sav@example.com"],
                      state="pending", verdict="deliver", received_at=time.time(), details={})


class Gate:
    """A write that holds its transaction open until released: on SQLite the writes
    behind it pile up into one batch; on either, a write is caught mid-transaction."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, tx: Transaction) -> None:
        self.entered.set()
        assert self.release.wait(10), "gate never released"

    async def close_on(self, store: Store, *before: Any) -> asyncio.Task[Any]:
        """The write of ``before`` (operations) and then the gate, once it holds."""
        task = asyncio.ensure_future(store.write([*before, self]))
        assert await asyncio.to_thread(self.entered.wait, 5)
        return task
