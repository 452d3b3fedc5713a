"""Timers fired by the real daemon on a test clock: once, across restarts and kill -9.

A fixture plugin (tests/fixtures/timer_plugin) schedules ``fixture.ping`` an
hour after each message; its handler mails ``ping@example.com`` through the
next hop (the sink). Time moves by rewriting the daemon's clock file.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from clirunner import run_cli
from conftest import Daemon, Received, Sink, metric, parse_email, wait_for_port
from mailflow.cli.cases import calendar_zone, when
from mailflow.config import load_settings

pytestmark = pytest.mark.slow

PLUGIN_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "timer_plugin"
T0 = 1_800_000_000.0  # a Friday morning, 2027-01-15
HOUR = 3600.0


def ping_rules(folder: Path, **ping: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "rules.yaml", "w", encoding="utf-8") as fh:
        YAML().dump({"local_domains": ["example.com"], "chain": ["headers", "fixture_ping"],
                     "headers": {"add": {"X-Mailflow-Gateway": "mailflow"}},
                     "fixture_ping": {"delay": HOUR, **ping}}, fh)
    return folder


def ping_daemon(daemon_factory: Any, tmp_path: Path, **ping: Any) -> Daemon:
    d: Daemon = daemon_factory(config={"plugin_dirs": [str(PLUGIN_DIR)]},
                               rules=ping_rules(tmp_path / "ping-rules", **ping),
                               test_clock=T0)
    return d


def message(subject: str) -> bytes:
    return (f"From: Claire <claire@client.test>\r\nTo: sav@example.com\r\n"
            f"Subject: {subject}\r\nMessage-ID: <{subject}@client.test>\r\n\r\nBody.\r\n"
            ).encode()


def pings(sink: Sink) -> list[Received]:
    return [m for m in sink.messages if m.rcpt_tos == ["ping@example.com"]]


def send(d: Daemon, subject: str) -> None:
    code, text = d.send(message(subject))
    assert code == 250, text


def wait_for_pings(d: Daemon, sink: Sink, count: int, timeout: float = 10.0) -> list[Received]:
    """Wait for ``count`` pings, then for the outbox to drain: what the sink holds then is
    final, so a second ping would be there too."""
    deadline = time.monotonic() + timeout
    while len(pings(sink)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    d.settle()
    got = pings(sink)
    assert len(got) == count, [parse_email(m.data)["Subject"] for m in got]
    return got


def fired(d: Daemon) -> int:
    return d.log.count('"event": "timer_fired"')


def wait_quiet(d: Daemon, polls: int = 5) -> None:
    """Let the scheduler poll a few times (0.2 s each) with nothing to do."""
    time.sleep(polls * 0.2)
    d.settle()


def timers_cli(d: Daemon, *args: str) -> Any:
    return run_cli("timers", *args, "--config", str(d.config_path))


def test_a_timer_fires_once_when_the_clock_passes_its_due_time(daemon_factory: Any,
                                                               tmp_path: Path,
                                                               sink: Sink) -> None:
    d = ping_daemon(daemon_factory, tmp_path)
    assert '"event": "test_clock_in_use"' in d.log
    send(d, "T-1")
    sink.wait_for(1)  # the message itself
    d.advance(HOUR - 5)
    wait_quiet(d)
    assert pings(sink) == []  # five seconds early
    d.advance(10)
    (got,) = wait_for_pings(d, sink, 1)
    assert got.mail_from in ("", "<>")
    assert parse_email(got.data)["Subject"] == "ping T-1"
    d.advance(HOUR)
    wait_quiet(d)
    assert len(pings(sink)) == 1 and fired(d) == 1
    assert metric(d, "mailflow_timers_fired_total", kind="fixture.ping") == 1


def test_two_workers_fire_each_timer_once(daemon_factory: Any, tmp_path: Path,
                                         sink: Sink) -> None:
    """With ``workers: 2`` both processes poll the same timers: the lease gives each to
    one of them."""
    d: Daemon = daemon_factory(config={"plugin_dirs": [str(PLUGIN_DIR)], "workers": 2},
                               rules=ping_rules(tmp_path / "ping-rules"), test_clock=T0)
    subjects = [f"T-w{i}" for i in range(20)]
    for subject in subjects:
        send(d, subject)
    sink.wait_for(20)
    d.advance(HOUR + 1)
    got = wait_for_pings(d, sink, 20)
    wait_quiet(d)
    assert sorted(str(parse_email(m.data)["Subject"]) for m in got) == sorted(
        f"ping {s}" for s in subjects)
    assert len(pings(sink)) == 20 and fired(d) == 20


def test_a_restart_between_scheduling_and_due_fires_once(daemon_factory: Any, tmp_path: Path,
                                                         sink: Sink) -> None:
    d = ping_daemon(daemon_factory, tmp_path)
    send(d, "T-restart")
    sink.wait_for(1)
    assert d.stop() == 0
    d.set_time(T0 + 2 * HOUR)  # due while the daemon was down
    d.start()
    wait_for_pings(d, sink, 1)
    assert d.stop() == 0
    d.start()  # and not again after another restart
    wait_quiet(d)
    assert len(pings(sink)) == 1


def test_kill_9_after_scheduling_then_a_restart_past_due_fires_once(daemon_factory: Any,
                                                                    tmp_path: Path,
                                                                    sink: Sink) -> None:
    d = ping_daemon(daemon_factory, tmp_path)
    send(d, "T-kill")
    sink.wait_for(1)
    d.kill()
    d.advance(HOUR + 1)
    d.start()
    wait_for_pings(d, sink, 1)
    d.kill()  # killed after firing: done and its mail committed together
    d.start()
    wait_quiet(d)
    assert len(pings(sink)) == 1


def test_a_handler_failing_twice_then_working_sends_one_mail(daemon_factory: Any,
                                                             tmp_path: Path,
                                                             sink: Sink) -> None:
    counter = tmp_path / "runs"
    d = ping_daemon(daemon_factory, tmp_path, fail_first=2, counter_file=str(counter))
    send(d, "T-flaky")
    sink.wait_for(1)
    d.advance(HOUR)
    deadline = time.monotonic() + 10
    while d.log.count('"event": "timer_failed"') < 2 and time.monotonic() < deadline:
        d.advance(5)  # past each back-off (0.5 s, then 1 s of the test clock)
        time.sleep(0.2)
    assert d.log.count('"event": "timer_failed"') == 2
    d.advance(5)  # past the second back-off: the third run works
    (got,) = wait_for_pings(d, sink, 1)
    assert parse_email(got.data)["Subject"] == "ping T-flaky"
    assert counter.read_text(encoding="utf-8") == "3"
    assert metric(d, "mailflow_timer_failures_total", kind="fixture.ping") == 2
    assert metric(d, "mailflow_timers_fired_total", kind="fixture.ping") == 1
    d.advance(HOUR)
    wait_quiet(d)
    assert len(pings(sink)) == 1


def test_serve_refuses_a_test_clock_without_the_flag(daemon_factory: Any,
                                                     tmp_path: Path) -> None:
    made: Daemon = daemon_factory(test_clock=T0, start=False)
    made.write_config()
    proc = subprocess.run(made.serve_command(allow_test_clock=False), cwd=made.tmp,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--allow-test-clock" in proc.stderr
    assert "test_clock" in proc.stderr
    assert not made.db.exists()  # refused before the store was touched
    with pytest.raises(TimeoutError):
        wait_for_port(made.port, timeout=0.5)


def test_timers_list_and_cancel(daemon_factory: Any, tmp_path: Path, sink: Sink) -> None:
    d = ping_daemon(daemon_factory, tmp_path)
    send(d, "T-keep")
    send(d, "T-drop")
    sink.wait_for(2)
    listed = timers_cli(d, "list")
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split() == ["id", "case", "kind", "due", "state", "attempts"]
    zone = calendar_zone(load_settings(d.config_path))
    due = when(T0 + HOUR, zone)
    assert len(lines) == 2
    for line, case in zip(lines, ("T-keep", "T-drop"), strict=True):
        assert case in line and "fixture.ping" in line and due in line
        assert line.split()[-2:] == ["active", "0"]
    by_case = json.loads(timers_cli(d, "list", "--case", "T-drop", "--json").stdout)
    assert [(t["case"], t["state"], t["due_local"]) for t in by_case] == [
        ("T-drop", "active", due)]

    cancelled = timers_cli(d, "cancel", "--case", "T-drop", "--kind", "fixture.ping")
    assert cancelled.returncode == 0, cancelled.stderr
    assert str(by_case[0]["id"]) in cancelled.stdout
    again = timers_cli(d, "cancel", str(by_case[0]["id"]))
    assert again.returncode == 1 and "nothing to cancel" in again.stderr

    d.advance(HOUR + 1)
    (got,) = wait_for_pings(d, sink, 1)
    assert parse_email(got.data)["Subject"] == "ping T-keep"  # the cancelled one never fires
    wait_quiet(d)
    assert len(pings(sink)) == 1
    assert "T-drop" not in timers_cli(d, "list").stdout
    states = {t["case"]: t["state"] for t in json.loads(
        timers_cli(d, "list", "--all", "--json").stdout)}
    assert states == {"T-keep": "done", "T-drop": "cancelled"}

