"""What a client is told when its message is too big, when the daemon stops under it,
and what an operator is told when a port is taken: the real daemon, over raw SMTP."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import REPO, Daemon, Sink
from rawsmtp import CRLF, RawClient

pytestmark = pytest.mark.slow  # starts the daemon: `pytest -m 'not slow'` leaves it out

DaemonFactory = Callable[..., Daemon]
PLUGIN_DIR = REPO / "tests" / "fixtures" / "plugin_dir"
LIMIT = 2048
TOO_BIG = f"5.3.4 Message size exceeds fixed limit ({LIMIT} bytes)".encode()
SHUTTING_DOWN = (421, b"4.3.2 Service shutting down")
NORMAL = (b"From: Claire <claire@client.test>\r\nTo: sav@example.com\r\n"
          b"Subject: fits\r\nMessage-ID: <fits@client.test>\r\n\r\nA message that fits.\r\n")
HALF = (b"From: Claire <claire@client.test>\r\nTo: sav@example.com\r\n"
        b"Subject: cut short\r\nMessage-ID: <half@client.test>\r\n\r\n"
        b"The first lines of a message whose end never comes.\r\n")


def small_daemon(daemon_factory: DaemonFactory, relay_rules: Path) -> Daemon:
    return daemon_factory(config={"smtp": {"max_message_size": LIMIT}}, rules=relay_rules)


def stopped_cleanly(daemon: Daemon) -> None:
    assert daemon.proc is not None
    assert daemon.proc.wait(30) == 0, daemon.log[-3000:]
    assert "Traceback" not in daemon.log, daemon.log[-3000:]


# ---------------------------------------------------------------------------
# size
# ---------------------------------------------------------------------------


def test_declared_size_over_the_limit_gets_552_5_3_4_with_the_limit(
        daemon_factory: DaemonFactory, relay_rules: Path, sink: Sink) -> None:
    daemon = small_daemon(daemon_factory, relay_rules)
    client = RawClient(daemon.port)
    assert f"SIZE {LIMIT}".encode() in client.greet()
    assert client.cmd(b"MAIL FROM:<customer@client.test> SIZE=100000") == (552, TOO_BIG)
    # a size that fits is taken, and the message goes through
    assert client.cmd(b"MAIL FROM:<customer@client.test> SIZE=500")[0] == 250
    assert client.cmd(b"RCPT TO:<sav@example.com>")[0] == 250
    assert client.cmd(b"DATA")[0] == 354
    client.send(NORMAL + b".\r\n")
    assert client.reply()[0] == 250
    client.quit()
    (got,) = sink.wait_for(1)
    assert got.data.endswith(NORMAL)


def test_data_over_the_limit_gets_552_5_3_4_and_nothing_is_relayed(
        daemon_factory: DaemonFactory, relay_rules: Path, sink: Sink) -> None:
    daemon = small_daemon(daemon_factory, relay_rules)
    client = RawClient(daemon.port)
    client.greet()
    client.envelope()  # no SIZE= declared
    client.send(b"Subject: big\r\n\r\n" + (b"y" * 78 + CRLF) * 60 + b".\r\n")
    assert client.reply() == (552, TOO_BIG)
    # the session goes on with a message that fits; only that one reaches the next hop
    client.envelope()
    client.send(NORMAL + b".\r\n")
    assert client.reply()[0] == 250
    client.quit()
    (got,) = sink.wait_for(1)
    assert got.data.endswith(NORMAL)
    time.sleep(0.3)
    assert len(sink.messages) == 1


# ---------------------------------------------------------------------------
# shutdown
# ---------------------------------------------------------------------------


def test_sigterm_in_the_middle_of_data_gets_421_and_drops_the_message(
        daemon: Daemon, sink: Sink) -> None:
    client = RawClient(daemon.port)
    client.greet()
    client.envelope()
    client.send(HALF)
    time.sleep(0.3)  # the daemon has read what was sent and waits for more
    daemon.signal(signal.SIGTERM)
    assert client.reply() == SHUTTING_DOWN
    assert client.is_closed()
    stopped_cleanly(daemon)
    # the daemon is gone: nothing of that message can reach the next hop any more
    assert sink.messages == []
    assert '"reason": "shutting down"' in daemon.log


def test_sigterm_tells_idle_sessions_421(daemon: Daemon) -> None:
    just_connected = RawClient(daemon.port)
    assert just_connected.reply()[0] == 220  # greeting read, no EHLO yet
    greeted = RawClient(daemon.port)
    greeted.greet()
    in_transaction = RawClient(daemon.port)
    in_transaction.greet()
    assert in_transaction.cmd(b"MAIL FROM:<customer@client.test>")[0] == 250
    assert in_transaction.cmd(b"RCPT TO:<sav@example.com>")[0] == 250
    time.sleep(0.1)
    daemon.signal(signal.SIGTERM)
    for client in (just_connected, greeted, in_transaction):
        assert client.reply() == SHUTTING_DOWN
        assert client.is_closed()
    stopped_cleanly(daemon)


def sigterm_while_processing(daemon_factory: DaemonFactory, tmp_path: Path,
                             seconds: float) -> tuple[Daemon, RawClient]:
    """A daemon whose chain takes ``seconds``, told to stop while it processes a message."""
    rules = tmp_path / "slow-rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(
        "local_domains: [example.com]\nchain: [fixture_slow]\n"
        f"fixture_slow: {{seconds: {seconds}}}\n", encoding="utf-8")
    daemon = daemon_factory(config={"plugin_dirs": [str(PLUGIN_DIR)]}, rules=rules)
    client = RawClient(daemon.port)
    client.greet()
    client.envelope()
    client.send(NORMAL + b".\r\n")
    daemon.wait_for_log("fixture_slow_started")
    daemon.signal(signal.SIGTERM)
    return daemon, client


def test_a_message_being_processed_finishes_then_the_session_gets_421(
        daemon_factory: DaemonFactory, tmp_path: Path, sink: Sink) -> None:
    daemon, client = sigterm_while_processing(daemon_factory, tmp_path, 1.5)
    daemon.wait_for_log('"event": "stopping"')
    code, text = client.reply()  # the real answer, once the message is safe
    assert code == 250, text
    (got,) = sink.wait_for(1)
    assert b"X-Fixture-Slow: done\r\n" in got.data
    # the next command of that session is told the daemon is going
    assert client.cmd(b"MAIL FROM:<customer@client.test>") == SHUTTING_DOWN
    assert client.is_closed()
    stopped_cleanly(daemon)


def test_quit_after_the_last_reply_still_gets_221(
        daemon_factory: DaemonFactory, tmp_path: Path, sink: Sink) -> None:
    daemon, client = sigterm_while_processing(daemon_factory, tmp_path, 1)
    assert client.reply()[0] == 250
    assert client.cmd(b"QUIT")[0] == 221
    assert client.is_closed()
    assert len(sink.wait_for(1)) == 1
    stopped_cleanly(daemon)


# ---------------------------------------------------------------------------
# a port already taken
# ---------------------------------------------------------------------------


def serve_once(daemon: Daemon) -> subprocess.CompletedProcess[str]:
    """``mailflow serve`` on ``daemon``'s configuration, expected to give up at start."""
    daemon.write_config()
    return subprocess.run([sys.executable, "-m", "mailflow.cli", "serve", "--config",
                           str(daemon.config_path)], capture_output=True, text=True,
                          timeout=60, cwd=daemon.tmp, check=False)


@pytest.mark.parametrize(("listener", "purpose"), [
    ("listen", ""), ("submission_listen", " (submission)"), ("metrics", " (metrics)")])
def test_a_taken_port_is_named_and_the_second_daemon_exits_non_zero(
        daemon_factory: DaemonFactory, relay_rules: Path, listener: str, purpose: str) -> None:
    first = daemon_factory(rules=relay_rules)
    taken = first.port if listener != "metrics" else first.metrics_port
    second = daemon_factory(rules=relay_rules, start=False)
    second.config[listener] = f"127.0.0.1:{taken}"
    result = serve_once(second)
    assert result.returncode != 0
    assert (f"cannot listen on 127.0.0.1:{taken}{purpose}: Address already in use"
            " (another mailflow") in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    # the first daemon is untouched
    assert first.proc is not None and first.proc.poll() is None
    assert first.send(NORMAL)[0] == 250
