"""The store a URL names: SQLite (the embedded default) or PostgreSQL."""

from __future__ import annotations

from urllib.parse import parse_qs

from mailflow.clock import SYSTEM_CLOCK, Clock
from mailflow.store.base import Store


def open_store(url: str, *, readonly: bool = False, clock: Clock = SYSTEM_CLOCK,
               node: str = "", migrate: bool = True) -> Store:
    """The store for ``url``: ``sqlite:///PATH[?busy_timeout=SECONDS][&durable=no]`` (the
    embedded default; ``durable=no`` for a scratch store: no fsync) or ``postgresql://…``
    (several daemons on one database; ``node``: this daemon's node id). ``readonly`` is
    the dry-run mode of ``mailflow try``: reads, never writes. ``migrate=False``: refuse
    a schema older than the code instead of migrating."""
    if url.startswith(("postgresql://", "postgres://")):
        from mailflow.store.postgres import PostgresStore, split_url

        conninfo, pool_size, node_timeout = split_url(url)
        return PostgresStore(conninfo, readonly=readonly, clock=clock, node=node,
                             migrate=migrate, pool_size=pool_size, node_timeout=node_timeout)
    if url.startswith("sqlite:///"):
        from mailflow.store.sqlite import SqliteStore

        path, _, query = url.removeprefix("sqlite:///").partition("?")
        options = parse_qs(query)
        try:
            busy = float(options.get("busy_timeout", ["5"])[0])
        except ValueError:
            raise ValueError(f"'{url}': busy_timeout is a number of seconds") from None
        durable = options.get("durable", ["yes"])[0] != "no"
        return SqliteStore(path or "mailflow.sqlite3", readonly=readonly, busy_timeout=busy,
                           clock=clock, migrate=migrate, durable=durable)
    raise ValueError(f"unsupported store '{url}' (use sqlite:///PATH or postgresql://…)")
