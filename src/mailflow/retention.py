"""The retention purge (``statistics.retention``): old records deleted, statistics kept.

Every owner of tables says what of them the purge deletes (``mailflow_retention``:
``Purge(table, where, phase)``): the framework its message records, outbox rows,
timers and quarantine; the built-in stages their cases, acknowledgements,
escalations and deadlines; a plugin its own. Rows hanging off closed cases go first
(phase ``case-rows``), then the cases, then the other records, all in one
transaction. The statistics tables hold no address and no subject: nothing of them
is purged, so the report's figures outlive the mail they count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import pluggy
import structlog

from mailflow.config import ConfigError, Problem
from mailflow.host import Purge
from mailflow.plugins import results, schema_owners, stored_owners
from mailflow.store import Transaction

log = structlog.get_logger("mailflow.retention")

PHASES = ("case-rows", "cases", "records")
#: the framework's own records
CORE_PURGES = (
    Purge("messages", "state <> 'pending' AND updated_at < :cutoff"),
    Purge("outbox", "state NOT IN ('ready', 'held') AND created_at < :cutoff"),
    Purge("timers", "state NOT IN ('active', 'held') AND due < :cutoff"),
    Purge("quarantine", "created_at < :cutoff"),
)
#: the closed cases a ``case-rows`` purge may name: ``case_number IN (CLOSED_CASES)``
CLOSED_CASES = "SELECT number FROM cases WHERE status = 'closed' AND updated_at < :cutoff"


def collect_purges(pm: pluggy.PluginManager) -> list[Purge]:
    """The framework's purges, then every plugin's, each once, in phase order."""
    found: list[Purge] = list(CORE_PURGES)
    problems: list[Problem] = []
    for plugin, provided in results(pm, "mailflow_retention"):
        owners = schema_owners(pm, plugin)
        for purge in provided or ():
            if not isinstance(purge, Purge) or purge.phase not in PHASES:
                problems.append(Problem(plugin, 0, 0, f"mailflow_retention: {purge!r}"
                                        f" is not a Purge with a phase of {PHASES}"))
            elif purge not in found:
                found.append(replace(purge, owners=owners))
    if problems:
        raise ConfigError(problems)
    return sorted(found, key=lambda p: PHASES.index(p.phase))


def purge(tx: Transaction, purges: Sequence[Purge], cutoff: float) -> dict[str, int]:
    """Delete what is older than ``cutoff``; rows deleted per table (a plugin's tables
    only where the store has them: enabled since the store was last migrated)."""
    deleted: dict[str, int] = {}
    present = stored_owners(tx)
    for item in purges:
        if not item.owners <= present:
            continue
        (before,), = tx.execute(f"SELECT count(*) FROM {item.table} WHERE {item.where}",
                                {"cutoff": cutoff})
        if before:
            tx.execute(f"DELETE FROM {item.table} WHERE {item.where}", {"cutoff": cutoff})
            deleted[item.table] = deleted.get(item.table, 0) + int(before)
    return deleted


def of_closed_cases(*tables: str) -> Iterable[Purge]:
    """The rows of ``tables`` (each with a ``case_number``) of the cases the purge takes."""
    return [Purge(table, f"case_number IN ({CLOSED_CASES})", "case-rows") for table in tables]
