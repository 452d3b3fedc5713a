"""The statistics tables and the retention purge, on both backends (SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailflow import cases
from mailflow.config import Settings
from mailflow.plugins import builtin_schemas, get_plugin_manager
from mailflow.retention import collect_purges, purge
from mailflow.stats.store import Count, Response, counts, day_of, open_cases, responses, volumes
from mailflow.store import Store, Transaction, open_store
from stores import BACKENDS, pending, rows, store_url

PARIS = ZoneInfo("Europe/Paris")

#: what every built-in owner of tables says the purge takes
PURGES = collect_purges(get_plugin_manager(Settings()))


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(store_url(request, tmp_path / "state" / "mailflow.sqlite3"))
    await s.open(builtin_schemas())
    yield s
    await s.close()


def test_a_day_is_the_team_s_day() -> None:
    # 23:30 UTC on 30 November is already 1 December in Paris
    assert day_of(1764545400.0, PARIS) == "2025-12-01"
    assert day_of(1764545400.0, ZoneInfo("UTC")) == "2025-11-30"


async def test_counts_add_up_and_an_undo_gives_one_back(store: Store) -> None:
    inbound = Count("2026-11-23", "mail", "sav", "normal", "inbound")
    await store.write([inbound.add, inbound.add, Count("2026-11-23", "mail", label="reply").add,
                       Count("2026-11-24", "mail", "sav", "urgent", "inbound").add])
    await store.write([inbound.give_back])
    assert await store.run_read(lambda tx: volumes(tx, "2026-11-23")) == [
        ("2026-11-23", "inbound", "sav", 1), ("2026-11-23", "reply", "", 1),
        ("2026-11-24", "inbound", "sav", 1)]
    assert await store.run_read(lambda tx: volumes(tx, "2026-11-24")) == [
        ("2026-11-24", "inbound", "sav", 1)]
    await store.write([Count("2026-11-23", "sla_breach", "sav", "normal", "update").add])
    assert await store.run_read(lambda tx: counts(tx, "2026-11-01", "sla_breach")) == [
        ("2026-11-23", "sav", "normal", "update", 1)]


async def test_responses_are_read_back_by_kind_and_time(store: Store) -> None:
    await store.write([
        lambda tx: Response(1000.0, "d", "first_response", 60.0, "sav", "normal", "alice",
                            True).record(tx, "Q1"),
        lambda tx: Response(2000.0, "d", "response", 30.5, "sav", "normal", "alice").record(
            tx, "Q1"),
        lambda tx: Response(3000.0, "d", "first_response", 90.0, "", "", "other",
                            False).record(tx, "Q2")])
    assert await store.run_read(lambda tx: responses(tx, 0.0, "first_response")) == [
        ("sav", "normal", "alice", 60.0, True), ("", "", "other", 90.0, False)]
    assert await store.run_read(lambda tx: responses(tx, 2500.0, "first_response")) == [
        ("", "", "other", 90.0, False)]
    assert await store.run_read(lambda tx: responses(tx, 0.0, "response")) == [
        ("sav", "normal", "alice", 30.5, None)]


def _case(tx: Transaction, number: str, status: str, updated_at: float) -> None:
    cases.insert_case(tx, number=number, customer="c@client.test", customer_name="C",
                      subject="s", mailbox="sav@example.com")
    tx.execute("UPDATE cases SET status = :status, updated_at = :at, route = 'sav'"
               " WHERE number = :number", {"status": status, "at": updated_at,
                                            "number": number})
    cases.add_case_message(tx, number=number, message_id=f"<{number}@c>", role="customer",
                           sender="c@client.test", queue_id=number)


async def test_the_purge_takes_old_closed_cases_and_records_only(store: Store) -> None:
    await store.write([
        lambda tx: _case(tx, "OLD-1", "closed", 100.0),
        lambda tx: _case(tx, "OPEN-1", "open", 100.0),  # old but open: kept
        lambda tx: _case(tx, "NEW-1", "closed", 5000.0),  # closed lately: kept
        lambda tx: pending(tx, "Q1"),  # in flight: kept whatever its age
        lambda tx: Count("1970-01-01", "mail", "sav", "", "inbound").add(tx),
        lambda tx: Response(50.0, "1970-01-01", "first_response", 10.0).record(tx, "Q0")])
    await store.write([lambda tx: tx.execute(
        "UPDATE case_messages SET created_at = 100.0")])
    deleted = await store.run_write(lambda tx: purge(tx, PURGES, cutoff=1000.0))
    assert deleted == {"case_messages": 1, "cases": 1}
    assert await store.run_read(open_cases) == [("sav", "", "open", 1)]
    assert sorted(await rows(store, "SELECT number FROM cases")) == [("NEW-1",), ("OPEN-1",)]
    assert await rows(store, "SELECT queue_id FROM messages") == [("Q1",)]
    assert await rows(store, "SELECT count(*) FROM stats_counts") == [(1,)]
    assert await rows(store, "SELECT count(*) FROM stats_responses") == [(1,)]
    assert await store.run_write(lambda tx: purge(tx, PURGES, cutoff=1000.0)) == {}  # nothing twice
