"""The store becomes unavailable under load, then comes back, without a restart.

Three ways, each against the real daemon with the full chain (so every
message also owes an acknowledgement), while the load generator sends a
paced stream of messages and a thread polls /healthz:

* locked: another SQLite connection holds ``BEGIN EXCLUSIVE`` on the store
  file. A lock shorter than SQLite's busy timeout (5 s) is absorbed: the
  writes wait, the clients get their 250 late. One of 8 s is absorbed too, but
  for the first group of writes; so the lock is held 12 s: every write queued
  during its first 5 s fails at 10 s and its client gets a 4xx;
* disk full: the state directory is a small tmpfs of its own; the write-ahead
  log is checkpointed (TRUNCATE) and the file system filled to the last byte,
  so SQLite's next write fails with ENOSPC (``SQLITE_FULL``, "database or disk
  is full"); the filler is then removed. (``PRAGMA max_page_count`` is not
  used: it only limits the connection that sets it, not the daemon's.)
* read-only: the store and its write-ahead log are made immutable
  (``chattr +i``): every write through the daemon's open descriptors then
  fails with EPERM, which SQLite reports as ``SQLITE_IOERR_WRITE``, as it does
  for EROFS after a file system was remounted read-only. (Remounting read-only
  is refused with EBUSY while the daemon has files open for writing, and
  permissions do not bind root, whose tests these are; the mode of the files
  would not matter anyway to descriptors already open.)

Asserted each time: clients get 4xx (never a 5xx, never a 250 for what was not
committed), the log says why (``store_commit_failed`` with SQLite's reason),
/healthz answers 503 during the outage and 200 after it, the daemon (same
process) takes mail again with 250 once the store is back, every message ends
up at the next hop exactly once after the clients' retries, and every
acknowledgement owed is sent exactly once.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import Envelope
from harness import (
    HealthPoller,
    acks_by_original,
    assert_no_loss,
    faulty_sink,
    full_chain_rules,
    healthz,
    wait_for_acks,
    wait_until,
)
from loadgen import LoadGen, analyse, copies, make_mails, report

from conftest import Daemon, Sink

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

N = 1000
RATE = 60.0  # messages per second offered: the load spans the whole outage
OUTAGE = 12.0  # seconds


@pytest.fixture
def figures_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "reliability-figures.json"


@dataclass
class Outage:
    name: str
    start: Callable[[], None]
    end: Callable[[], None]
    reason: str  # SQLite's words, expected in the log


def run_outage(daemon: Daemon, sink: Sink, outage: Outage, figures_file: Path) -> None:
    assert daemon.proc is not None
    pid = daemon.proc.pid
    mails = make_mails(N, outage.name)
    started = time.monotonic()
    with HealthPoller(daemon.metrics_port) as health:
        load = LoadGen(daemon.port, mails, concurrency=8, rate=RATE, deadline=60,
                       max_attempts=60).start()
        load.wait_progress(N // 6, timeout=30)
        t_start = time.monotonic()
        outage.start()
        try:
            time.sleep(OUTAGE)
        finally:
            outage.end()
        t_end = time.monotonic()
        load.join()
        assert wait_until(lambda: healthz(daemon.metrics_port) == 200, timeout=20), \
            "/healthz did not come back to 200"
    seconds = time.monotonic() - started
    accepted = [m for m in mails if m.accepted]
    wait_for_acks(sink, accepted, timeout=30)
    # the same process takes mail again
    code, text = daemon.send(make_mails(1, f"{outage.name}-after")[0].data)
    daemon.settle()  # nothing left to send: a second copy of anything would be here
    assert daemon.proc is not None and daemon.proc.pid == pid and daemon.proc.poll() is None
    log = daemon.log
    daemon.stop()

    replies = [(a.code, a.text) for m in mails for a in m.attempts]
    tempfails = [r for r in replies if r[0] is not None and 400 <= r[0] < 500]
    during = health.between(t_start, t_end + 1.0)
    figures, _ = analyse(f"store-{outage.name}", mails, sink.messages, seconds,
                         outage_s=OUTAGE, tempfails=len(tempfails),
                         healthz_503=during.count(503))
    acks = acks_by_original(copies(sink.messages))
    figures.notes["acks_owed"] = len(accepted)
    figures.notes["acks_sent"] = sum(len(acks.get(m.message_id, [])) for m in mails)
    report(figures, figures_file)

    assert code == 250, text
    assert tempfails, "no client was ever told to come back later: the outage was not felt"
    assert all(r[1].startswith("4.") for r in tempfails), tempfails[:3]
    assert_no_loss(figures, mails)  # no 5xx; every message delivered, once
    assert "store_commit_failed" in log and outage.reason in log, log[-3000:]
    assert 503 in during, during
    assert [len(acks.get(m.message_id, [])) for m in accepted] == [1] * len(accepted)


# --------------------------------------------------------------------------- locked


def test_store_locked_tempfails_then_recovers_without_restart(
        daemon_factory: Any, sink: Sink, tmp_path: Path, figures_file: Path) -> None:
    faulty_sink(sink)
    daemon: Daemon = daemon_factory(rules=full_chain_rules(tmp_path))
    db = daemon.tmp / "state" / "mailflow.sqlite3"
    holder: list[sqlite3.Connection] = []

    def lock() -> None:
        conn = sqlite3.connect(db, timeout=30, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")  # waits for the daemon's current commit
        holder.append(conn)

    def unlock() -> None:
        for conn in holder:
            conn.execute("ROLLBACK")
            conn.close()

    run_outage(daemon, sink, Outage("locked", lock, unlock, "database is locked"),
               figures_file)


# --------------------------------------------------------------------------- disk full


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs of its own (root only): a disk that can really fill up."""
    mnt = tmp_path / "statefs"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.fail("mounting a small file system needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs",
                           str(mnt)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def fill(path: Path) -> None:
    """Write ``path`` until the file system has no byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1):
            chunk = b"\0" * size
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, chunk)
    finally:
        os.close(fd)


def test_disk_full_tempfails_then_recovers_without_restart(
        small_fs: Path, daemon_factory: Any, sink: Sink, tmp_path: Path,
        figures_file: Path) -> None:
    faulty_sink(sink)
    daemon: Daemon = daemon_factory(rules=full_chain_rules(tmp_path),
                                    config={"state_dir": str(small_fs)})
    db = small_fs / "mailflow.sqlite3"
    filler = small_fs / "filler"

    def full() -> None:
        # an empty write-ahead log: the daemon's next commit needs new blocks
        conn = sqlite3.connect(db, timeout=30, isolation_level=None)
        try:
            for _ in range(50):
                if conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0:
                    break
                time.sleep(0.05)
        finally:
            conn.close()
        fill(filler)

    run_outage(daemon, sink, Outage("disk-full", full, filler.unlink,
                                    "database or disk is full"), figures_file)


# --------------------------------------------------------------------------- read-only


def chattr(flag: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, text=True,
                          check=False)


def require_chattr(tmp_path: Path) -> None:
    """The read-only store is made with `chattr +i` (root ignores file modes): it must work."""
    probe = tmp_path / "chattr-probe"
    probe.write_bytes(b"x")
    try:
        done = chattr("+i", probe)
    except FileNotFoundError:
        pytest.fail("chattr is not installed")
    if done.returncode != 0:
        pytest.fail(f"chattr +i does not work here: {done.stderr.strip()}")
    chattr("-i", probe)


def test_read_only_store_tempfails_then_recovers_without_restart(
        daemon_factory: Any, sink: Sink, tmp_path: Path, figures_file: Path) -> None:
    require_chattr(tmp_path)
    faulty_sink(sink)
    daemon: Daemon = daemon_factory(rules=full_chain_rules(tmp_path))
    db = daemon.tmp / "state" / "mailflow.sqlite3"
    files = (db, db.with_name(db.name + "-wal"))  # not -shm: mapped, a write would SIGBUS

    def read_only() -> None:
        done = chattr("+i", *files)
        assert done.returncode == 0, done.stderr

    def writable() -> None:
        chattr("-i", *files)

    try:
        run_outage(daemon, sink, Outage("read-only", read_only, writable, "disk I/O error"),
                   figures_file)
    finally:
        chattr("-i", *files)  # or nobody can remove the test's files


# ------------------------------------------------------- the store fails mid-message


def test_store_failing_after_the_next_hop_took_the_message_duplicates_nothing(
        daemon_factory: Any, sink: Sink, tmp_path: Path, figures_file: Path) -> None:
    """The worst moment: the message is committed ``pending`` and relayed, and the store
    turns read-only before mailflow records that the next hop took it.

    The client must not be told to send again (the next hop would get it twice):
    it gets its 250, and what the message owes (its acknowledgement) is released
    once the store takes writes again, without a restart.
    """
    require_chattr(tmp_path)
    handler = faulty_sink(sink)
    daemon: Daemon = daemon_factory(rules=full_chain_rules(tmp_path))
    db = daemon.tmp / "state" / "mailflow.sqlite3"
    files = (db, db.with_name(db.name + "-wal"))
    broken: list[float] = []

    def break_store(envelope: Envelope) -> bool:  # in the next hop, as it takes the message
        done = chattr("+i", *files)
        assert done.returncode == 0, done.stderr
        broken.append(time.monotonic())
        return True

    mails = make_mails(20, "mid-message")
    started = time.monotonic()
    try:
        handler.on_data = break_store
        first = LoadGen(daemon.port, mails[:1], concurrency=1, deadline=30).start()
        assert wait_until(lambda: bool(broken), timeout=20)
        time.sleep(3.0)
        chattr("-i", *files)
        first.join()
        rest = LoadGen(daemon.port, mails[1:], concurrency=4, deadline=30).start()
        rest.join()
    finally:
        chattr("-i", *files)
    wait_for_acks(sink, mails, timeout=20)
    time.sleep(1.0)
    log = daemon.log
    daemon.stop()
    figures, _ = analyse("store-fails-mid-message", mails, sink.messages,
                         time.monotonic() - started)
    acks = acks_by_original(copies(sink.messages))
    figures.notes["acks_sent"] = sum(len(acks.get(m.message_id, [])) for m in mails)
    report(figures, figures_file)

    assert "disk I/O error" in log
    assert "release_deferred" in log and "release_recorded" in log
    assert_no_loss(figures, mails)
    assert mails[0].attempts[0].code == 250, mails[0].attempts  # the next hop had it
    assert [len(acks.get(m.message_id, [])) for m in mails] == [1] * len(mails)


def test_store_failing_as_an_ack_is_sent_sends_it_once(
        daemon_factory: Any, sink: Sink, tmp_path: Path, figures_file: Path) -> None:
    """The store turns read-only while the next hop takes an acknowledgement: once the
    store is back (no restart), the outbox records the ack as sent, so neither the end
    of its lease nor a restart sends it a second time."""
    require_chattr(tmp_path)
    handler = faulty_sink(sink)
    daemon: Daemon = daemon_factory(rules=full_chain_rules(tmp_path))
    db = daemon.tmp / "state" / "mailflow.sqlite3"
    files = (db, db.with_name(db.name + "-wal"))
    broken: list[float] = []

    def break_store_on_ack(envelope: Envelope) -> bool:
        if envelope.mail_from not in ("", "<>"):
            return False
        done = chattr("+i", *files)
        assert done.returncode == 0, done.stderr
        broken.append(time.monotonic())
        return True

    (mail,) = make_mails(1, "ack-mid-send")
    handler.on_data = break_store_on_ack
    try:
        load = LoadGen(daemon.port, [mail], concurrency=1, deadline=20).start()
        load.join()
        assert wait_until(lambda: bool(broken), timeout=20)
        time.sleep(3.0)
    finally:
        chattr("-i", *files)

    def state() -> str:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return str(conn.execute("SELECT state FROM outbox").fetchone()[0])
        finally:
            conn.close()
    recorded = wait_until(lambda: state() == "sent", timeout=20, step=0.2)
    daemon.stop()
    daemon.start()  # recover() frees what was leased: anything not recorded goes again
    time.sleep(2.0)
    log = daemon.log
    daemon.stop()
    acks = acks_by_original(copies(sink.messages))
    report(analyse("store-fails-as-ack-sent", [mail], sink.messages, 0.0,
                   acks_sent=len(acks.get(mail.message_id, [])))[0], figures_file)
    assert mail.accepted
    assert "disk I/O error" in log and "outbox_sent_not_recorded" in log
    assert recorded, "the ack sent was never recorded: its lease would send it again"
    assert len(acks[mail.message_id]) == 1
