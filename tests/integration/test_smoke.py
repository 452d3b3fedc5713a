"""The smallest end-to-end proof: one message through the real daemon to a real next hop."""

from __future__ import annotations

from conftest import Daemon, Sink


def test_relays_with_headers_prepended_and_body_intact(daemon: Daemon, sink: Sink) -> None:
    original = (b"From: Claire <claire@client.test>\r\nTo: sav@example.com\r\n"
                b"Subject: Bonjour\r\nMessage-ID: <smoke-1@client.test>\r\n\r\n"
                b"Ligne 1\r\n.leading dot\r\nLigne 3\r\n")
    code, text = daemon.send(original)
    assert code == 250, text
    (got,) = sink.wait_for(1)
    assert got.rcpt_tos == ["sav@example.com"]
    assert got.data.endswith(original)
    added = got.data[: -len(original)]
    assert added.startswith(b"Received: from client.test")
    assert b"X-Mailflow-Gateway: mailflow\r\n" in added
