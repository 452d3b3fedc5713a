"""``smtp.max_processing``: the real daemon keeps at most so many messages in the works;
the others wait after DATA, their wait counted in ``chain_timeout``; none is lost."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import REPO, Daemon, Sink
from rawsmtp import RawClient

pytestmark = pytest.mark.slow  # starts the daemon

PLUGIN_DIR = REPO / "tests" / "fixtures" / "plugin_dir"


def message(n: int) -> bytes:
    return (f"From: Claire <claire{n}@client.test>\r\nTo: sav@example.com\r\n"
            f"Subject: question {n}\r\nMessage-ID: <q{n}@client.test>\r\n\r\n"
            f"Question number {n}.\r\n.\r\n").encode()


def slow_daemon(daemon_factory: Callable[..., Daemon], tmp_path: Path, seconds: float,
                **config: object) -> Daemon:
    """One slot, and a chain of one stage that takes ``seconds``."""
    rules = tmp_path / "slow-rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(
        "local_domains: [example.com]\nchain: [fixture_slow]\n"
        f"fixture_slow: {{seconds: {seconds}}}\n", encoding="utf-8")
    return daemon_factory(config={"plugin_dirs": [str(PLUGIN_DIR)],
                                  "smtp": {"max_processing": 1}, **config}, rules=rules)


def sent_at_once(daemon: Daemon, count: int) -> list[RawClient]:
    clients = [RawClient(daemon.port) for _ in range(count)]
    for n, client in enumerate(clients):
        client.greet()
        client.envelope(mail_from=f"<claire{n}@client.test>".encode())
    for n, client in enumerate(clients):
        client.send(message(n))
    return clients


def test_messages_beyond_the_slots_wait_their_turn_and_all_get_through(
        daemon_factory: Callable[..., Daemon], tmp_path: Path, sink: Sink) -> None:
    daemon = slow_daemon(daemon_factory, tmp_path, 0.6)
    started = time.monotonic()
    clients = sent_at_once(daemon, 3)
    replies = []
    for client in clients:
        replies.append(client.reply())
    took = time.monotonic() - started
    assert [code for code, _ in replies] == [250, 250, 250], replies
    assert took >= 1.7, took  # one after the other: three times the stage's 0.6 s
    got = sink.wait_for(3)
    assert sorted(m.rcpt_tos[0] for m in got) == ["sav@example.com"] * 3


def test_the_wait_counts_in_the_chain_timeout(
        daemon_factory: Callable[..., Daemon], tmp_path: Path, sink: Sink) -> None:
    daemon = slow_daemon(daemon_factory, tmp_path, 2.0, chain_timeout=3.0)
    replies = sorted((code, text[:5]) for code, text in
                     (client.reply() for client in sent_at_once(daemon, 2)))
    # the one that got the slot second waited ~2 s of its 3, then needed 2 s more
    assert replies[0][0] == 250 and replies[1] == (451, b"4.3.0"), replies
    assert len(sink.wait_for(1)) == 1
    time.sleep(0.5)
    assert len(sink.messages) == 1  # the refused one was not relayed: its client resends
