"""The daemon's probe of its store, behind /healthz: an error, or a silence, is unhealthy."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from mailflow.daemon import probe_store
from mailflow.plugins import builtin_schemas
from mailflow.store import StoreUnavailable
from mailflow.store.sqlite import SqliteStore


async def test_a_store_that_takes_writes_is_healthy(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "mailflow.sqlite3"))
    await store.open(builtin_schemas())
    try:
        assert await probe_store(store, 5.0) is None
    finally:
        await store.close()


async def test_a_writer_stuck_in_a_write_makes_the_store_unhealthy(tmp_path: Path) -> None:
    """A write that never ends (a plugin's, a disk that hangs) holds up the probe queued
    behind it: the probe says so, rather than waiting with it."""
    store = SqliteStore(str(tmp_path / "mailflow.sqlite3"))
    await store.open(builtin_schemas())
    stuck = asyncio.Event()
    loop = asyncio.get_running_loop()
    released = threading.Event()

    def hangs(_tx: object) -> None:
        loop.call_soon_threadsafe(stuck.set)
        released.wait(10)

    write = asyncio.ensure_future(store.run_write(hangs))
    try:
        await stuck.wait()
        assert await probe_store(store, 0.3) == "the store did not answer within 0.3 s"
    finally:
        released.set()
        await write
        await store.close()


async def test_a_store_error_is_what_the_probe_reports() -> None:
    class Failing:
        async def ping(self) -> None:
            raise StoreUnavailable("disk I/O error")

    assert await probe_store(Failing(), 5.0) == "disk I/O error"  # type: ignore[arg-type]
