"""SIGHUP reloads rules atomically (a bad reload keeps the running ones); SIGTERM drains."""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from conftest import REPO, Daemon, Sink

pytestmark = pytest.mark.slow  # starts the daemon: `pytest -m 'not slow'` leaves it out

PLUGIN_DIR = REPO / "tests" / "fixtures" / "plugin_dir"
LOCATED = re.compile(r"chain\.yaml:\d+:\d+: ")


def write_chain(rules: Path, text: str) -> None:
    (rules / "chain.yaml").write_text(text, encoding="utf-8")


def chain_yaml(gateway: str, chain: str = "[headers]") -> str:
    return f"chain: {chain}\nheaders:\n  add:\n    X-Mailflow-Gateway: {gateway}\n"


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    directory = tmp_path / "rules-src"
    directory.mkdir()
    (directory / "domains.yaml").write_text("local_domains: [example.com]\n", encoding="utf-8")
    write_chain(directory, chain_yaml("first"))
    return directory


def message(n: int) -> bytes:
    return (b"From: Claire <claire@client.test>\r\nTo: sav@example.com\r\n"
            + f"Subject: reload {n}\r\nMessage-ID: <reload-{n}@client.test>\r\n\r\n".encode()
            + b"Hello.\r\n")


def wait_count(d: Daemon, text: str, count: int, timeout: float = 10.0) -> str:
    """Wait until ``text`` occurs ``count`` times in the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = d.log
        if log.count(text) >= count:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not {count} times in the log:\n{d.log[-3000:]}")


def started(d: Daemon) -> Daemon:
    """The port opens before the signal handlers exist: signal only a ready daemon."""
    d.wait_for_log('"event": "ready"')
    return d


def gateway_of(sink: Sink, index: int) -> bytes:
    data = sink.wait_for(index + 1)[index].data
    match = re.search(rb"^X-Mailflow-Gateway: (.*)\r\n", data, re.MULTILINE)
    assert match, data[:1000]
    return match.group(1)


def test_sighup_applies_a_good_change(daemon_factory: Any, rules: Path, sink: Sink) -> None:
    d: Daemon = started(daemon_factory(rules=rules))
    assert d.send(message(1))[0] == 250
    assert gateway_of(sink, 0) == b"first"
    write_chain(d.rules, chain_yaml("second"))
    d.signal(signal.SIGHUP)
    wait_count(d, '"event": "reloaded"', 1)
    assert d.send(message(2))[0] == 250
    assert gateway_of(sink, 1) == b"second"


@pytest.mark.parametrize(("broken", "where"), [
    pytest.param("chain: [headers\nheaders:\n  add: {X-Mailflow-Gateway: broken}\n",
                 r"chain\.yaml:1:8: this '\[' is not closed by a '\]'", id="yaml-syntax-error"),
    pytest.param(chain_yaml("broken", "[headers, no_such_stage]"),
                 r"chain\.yaml:1:18: no stage named 'no_such_stage'", id="unknown-stage"),
    pytest.param(chain_yaml("broken") + "no_such_section: {a: 1}\n",
                 r"chain\.yaml:5:1: section 'no_such_section'", id="unknown-section"),
])
def test_sighup_with_broken_rules_keeps_the_running_ones(daemon_factory: Any, rules: Path,
                                                         sink: Sink, broken: str,
                                                         where: str) -> None:
    d: Daemon = started(daemon_factory(rules=rules))
    write_chain(d.rules, broken)
    d.signal(signal.SIGHUP)
    log = wait_count(d, '"event": "reload_failed"', 1)
    failed = next(line for line in log.splitlines() if '"reload_failed"' in line)
    assert LOCATED.search(failed), failed
    assert re.search(where, failed), failed
    assert '"event": "reloaded"' not in log
    assert d.proc is not None and d.proc.poll() is None
    code, text = d.send(message(1))
    assert code == 250, text
    assert gateway_of(sink, 0) == b"first"  # the old configuration, whole
    # fixing the file and reloading again works
    write_chain(d.rules, chain_yaml("fixed"))
    d.signal(signal.SIGHUP)
    wait_count(d, '"event": "reloaded"', 1)
    assert d.send(message(2))[0] == 250
    assert gateway_of(sink, 1) == b"fixed"


def test_sigterm_finishes_the_message_in_flight_then_exits_0(daemon_factory: Any,
                                                             tmp_path: Path,
                                                             sink: Sink) -> None:
    rules = tmp_path / "slow-rules"
    rules.mkdir()
    with open(rules / "rules.yaml", "w", encoding="utf-8") as fh:
        YAML().dump({"local_domains": ["example.com"], "chain": ["headers", "fixture_slow"],
                     "headers": {"add": {"X-Mailflow-Gateway": "mailflow"}},
                     "fixture_slow": {"seconds": 1.5}}, fh)
    d: Daemon = started(daemon_factory(config={"plugin_dirs": [str(PLUGIN_DIR)]},
                                       rules=rules))
    replies: list[tuple[int, bytes]] = []
    sender = threading.Thread(target=lambda: replies.append(d.send(message(1))))
    sender.start()
    d.wait_for_log("fixture_slow_started")
    d.signal(signal.SIGTERM)
    d.wait_for_log('"event": "stopping"')
    # no new connections once stopping, while the message in flight goes on
    deadline = time.monotonic() + 2
    refused = False
    while not refused and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", d.port), timeout=0.5) as s:
                s.recv(100)  # with only a lingering accept, this is a close (b"")
        except OSError:
            refused = True
        else:
            time.sleep(0.05)
    assert refused, "the daemon still accepts connections after SIGTERM"
    sender.join(15)
    assert not sender.is_alive()
    assert replies and replies[0][0] == 250, replies
    (got,) = sink.wait_for(1)
    assert b"X-Fixture-Slow: done\r\n" in got.data
    assert d.proc is not None
    assert d.proc.wait(15) == 0
    assert '"event": "stopped"' in d.log
    assert "Traceback" not in d.log


def test_sighup_right_after_start_does_not_kill_the_daemon(daemon_factory: Any, rules: Path,
                                                           sink: Sink) -> None:
    d: Daemon = daemon_factory(rules=rules)  # the port is open; the loop may not run yet
    d.signal(signal.SIGHUP)
    started(d)
    time.sleep(0.3)
    assert d.proc is not None and d.proc.poll() is None, d.log[-2000:]
    assert d.send(message(1))[0] == 250
    sink.wait_for(1)
