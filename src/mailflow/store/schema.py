"""Per-owner schemas: each owner of tables (core, a stage, a plugin) migrates its own.

An owner's ``migrations`` are numbered from 1 (entry N brings the owner's
tables from version N to N+1) and recorded per owner in ``schema_versions``,
so a plugin adds tables without renumbering anyone else's. Never edit a
released entry: append one. Migrations are additive (new tables, columns,
indexes), so a daemon one version older keeps working on a newer schema.

The DDL is portable: times are ``DOUBLE PRECISION`` (PostgreSQL's ``REAL``
has 4 bytes, which loses minutes on a Unix time), and two words each backend
spells its own way are written as placeholders: ``{id}`` for an identity
primary key and ``{bytes}`` for binary data.

``forget(tx, queue_id)`` deletes the owner's rows for a message whose client
never got a ``250`` (a crash between commit and reply): the client sends it
again, and nothing of the first try may stay.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailflow.store.base import Transaction

ForgetFn = Callable[["Transaction", str], None]


@dataclass(frozen=True)
class Schema:
    """The tables one owner creates, and how it forgets an abandoned message's rows."""

    owner: str
    migrations: tuple[tuple[str, ...], ...]
    forget: ForgetFn | None = None

    @property
    def version(self) -> int:
        return len(self.migrations)

    def steps(self, current: int, types: Mapping[str, str]) -> list[tuple[int, list[str]]]:
        """(version reached, statements) for each migration after ``current``, with the
        backend's ``{id}`` and ``{bytes}`` spelled in."""
        return [(target, [statement.format_map(types) for statement in script])
                for target, script in enumerate(self.migrations, start=1) if target > current]


def check_schemas(schemas: list[Schema]) -> list[str]:
    """Problems with a set of schemas: one owner claimed by two different schemas."""
    seen: dict[str, Schema] = {}
    problems = []
    for schema in schemas:
        if schema.owner in seen and seen[schema.owner] is not schema:
            problems.append(f"schema owner '{schema.owner}' is claimed twice")
        seen.setdefault(schema.owner, schema)
    return problems


def schema_version(tx: Transaction, owner: str) -> int:
    """The version of ``owner``'s tables in this store: 0 when it has none (an older
    store, or one the owner never ran on), so a reader can leave out what is not there."""
    try:
        rows = tx.execute("SELECT version FROM schema_versions WHERE owner = :owner",
                          {"owner": owner})
    except Exception:  # no schema_versions at all: a store never migrated
        return 0
    return int(rows[0][0]) if rows else 0
