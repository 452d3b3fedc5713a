"""Empty mail, as customers' clients really send it, through the real daemon.

An empty message (no subject, no text, no attachment: a click on "send" too early) is
relayed and counted, and opens no case: nothing to answer, no acknowledgement. A message
with text but no subject is a case like any other; its acknowledgement's subject does
not end on a dangling colon.
"""

from __future__ import annotations

import sqlite3
import time
from email import message_from_bytes
from email.header import decode_header, make_header
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest

from clirunner import run_cli
from conftest import NULL_SENDERS, REPO, Daemon, Sink, full_chain_rules

pytestmark = pytest.mark.slow

EMPTY = (b"From: Claire <claire@client.test>\r\nTo: sav@example.com\r\n"
         b"Message-ID: <empty-1@client.test>\r\nDate: Mon, 7 Dec 2026 09:00:00 +0100\r\n"
         b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\r\n")
NO_SUBJECT = (b"From: Claire <claire@client.test>\r\nTo: sav@example.com\r\n"
              b"Message-ID: <nosubject-1@client.test>\r\n"
              b"Date: Mon, 7 Dec 2026 09:05:00 +0100\r\nSubject: \r\n"
              b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
              b"Bonjour, ma commande 4821 n'est pas arriv\xc3\xa9e.\r\n")


@pytest.fixture
def daemon(daemon_factory: Any, tmp_path: Path) -> Daemon:
    d: Daemon = daemon_factory(rules=full_chain_rules(tmp_path / "rules-src"))
    return d


def cases_of(db: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT number, subject FROM cases").fetchall()
    finally:
        conn.close()


def test_an_empty_message_is_relayed_and_counted_and_opens_no_case(
        daemon: Daemon, sink: Sink) -> None:
    code, text = daemon.send(EMPTY, mail_from="claire@client.test")
    assert code == 250, text
    (relayed,) = sink.wait_for(1)
    daemon.settle()
    time.sleep(0.3)  # an acknowledgement would have been released by now
    assert [m for m in sink.messages if m.mail_from in NULL_SENDERS] == []
    assert relayed.data.endswith(EMPTY)  # the customer's bytes, our headers prepended
    assert cases_of(daemon.db) == []
    report = run_cli("report", "--since", "1d", "--config", str(daemon.config_path), cwd=REPO)
    assert "mail: inbound 1," in report.stdout, report.stdout
    assert "empty message: no subject, no text, no attachment" in daemon.log


def test_a_message_without_subject_gets_an_acknowledgement_without_a_dangling_colon(
        daemon: Daemon, sink: Sink) -> None:
    code, text = daemon.send(NO_SUBJECT, mail_from="claire@client.test")
    assert code == 250, text
    sink.wait_for(2)
    daemon.settle()
    (ack,) = [m for m in sink.messages if m.mail_from in NULL_SENDERS]
    subject = str(make_header(decode_header(
        message_from_bytes(ack.data, policy=default_policy)["Subject"])))
    ((number, _),) = cases_of(daemon.db)
    assert subject == f"[{number}] Accusé de réception"
