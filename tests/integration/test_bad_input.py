"""Hostile and broken SMTP input against the real daemon, over raw sockets.

smtplib cleans up what it sends (line endings, dot-stuffing, address checks),
so every test here writes the exact bytes itself. Each test checks the precise
reply, what the next hop (the sink) received, and that the daemon still relays
a normal message afterwards.
"""

from __future__ import annotations

import re
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import aiosmtpd
import pytest

from conftest import REPO, Daemon, Sink
from rawsmtp import CRLF, RawClient

# one daemon for the module's `daemon` tests: none sends it a signal or needs a fresh store
pytestmark = [pytest.mark.slow, pytest.mark.one_daemon]

BARE_NEWLINE = re.compile(rb"\r(?!\n)|(?<!\r)\n")

DaemonFactory = Callable[..., Daemon]

NORMAL = (b"From: Claire <claire@client.test>\r\nTo: sav@example.com\r\n"
          b"Subject: still here\r\nMessage-ID: <after@client.test>\r\n\r\n"
          b"A normal message after the hostile one.\r\n")












def assert_healthy(daemon: Daemon, sink: Sink, before: int) -> None:
    """The daemon is alive, logged no crash, and still relays a normal message."""
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log[-3000:]
    time.sleep(0.3)  # anything wrongly relayed by the hostile session has arrived by now
    assert len(sink.messages) == before, [m.data[:200] for m in sink.messages]
    code, text = daemon.send(NORMAL)
    assert code == 250, text
    got = sink.wait_for(before + 1)
    assert len(got) == before + 1
    assert got[-1].data.endswith(NORMAL)
    log = daemon.log
    assert "Traceback" not in log, log[-3000:]
    assert "smtp_session_error" not in log, log[-3000:]
    assert "message_failed" not in log, log[-3000:]


def assert_clean_line_endings(data: bytes) -> None:
    """Every LF is preceded by CR and every CR followed by LF."""
    match = BARE_NEWLINE.search(data)
    assert match is None, f"bare CR/LF at {match.start()}: {data[max(0, match.start() - 40):]!r}"


# --------------------------------------------------------------------------
# SMTP smuggling
# --------------------------------------------------------------------------

SMUGGLED = (b"MAIL FROM:<evil@client.test>\r\nRCPT TO:<sav@example.com>\r\nDATA\r\n"
            b"From: evil@client.test\r\nTo: sav@example.com\r\nSubject: smuggled\r\n\r\n"
            b"smuggled body\r\n")
#: separator → how it reaches the next hop: bare CR/LF made CRLF (a leading dot after a
#: real CRLF is removed by SMTP transparency, as RFC 5321 4.5.2 says)
SEPARATORS = {
    b"\n.\r\n": b"\r\n.\r\n",
    b"\r.\r\n": b"\r\n.\r\n",
    b"\n.\n": b"\r\n.\r\n",
    b"\n.\r": b"\r\n.\r\n",
    b"\r\n.\n": b"\r\n\r\n",
}


def smuggling_message(separator: bytes) -> bytes:
    return (b"From: claire@client.test\r\nTo: sav@example.com\r\nSubject: first\r\n\r\n"
            b"first body" + separator + SMUGGLED)


@pytest.mark.parametrize(("separator", "relayed"), SEPARATORS.items(), ids=repr)
def test_smuggled_end_of_data_stays_inside_one_normalised_message(
        daemon: Daemon, sink: Sink, raw: RawClient, separator: bytes, relayed: bytes) -> None:
    raw.envelope()
    raw.send(smuggling_message(separator) + b".\r\n")
    code, text = raw.reply()
    assert code == 250, text
    # Nothing of the smuggled block was taken as commands: the next reply is QUIT's.
    assert raw.cmd(b"QUIT")[0] == 221
    (got,) = sink.wait_for(1)
    time.sleep(0.5)
    assert len(sink.messages) == 1
    assert got.mail_from == "customer@client.test"
    assert got.rcpt_tos == ["sav@example.com"]
    assert_clean_line_endings(got.data)
    # the smuggled block reached the next hop as body text of the one message
    assert b"first body" + relayed + SMUGGLED in got.data
    assert got.data.endswith(b"smuggled body\r\n")
    assert_healthy(daemon, sink, before=1)


@pytest.mark.parametrize("separator", SEPARATORS, ids=repr)
def test_bare_newlines_normalised_by_mailflow_itself(daemon_factory: DaemonFactory, sink: Sink,
                                                     relay_rules: Path, tmp_path: Path,
                                                     separator: bytes) -> None:
    """aiosmtplib also fixes line endings on the way out; a Maildir next hop shows that
    mailflow normalises on its own (a Maildir stores CRLF as LF, so no CR may remain)."""
    maildir = tmp_path / "maildir"
    daemon = daemon_factory(config={"next_hop": f"maildir:{maildir}"}, rules=relay_rules)
    raw = RawClient(daemon.port)
    raw.greet()
    raw.envelope()
    raw.send(smuggling_message(separator) + b".\r\n")
    code, text = raw.reply()
    assert code == 250, text
    raw.quit()
    code, text = daemon.send(NORMAL)
    assert code == 250, text
    delivered = [f.read_bytes() for f in (maildir / "new").iterdir()]
    assert len(delivered) == 2
    normal, hostile = sorted(delivered, key=lambda data: b"first body" in data)
    assert b"\r" not in hostile
    assert b"first body\n" in hostile and hostile.endswith(b"\nsmuggled body\n")
    assert normal.endswith(NORMAL.replace(b"\r\n", b"\n"))
    assert sink.messages == []


@pytest.mark.parametrize("separator", SEPARATORS, ids=repr)
def test_bare_newlines_rejected_when_configured(daemon_factory: DaemonFactory, sink: Sink,
                                                relay_rules: Path, separator: bytes) -> None:
    daemon: Daemon = daemon_factory(config={"smtp": {"bare_newlines": "reject"}},
                                     rules=relay_rules)
    raw = RawClient(daemon.port)
    raw.greet()
    raw.envelope()
    raw.send(smuggling_message(separator) + b".\r\n")
    code, text = raw.reply()
    assert (code, text[:6]) == (550, b"5.5.2 "), text
    raw.quit()
    assert_healthy(daemon, sink, before=0)


def test_starttls_injection_fix_is_pinned() -> None:
    """CVE-2024-34083 (STARTTLS command injection) is fixed in aiosmtpd 1.4.6: keep it pinned."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "aiosmtpd==1.4.6" in project["project"]["dependencies"]
    assert aiosmtpd.__version__ == "1.4.6"


# --------------------------------------------------------------------------
# Odd bytes in the message
# --------------------------------------------------------------------------


@pytest.mark.parametrize("message", [
    b"From: a@client.test\r\nSubject: nul in body\r\n\r\nbefore\x00after\r\n",
    b"From: a@client.test\r\nSubject: nul\x00in header\r\n\r\nbody\r\n",
    b"From: a@client.test\r\nX-\x00: \x00\x00\r\n\r\n\x00\r\n",
], ids=["body", "header-value", "everywhere"])
def test_nul_bytes_are_relayed_unchanged(daemon: Daemon, sink: Sink, raw: RawClient,
                                         message: bytes) -> None:
    raw.envelope()
    raw.send(message + b".\r\n")
    code, text = raw.reply()
    assert code == 250, text
    (got,) = sink.wait_for(1)
    assert got.data.endswith(message)
    raw.cmd(b"QUIT")
    assert_healthy(daemon, sink, before=1)


def test_raw_8bit_headers_are_relayed_byte_for_byte(daemon: Daemon, sink: Sink,
                                                     raw: RawClient) -> None:
    message = (b"From: J\xc3\xa9r\xc3\xb4me <jerome@client.test>\r\nTo: sav@example.com\r\n"
               b"Subject: caf\xc3\xa9 cr\xe8me \xff\xfe\r\n\r\nd\xe9j\xe0 vu \xc3\xa9t\xc3\xa9\r\n")
    raw.envelope()
    raw.send(message + b".\r\n")
    code, text = raw.reply()
    assert code == 250, text
    (got,) = sink.wait_for(1)
    assert got.data.endswith(message)
    assert_clean_line_endings(got.data)
    raw.cmd(b"QUIT")
    assert_healthy(daemon, sink, before=1)


# --------------------------------------------------------------------------
# Long lines
# --------------------------------------------------------------------------


def test_megabyte_header_line_is_refused_and_session_goes_on(daemon: Daemon, sink: Sink,
                                                             raw: RawClient) -> None:
    raw.envelope()
    raw.send(b"Subject: " + b"h" * (1 << 20) + b"\r\n\r\nbody\r\n.\r\n")
    code, text = raw.reply()
    assert code == 500 and b"Line too long" in text, text
    # the same session can still send a message
    raw.envelope()
    raw.send(NORMAL + b".\r\n")
    code, text = raw.reply()
    assert code == 250, text
    (got,) = sink.wait_for(1)
    assert got.data.endswith(NORMAL)
    assert raw.cmd(b"QUIT")[0] == 221
    assert_healthy(daemon, sink, before=1)


def test_megabyte_command_line_is_refused(daemon: Daemon, sink: Sink, raw: RawClient) -> None:
    code, text = raw.cmd(b"NOOP " + b"x" * (1 << 20))
    assert code == 500 and b"too long" in text, text
    assert raw.cmd(b"NOOP")[0] == 250
    assert raw.cmd(b"QUIT")[0] == 221
    assert_healthy(daemon, sink, before=0)


class TestLongLinesToTolerantNextHop:
    @pytest.fixture
    def sink(self) -> Iterator[Sink]:
        s = Sink(long_lines=True)
        s.start()
        yield s
        s.stop()

    def test_ten_thousand_octet_line_is_accepted_and_relayed_intact(
            self, daemon: Daemon, sink: Sink, raw: RawClient) -> None:
        line = b"".join(b"%09d " % i for i in range(1000))  # 10,000 octets
        assert len(line) == 10_000
        message = b"From: a@client.test\r\nSubject: long\r\n\r\n" + line + b"\r\nend\r\n"
        raw.envelope()
        raw.send(message + b".\r\n")
        code, text = raw.reply()
        assert code == 250, text
        (got,) = sink.wait_for(1)
        assert got.data.endswith(message)
        raw.cmd(b"QUIT")
        assert_healthy(daemon, sink, before=1)


# --------------------------------------------------------------------------
# Broken commands
# --------------------------------------------------------------------------


def test_pipelined_binary_garbage_gets_500_per_line(daemon: Daemon, sink: Sink,
                                                    raw: RawClient) -> None:
    garbage = [b"\xff\xfe\x00\x01", b"", b"\x80\x81 \x82", b"\xc3\xa9\xc3\xa9 hello",
               b"\x1b[31m\x07"]
    raw.send(b"".join(line + CRLF for line in garbage) + b"NOOP\r\n")
    replies = [raw.reply() for _ in garbage]
    assert [code for code, _ in replies] == [500] * len(garbage), replies
    assert raw.reply()[0] == 250  # the NOOP after the junk
    assert raw.cmd(b"QUIT")[0] == 221
    assert_healthy(daemon, sink, before=0)


def test_unknown_commands_get_500_then_the_session_is_closed(daemon: Daemon, sink: Sink,
                                                             raw: RawClient) -> None:
    expected = {b"XYZZY": 500, b"FOO bar": 500, b"MAIL": 501, b"GET / HTTP/1.1": 500}
    for command, wanted in expected.items():
        code, text = raw.cmd(command)
        assert code == wanted, (command, text)
    # aiosmtpd gives up after a handful of unknown commands
    replies = [raw.cmd(b"BOGUS%d" % i) for i in range(2)]
    assert replies[-1][0] == 502, replies
    assert raw.is_closed()
    assert_healthy(daemon, sink, before=0)


def test_mail_from_with_cr_is_refused(daemon: Daemon, sink: Sink, raw: RawClient) -> None:
    code, text = raw.cmd(b"MAIL FROM:<a\rb@x>")
    assert code == 501, text
    # no sender was recorded: a recipient is refused for lack of MAIL
    assert raw.cmd(b"RCPT TO:<sav@example.com>")[0] == 503
    code, text = raw.cmd(b"MAIL FROM:<a\x00b@client.test>")
    assert code == 501, text
    # a recipient with a CR is refused too
    assert raw.cmd(b"MAIL FROM:<customer@client.test>")[0] == 250
    code, text = raw.cmd(b"RCPT TO:<sav\r@example.com>")
    assert code == 501, text
    assert raw.cmd(b"RSET")[0] == 250
    # the session goes on
    raw.envelope()
    raw.send(NORMAL + b".\r\n")
    assert raw.reply()[0] == 250
    (got,) = sink.wait_for(1)
    assert got.mail_from == "customer@client.test"
    assert raw.cmd(b"QUIT")[0] == 221
    assert_healthy(daemon, sink, before=1)


def test_relaying_for_strangers_is_denied(daemon: Daemon, sink: Sink, raw: RawClient) -> None:
    assert raw.cmd(b"MAIL FROM:<customer@client.test>")[0] == 250
    for rcpt in (b"<someone@elsewhere.test>", b"<sav%elsewhere.test@example.com>",
                 b"<@example.com:someone@elsewhere.test>"):
        code, text = raw.cmd(b"RCPT TO:" + rcpt)
        assert code == 550 and text.startswith(b"5.7.1 "), (rcpt, text)
    code, text = raw.cmd(b"DATA")
    assert code == 503, text
    assert raw.cmd(b"QUIT")[0] == 221
    assert_healthy(daemon, sink, before=0)


# --------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------


def test_fourth_session_from_one_address_gets_421(daemon_factory: DaemonFactory,
                                                  sink: Sink, relay_rules: Path) -> None:
    daemon: Daemon = daemon_factory(config={"smtp": {"max_sessions_per_client": 3}},
                                     rules=relay_rules)
    clients = []
    for _ in range(3):  # one after the other: the daemon's readiness probe must be gone
        client = RawClient(daemon.port)
        client.greet()
        clients.append(client)
    fourth = RawClient(daemon.port)
    code, text = fourth.reply()
    assert (code, text[:6]) == (421, b"4.7.0 "), text
    assert fourth.is_closed()
    fourth.close()
    # the admitted sessions work normally
    code, _ = clients[0].cmd(b"NOOP")
    assert code == 250
    # a slot frees up when a session ends
    assert clients.pop().cmd(b"QUIT")[0] == 221
    deadline = time.monotonic() + 5
    while True:
        again = RawClient(daemon.port)
        code, text = again.reply()
        if code == 220 or time.monotonic() > deadline:
            break
        again.close()
        time.sleep(0.1)
    assert code == 220, text
    again.close()
    for client in clients:
        client.close()
    time.sleep(0.3)  # let the daemon see the closes before the health check connects
    assert_healthy(daemon, sink, before=0)


def test_oversize_message_gets_552(daemon_factory: DaemonFactory, sink: Sink,
                                   relay_rules: Path) -> None:
    daemon: Daemon = daemon_factory(config={"smtp": {"max_message_size": 2048}},
                                     rules=relay_rules)
    raw = RawClient(daemon.port)
    raw.greet()
    # declared too big
    code, text = raw.cmd(b"MAIL FROM:<customer@client.test> SIZE=100000")
    assert code == 552, text
    # sent too big
    raw.envelope()
    raw.send(b"Subject: big\r\n\r\n" + (b"y" * 78 + CRLF) * 60 + b".\r\n")
    code, text = raw.reply()
    assert code == 552, text
    # the session continues with a message that fits
    raw.envelope()
    raw.send(NORMAL + b".\r\n")
    assert raw.reply()[0] == 250
    (got,) = sink.wait_for(1)
    assert got.data.endswith(NORMAL)
    raw.quit()
    assert_healthy(daemon, sink, before=1)


# --------------------------------------------------------------------------
# Clients that vanish
# --------------------------------------------------------------------------


@pytest.mark.parametrize("tail", [
    b"body without end",
    b"body\r\n",
    b"body\r\n.",  # half the terminator
    b"body\r\n.\r",
], ids=["mid-line", "line-end", "dot", "dot-cr"])
@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_vanishing_mid_data_relays_nothing(daemon: Daemon, sink: Sink, raw: RawClient,
                                                 tail: bytes, how: str) -> None:
    raw.envelope()
    raw.send(b"From: a@client.test\r\nSubject: cut\r\n\r\n" + tail)
    time.sleep(0.2)
    if how == "reset":
        raw.reset()
    else:
        raw.close()
    time.sleep(0.5)
    assert sink.messages == []
    assert_healthy(daemon, sink, before=0)
