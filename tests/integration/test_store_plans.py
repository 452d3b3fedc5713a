"""Flat with the store's size: no statement a message makes mailflow run reads a whole
table that grows with the cases (read from SQLite's own query plans).

A day of distinct customer mail (bench/mailgen.py: new questions, follow-ups, copies,
automatic mail, and agents' answers to most new cases) goes through mailflow's own path
(the replay engine: the daemon's reception, pipeline, outbox and timers, on a real
SQLite store) with the shipped rules and chain; every statement the store runs is
traced, then explained. A ``SCAN`` of a growing table is a cost that grows with the
store: with a million cases, one such count took 92 ms on every new case (the
per-case acknowledgement limit, before ``acks_case``).
"""

from __future__ import annotations

import importlib
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO

sys.path.append(str(REPO / "bench"))  # last: a bench module shadows no other
store_template = importlib.import_module("store_template")

#: tables that hold a few rows whatever the traffic: a scan of them costs nothing
SMALL_TABLES = {"agents", "sqlite_master", "schema_versions", "sequences", "health"}
_SCANNED = re.compile(r"\bSCAN (\w+)")
#: what a message's path runs (not the schema's creation, transactions or settings)
_DATA = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "REPLACE")


def traced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement of every SQLite connection opened from now on, values bound."""
    statements: list[str] = []
    connect = sqlite3.connect

    def tracing(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(sqlite3, "connect", tracing)
    return statements


def shape(statement: str) -> str:
    """The statement with its values taken out: one line per kind of statement."""
    values = re.sub(r"'(?:[^']|'')*'|X'[0-9A-Fa-f]*'|\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b", "?",
                    statement)
    return " ".join(values.split())


def test_no_statement_a_message_runs_scans_a_table_that_grows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    statements = traced(monkeypatch)
    where = store_template.build(seed=5, messages=60, cache=tmp_path / "cache")
    kinds: dict[str, str] = {}
    for statement in statements:
        if statement.split(None, 1)[0].upper() in _DATA:
            kinds.setdefault(shape(statement), statement)
    assert any("FROM acks" in k for k in kinds) and any("INSERT INTO cases" in k for k in kinds)
    assert len(kinds) > 40, sorted(kinds)  # the whole path ran: cases, acks, SLA, answers…

    conn = sqlite3.connect(where / "settled.sqlite3", isolation_level=None)
    scans: dict[str, list[str]] = {}
    try:
        for kind, statement in kinds.items():
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}")]
            growing = {t for step in plan for t in _SCANNED.findall(step)
                       if t not in SMALL_TABLES and "CONSTANT ROW" not in step}
            if growing:
                scans[kind] = plan
    finally:
        conn.close()
    assert not scans, "\n".join(f"{k}\n    {' | '.join(p)}" for k, p in scans.items())
