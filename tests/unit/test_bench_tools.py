"""The tools of ``make bench``, ``make bench-store`` and ``make bench-profile``: what
they compute from their measures, and the store the seeder writes."""

from __future__ import annotations

import importlib
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO

sys.path.append(str(REPO / "bench"))  # last: a bench module shadows no other
cells = importlib.import_module("cells")
instructions = importlib.import_module("instructions")
memory = importlib.import_module("memory")
peers = importlib.import_module("peers")
peers_report = importlib.import_module("peers_report")
profile_breakdown = importlib.import_module("profile_breakdown")


def sample(target: str, rate_seconds: float, cpu: float, p50: float, peak: float,
           ok: bool = True) -> Any:
    return peers.Sample(target, "10k-s20", 1, 100, 100 if ok else 90, 0, 0, rate_seconds,
                        cpu, p50, 2 * p50, peak, 100, 100, ok, 0.1, 70)


def test_best_of_rounds_takes_each_figure_at_its_best() -> None:
    best = peers_report.Best.of([sample("bare", 2.0, 0.3, 0.010, 20.0),
                                 sample("bare", 1.0, 0.4, 0.020, 30.0)])
    assert best.rate == 100.0  # 100 messages in the faster round's 1 s
    assert best.cpu_ms == pytest.approx(3.0)
    assert best.p50 == pytest.approx(0.010)
    assert best.peak_mib == 30.0  # a peak is a peak: the largest
    assert best.ok and best.rounds == 2


def test_a_round_that_lost_messages_marks_its_target() -> None:
    assert not peers_report.Best.of([sample("bare", 1.0, 0.3, 0.01, 20.0, ok=False)]).ok


def test_a_round_cut_from_the_stream_waits_only_for_its_own_parents() -> None:
    rounds = cells.traffic(cells.Cell("t", 2048, 5, 1, 120, False), 2, seed=3)
    assert [len(r.wire) for r in rounds] == [120, 120]
    for rnd in rounds:
        for index, message in enumerate(rnd.wire):
            assert message.after is None or 0 <= message.after < index
    later = [label.parent for label in rounds[1].labels if label.parent is not None]
    assert any(parent < 120 for parent in later)  # answers an earlier round: waits for none


def test_the_peak_of_a_process_tree_counts_its_children(tmp_path: Path) -> None:
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        with memory.PeakPss(lambda: [child.pid], interval=0.05) as peak:
            time.sleep(0.2)
        assert peak.samples >= 2
        assert 1.0 < peak.peak < 500.0  # MiB: a sleeping Python
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize(("stack", "part"), [
    ("run (mailflow/launch.py:149);Runner.run (asyncio/runners.py:118);"
     "SMTP._handle_client (aiosmtpd/smtp.py:756);StreamReader.readuntil (asyncio/streams.py:1)",
     "SMTP session (aiosmtpd, mailflow.smtp*)"),
    ("run (mailflow/launch.py:149);Chain.process (mailflow/chain.py:1);"
     "RouteStage.process (mailflow/stages/route.py:9);match (mailflow/textmatch.py:3);"
     "search (re/__init__.py:1)", "stage route"),
    ("run (mailflow/launch.py:149);Outbox.run (mailflow/outbox.py:1);"
     "SMTP.sendmail (aiosmtplib/smtp.py:1)", "outbox: sending acks and notices"),
    ("run (mailflow/launch.py:149);AckStage.process (mailflow/stages/acknowledge.py:1);"
     "write (mailflow/message/writer.py:5);as_bytes (email/message.py:1);"
     "fold (email/_header_value_parser.py:9)",
     "writing mail: acks, notices (message.writer, email)"),
    ("run (mailflow/launch.py:149);Runner.run (asyncio/runners.py:118)",
     "event loop (asyncio, uvloop)"),
])
def test_a_sample_goes_to_the_part_that_did_the_work(stack: str, part: str) -> None:
    assert profile_breakdown.owner(profile_breakdown.frames(stack)) == part


def test_the_stages_times_come_from_the_message_lines() -> None:
    lines = [json.dumps({"event": "message", "direction": "inbound", "ms": 10.0,
                         "stages": {"number": 2.0, "route": 1.0}}),
             json.dumps({"event": "message", "direction": "inbound", "ms": 20.0,
                         "stages": {"number": 4.0}}),
             json.dumps({"event": "message", "direction": "passthrough", "ms": 99.0}),
             "not json"]
    count, stages, whole = profile_breakdown.stages(lines)
    assert count == 2 and whole == 15.0
    assert stages == {"number": 3.0, "route": 0.5}


@pytest.mark.slow
def test_the_seeded_store_holds_whole_days_of_real_cases(tmp_path: Path) -> None:
    store_template = importlib.import_module("store_template")
    store_seed = importlib.import_module("store_seed")
    template = store_template.build(seed=4, messages=80, cache=tmp_path / "cache")
    path = tmp_path / "store" / "mailflow.sqlite3"
    done = store_seed.seed(path, 500, template)
    conn = sqlite3.connect(path)
    one = conn.execute
    per_day = sqlite3.connect(template / "fresh.sqlite3").execute(
        "SELECT count(*) FROM cases").fetchone()[0]
    assert done.cases == one("SELECT count(*) FROM cases").fetchone()[0] == done.days * per_day
    customer_ids = one("SELECT message_id FROM case_messages WHERE role = 'customer'").fetchall()
    assert len(customer_ids) == len(set(customer_ids))  # the unique index was rebuilt
    assert one("SELECT count(*) FROM outbox WHERE state <> 'sent'").fetchone()[0] == 0
    assert one("SELECT count(*) FROM timers WHERE state IN ('active', 'held')"
               " AND due <= ?", (time.time() + 3600,)).fetchone()[0] == 0
    assert one("SELECT max(created_at) FROM cases").fetchone()[0] < time.time()
    numbers = [row[0] for row in one("SELECT number FROM cases")]
    assert len(numbers) == len(set(numbers))
    from mailflow.cases import NumberFormat

    assert all(NumberFormat.valid(number) for number in numbers)
    for number in numbers:  # every day's sequence is past its numbers
        prefix, day, sequence, _ = number.split("-")
        (value,), = one("SELECT value FROM sequences WHERE name = ?", (f"{prefix}-{day}",))
        assert value >= int(sequence)
    assert one("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert one("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_the_instruction_count_feeds_distinct_mail_through_the_replay_engine(
        tmp_path: Path) -> None:
    """The child that cachegrind watches (here without it): its messages go the whole
    way, each a new case on the shipped rules."""
    assert instructions.main(["--child", "4", "--work", str(tmp_path)]) == 0
    with sqlite3.connect(tmp_path / "replay" / "replay.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 4
        assert conn.execute("SELECT count(*) FROM cases").fetchone()[0] >= 3
    conn.close()
    report = "==41== \n==41== I   refs:      7,150,123,456\n"
    assert instructions.refs_of(report) == 7_150_123_456
    assert instructions.refs_of("valgrind: command not found") is None
