"""SQLite's side of the per-owner migrations: the DDL's spelling, and adopting old stores.

See :mod:`mailflow.store.schema` for the portable DDL and the owners' versions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import structlog

from mailflow.store.base import Transaction
from mailflow.store.schema import Schema

log = structlog.get_logger("mailflow.store")


#: How SQLite spells the portable DDL's placeholders (see ``mailflow.store.schema``).
SQLITE_TYPES = {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "bytes": "BLOB"}


def apply_schemas(tx: Transaction, schemas: Sequence[Schema]) -> None:
    """Bring each owner's tables to its latest version, inside the caller's transaction
    (SQLite's DDL is transactional: a failed migration leaves nothing half-done)."""
    tables = {r[0] for r in tx.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    adopting = False
    if "schema_versions" not in tables:
        tx.execute("CREATE TABLE schema_versions (owner TEXT PRIMARY KEY,"
                   " version INTEGER NOT NULL)")
        (legacy,), = tx.execute("PRAGMA user_version")
        adopting = legacy > 0
        if adopting:
            log.info("store_adopted", user_version=legacy)
    versions = dict(tx.execute("SELECT owner, version FROM schema_versions"))
    for schema in schemas:
        current = versions.get(schema.owner, 0)
        for target, statements in schema.steps(current, SQLITE_TYPES):
            if adopting:  # what the old store already had is kept, whatever its step
                statements = [_if_not_exists(statement) for statement in statements]
            for statement in statements:
                if adopting and _column_exists(tx, statement):
                    continue
                tx.execute(statement)
            tx.execute("INSERT INTO schema_versions (owner, version) VALUES (:owner, :version)"
                       " ON CONFLICT (owner) DO UPDATE SET version = excluded.version",
                       {"owner": schema.owner, "version": target})
            log.info("store_migrated", owner=schema.owner, version=target)


def behind(tx: Transaction, schemas: Sequence[Schema]) -> list[str]:
    """The owners whose tables are older than this code's (``migrate: manual``)."""
    exists = tx.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                        " AND name = 'schema_versions'")
    versions = dict(tx.execute("SELECT owner, version FROM schema_versions")) if exists else {}
    return [f"{s.owner} {versions.get(s.owner, 0)} < {s.version}" for s in schemas
            if versions.get(s.owner, 0) < s.version]


_ADD_COLUMN = re.compile(r"^\s*ALTER\s+TABLE\s+(\w+)\s+ADD\s+COLUMN\s+(\w+)", re.IGNORECASE)


def _column_exists(tx: Transaction, statement: str) -> bool:
    """An adopted store may have a column a later migration adds: it is kept as it is."""
    found = _ADD_COLUMN.match(statement)
    if found is None:
        return False
    columns = {row[1] for row in tx.execute(f"PRAGMA table_info({found.group(1)})")}
    return found.group(2) in columns


_CREATE = re.compile(r"^\s*CREATE\s+(UNIQUE\s+)?(TABLE|INDEX)\s+(?!IF\s)", re.IGNORECASE)


def _if_not_exists(statement: str) -> str:
    """A store from before per-owner versions (one ``PRAGMA user_version``, 1 to 3)
    already has some of each owner's version-1 tables, exactly as version 1 makes
    them: they are created only where missing, and the store goes on from there."""
    return _CREATE.sub(lambda m: f"CREATE {m.group(1) or ''}{m.group(2)} IF NOT EXISTS ",
                       statement, count=1)
