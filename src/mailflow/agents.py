"""Agents' presence in the store: who said they are away, and who has how many open cases.

``mailflow agents set NAME away|present`` writes here and routing reads it at
once; the rules say who the agents are (see :mod:`mailflow.presence`).
"""

from __future__ import annotations

from mailflow.store import Transaction
from mailflow.store.schema import Schema

SCHEMA = Schema("agents", (
    (
        # who can take mail now: set by `mailflow agents set NAME away|present`
        """CREATE TABLE agents (
            name TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
    ),
))


def away_agents(tx: Transaction) -> set[str]:
    return {str(r[0]) for r in tx.execute("SELECT name FROM agents WHERE status = 'away'")}


def open_cases_by_assignee(tx: Transaction, *, people: list[str]) -> dict[str, int]:
    """Open cases per person, for least-loaded assignment."""
    names = {f"p{i}": person for i, person in enumerate(people)}
    marks = ", ".join(f":{key}" for key in names)
    rows = tx.execute(f"SELECT assignee, count(*) FROM cases WHERE status = 'open'"
                      f" AND assignee IN ({marks}) GROUP BY assignee", names)
    return {str(a): int(n) for a, n in rows}


def set_agent(tx: Transaction, *, name: str, status: str, at: float | None = None) -> None:
    """Record an agent's presence (``mailflow agents set``); effective at once."""
    tx.execute("INSERT INTO agents (name, status, updated_at) VALUES (:name, :status, :at)"
               " ON CONFLICT (name) DO UPDATE SET status = excluded.status,"
               " updated_at = excluded.updated_at",
               {"name": name.lower(), "status": status, "at": tx.now() if at is None else at})


def list_agents(tx: Transaction) -> list[tuple[str, str]]:
    return [(str(n), str(s)) for n, s in tx.execute("SELECT name, status FROM agents"
                                                    " ORDER BY name")]
