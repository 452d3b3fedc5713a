"""``mailflow migrate``: bring the store's tables up to this mailflow's schema.

Each owner of tables (core, built-in stages, the configured plugins) migrates its
own, on SQLite or PostgreSQL; with ``--check`` nothing changes and the exit status
says whether the store is behind (1) or current (0). For ``migrate: manual`` and
rolling upgrades: migrate once, then restart the daemons one at a time (the
migrations are additive, so the daemons not yet upgraded keep working).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from mailflow.cli.options import settings_from, sqlite_path
from mailflow.runtime import load_runtime
from mailflow.store import StoreUnavailable, Transaction, open_store
from mailflow.store.schema import Schema


def _versions(tx: Transaction) -> dict[str, int]:
    return {str(o): int(v) for o, v in tx.execute("SELECT owner, version FROM schema_versions")}


async def _current(url: str, node: str, schemas: Sequence[Schema]) -> dict[str, int]:
    """Each owner's version in the store, read only (a store not made yet: none)."""
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        return {}
    probe = open_store(url, node=node, readonly=True)
    await probe.open(schemas)
    try:
        return await probe.run_read(_versions)
    except StoreUnavailable:  # no schema_versions table yet
        return {}
    finally:
        await probe.close()


async def _migrate(url: str, node: str, schemas: Sequence[Schema], check: bool) -> int:
    before = await _current(url, node, schemas)
    late = [s for s in schemas if before.get(s.owner, 0) < s.version]
    for schema in schemas:
        have = before.get(schema.owner, 0)
        state = "current" if have >= schema.version else f"behind ({have} < {schema.version})"
        print(f"{schema.owner:<14} {state}")
    if check or not late:
        return 1 if late and check else 0
    store = open_store(url, node=node)
    await store.open(schemas)
    await store.close()
    for schema in late:
        print(f"{schema.owner:<14} migrated {before.get(schema.owner, 0)} -> {schema.version}")
    return 0


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    runtime = load_runtime(settings)  # the plugins' schemas too
    return asyncio.run(_migrate(settings.store_url, settings.node_id, runtime.schemas,
                                args.check))
