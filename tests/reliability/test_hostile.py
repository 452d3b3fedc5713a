"""Hostile clients against the real daemon, over raw sockets; hostile bytes towards the next hop.

tests/integration/test_bad_input.py already covers the basic cases (smuggled end-of-data
kept in the body, NUL bytes, long lines, garbage commands, a plain open-relay attempt,
the per-client session cap, oversize). This file goes further:

- outbound smuggling: the next hop is a raw-socket server *vulnerable* to SMTP smuggling
  (it ends DATA on ``\\n.\\n``, ``\\r.\\r\\n``, ``\\n.\\r\\n``... too) that records the exact
  bytes it receives: whatever the client sends, it must count exactly one message;
- STARTTLS command injection (CVE-2024-34083, CVE-2011-0411) with a real certificate;
- the relay client and CR/LF in addresses (GHSA-v3q9-hj7j-63hq);
- header floods, deep MIME, huge messages and lines: precise replies, bounded memory;
- invalid UTF-8 with and without SMTPUTF8;
- slow-loris and non-reading clients: cut off by the idle timeout, slots released;
- every address form an open relay could be abused with;
- header injection into the Received header through HELO.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, Sink
from rawsmtp import CRLF, RawClient

# one daemon for the module's `daemon` tests: none sends it a signal or needs a fresh store
pytestmark = [pytest.mark.slow, pytest.mark.one_daemon]

BARE_NEWLINE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
DaemonFactory = Callable[..., Daemon]

NORMAL = (b"From: Claire <claire@client.test>\r\nTo: sav@example.com\r\n"
          b"Subject: still here\r\nMessage-ID: <after@client.test>\r\n\r\n"
          b"A normal message after the hostile one.\r\n")

#: What was tried, by kind: printed at the end of the module (run with -s to see it).
TRIED: dict[str, int] = {}


def tried(kind: str, count: int = 1) -> None:
    TRIED[kind] = TRIED.get(kind, 0) + count


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    total = sum(TRIED.values())
    print(f"\n[hostile] {total} hostile inputs tried: "
          + ", ".join(f"{k} {v}" for k, v in sorted(TRIED.items())))


# --------------------------------------------------------------------------
# A client that sends exactly the bytes it is given
# --------------------------------------------------------------------------




def dot_stuffed(message: bytes) -> bytes:
    """``message`` as DATA puts it on the wire: leading dots doubled, then the terminator."""
    if not message.endswith(CRLF):
        message += CRLF
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


def assert_clean_line_endings(data: bytes) -> None:
    match = BARE_NEWLINE.search(data)
    assert match is None, f"bare CR/LF at {match.start()}: {data[max(0, match.start() - 60):]!r}"


def rss_kib(pid: int) -> int:
    """Resident memory of a process, in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def assert_healthy(daemon: Daemon, sink: Sink) -> None:
    """Still alive, no crash in the log, and a normal message still goes through."""
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log[-3000:]
    before = len(sink.messages)
    code, text = daemon.send(NORMAL)
    assert code == 250, text
    got = sink.wait_for(before + 1)
    assert got[-1].data.endswith(NORMAL)
    log = daemon.log
    for bad in ("Traceback", "smtp_session_error", "message_failed"):
        assert bad not in log, log[-3000:]










# --------------------------------------------------------------------------
# A next hop vulnerable to SMTP smuggling
# --------------------------------------------------------------------------

#: How a smuggling-vulnerable server finds the end of DATA: any line break, a dot, any
#: line break (Postfix before 3.8.4 with bare LF, Exchange, Sendmail, Cisco...).
VULNERABLE_END = re.compile(rb"(?:\r\n|\n|\r)\.(?:\r\n|\n|\r)")
#: ...and how it splits commands: on LF, CR or CRLF.
VULNERABLE_EOL = re.compile(rb"\r\n|\n|\r")


def _complete(match: re.Match[bytes] | None, buf: bytes) -> re.Match[bytes] | None:
    """A match, unless it ends on a CR at the end of what arrived (an LF may follow)."""
    if match is not None and match.end() == len(buf) and buf.endswith(b"\r"):
        return None
    return match


class VulnerableHop:
    """A raw-socket SMTP server that records every byte and is as lax as a vulnerable MTA.

    It counts the messages it would deliver, ending DATA on any ``<EOL>.<EOL>``
    and taking what follows as commands: smuggled transactions would show up
    as extra messages here.
    """

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.streams: list[bytearray] = []  # every byte received, per connection
        self.messages: list[dict[str, Any]] = []
        self.commands: list[bytes] = []
        self.lock = threading.Lock()
        self._stop = False
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        stream = bytearray()
        with self.lock:
            self.streams.append(stream)
        conn.settimeout(30)
        buf = b""
        in_data = False
        txn: dict[str, Any] = {}

        def more() -> bool:
            nonlocal buf
            chunk = conn.recv(65536)
            if not chunk:
                return False
            with self.lock:
                stream.extend(chunk)
            buf += chunk
            return True

        conn.sendall(b"220 vulnerable.test ESMTP\r\n")
        try:
            while not self._stop:
                if in_data:
                    probe = CRLF + buf  # DATA may end at once: "." right after the 354
                    m = _complete(VULNERABLE_END.search(probe), probe)
                    if m is None:
                        if not more():
                            return
                        continue
                    body, buf = probe[2:max(2, m.start())], probe[m.end():]
                    with self.lock:
                        self.messages.append({**txn, "data": body})
                    txn, in_data = {}, False
                    conn.sendall(b"250 2.0.0 queued\r\n")
                    continue
                m = _complete(VULNERABLE_EOL.search(buf), buf)
                if m is None:
                    if not more():
                        return
                    continue
                line, buf = buf[:m.start()], buf[m.end():]
                with self.lock:
                    self.commands.append(line)
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    conn.sendall(b"250-vulnerable.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                                 b"250-SMTPUTF8\r\n250 SIZE 100000000\r\n")
                elif verb == b"MAIL":
                    txn = {"mail": line, "rcpt": []}
                    conn.sendall(b"250 2.1.0 ok\r\n")
                elif verb == b"RCPT":
                    txn.setdefault("rcpt", []).append(line)
                    conn.sendall(b"250 2.1.5 ok\r\n")
                elif verb == b"DATA":
                    in_data = True
                    conn.sendall(b"354 go ahead\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                elif verb in (b"RSET", b"NOOP"):
                    conn.sendall(b"250 ok\r\n")
                else:
                    conn.sendall(b"500 what?\r\n")
        except OSError:
            return
        finally:
            conn.close()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        raise AssertionError(f"expected {count} message(s), got {len(self.messages)}")

    def received(self) -> bytes:
        with self.lock:
            return b"".join(bytes(s) for s in self.streams)

    def close(self) -> None:
        self._stop = True
        self.listener.close()
        self._accepter.join(2)


def transaction_verbs(hop: VulnerableHop) -> list[bytes]:
    """The commands the next hop saw, greetings left out (the client may EHLO twice)."""
    return [c[:4].upper() for c in hop.commands if c[:4].upper() not in (b"EHLO", b"HELO")]


@pytest.fixture
def hop() -> Iterator[VulnerableHop]:
    h = VulnerableHop()
    yield h
    h.close()


SMUGGLED = (b"MAIL FROM:<evil@client.test>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
            b"From: ceo@example.com\r\nTo: victim@example.com\r\nSubject: smuggled\r\n\r\n"
            b"Please wire the money.\r\n")
#: End-of-data look-alikes a client may use to smuggle (CVE-2023-51764/51765/51766...).
SEPARATORS = [b"\n.\r\n", b"\r.\r\n", b"\n.\n", b"\r.\r", b"\n.\r", b"\r.\n",
              b"\r\n.\n", b"\r\n.\r", b"\n..\n", b"\r\n.\r\r\n", b"\n.\r\r\n",
              b"\r\n.\x00\r\n", b"\n.\n\n.\n"]


def smuggling_message(separator: bytes) -> bytes:
    return (b"From: claire@client.test\r\nTo: sav@example.com\r\nSubject: first\r\n"
            b"Message-ID: <first@client.test>\r\n\r\nfirst body" + separator + SMUGGLED)


def test_vulnerable_hop_really_is_vulnerable(hop: VulnerableHop) -> None:
    """The fake next hop must count a smuggled message, or the tests below prove nothing."""
    with socket.create_connection(("127.0.0.1", hop.port), timeout=10) as s:
        s.sendall(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"
                  + smuggling_message(b"\n.\n") + b".\r\nQUIT\r\n")
        while s.recv(65536):
            pass
    assert len(hop.wait_for(2)) == 2


def test_outbound_stream_has_no_bare_newline_and_one_message_per_transaction(
        daemon_factory: DaemonFactory, hop: VulnerableHop, relay_rules: Path) -> None:
    """Whatever the client sends, the bytes relayed carry CRLF only, and a next hop
    vulnerable to smuggling sees exactly one message per transaction, whole."""
    daemon = daemon_factory(config={"next_hop": f"smtp://127.0.0.1:{hop.port}"}, rules=relay_rules)
    for count, separator in enumerate(SEPARATORS, 1):
        client = RawClient(daemon.port)
        client.greet()
        # the whole transaction pipelined in one write, as a smuggler sends it
        client.send(b"MAIL FROM:<customer@client.test>\r\nRCPT TO:<sav@example.com>\r\n"
                    b"DATA\r\n" + smuggling_message(separator) + b"\r\n.\r\nQUIT\r\n")
        replies = [client.reply()[0] for _ in range(5)]
        assert replies == [250, 250, 354, 250, 221], (separator, replies)
        assert client.is_closed(), separator
        client.close()
        tried("smuggling separator (outbound)")
        got = hop.wait_for(count)[-1]
        time.sleep(0.2)
        assert len(hop.messages) == count, (separator, hop.messages[count - 1:])
        assert transaction_verbs(hop) == [b"MAIL", b"RCPT", b"DATA"] * count, hop.commands
        assert got["mail"] == b"MAIL FROM:<customer@client.test>"
        assert got["rcpt"] == [b"RCPT TO:<sav@example.com>"]
        # the smuggled block reached the next hop as text of the one message
        assert got["data"].endswith(b"Please wire the money.\r\n"), (separator, got["data"])
        assert b"first body\r\n" in got["data"], separator
    assert_clean_line_endings(hop.received())


def test_outbound_smuggling_in_a_dsn_sized_message(daemon_factory: DaemonFactory,
                                                   hop: VulnerableHop, relay_rules: Path) -> None:
    """Hundreds of smuggling attempts in one large message: still one message downstream."""
    daemon = daemon_factory(config={"next_hop": f"smtp://127.0.0.1:{hop.port}"}, rules=relay_rules)
    body = b"".join(b"line %d" % i + SEPARATORS[i % len(SEPARATORS)] + SMUGGLED
                    for i in range(600))
    message = b"From: claire@client.test\r\nSubject: many\r\n\r\n" + body
    tried("smuggling separator (outbound)", 600)
    client = RawClient(daemon.port)
    client.greet()
    client.envelope()
    client.send(message + b"\r\n.\r\n")
    code, text = client.reply()
    assert code == 250, text
    client.quit()
    hop.wait_for(1)
    time.sleep(0.3)
    assert len(hop.messages) == 1
    assert transaction_verbs(hop) == [b"MAIL", b"RCPT", b"DATA"], hop.commands
    assert_clean_line_endings(hop.received())
    assert hop.messages[0]["data"].count(b"Please wire the money.") == 600


# --------------------------------------------------------------------------
# STARTTLS command injection
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed (Debian: apt-get install openssl)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-subj", "/CN=localhost", "-days", "1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture
def tls_daemon(daemon_factory: DaemonFactory, relay_rules: Path,
               certificate: tuple[Path, Path]) -> Daemon:
    cert, key = certificate
    return daemon_factory(config={"smtp": {"tls_cert": str(cert), "tls_key": str(key)}},
                          rules=relay_rules)


INJECTIONS = {
    "mail": b"MAIL FROM:<evil@client.test>\r\n",
    "transaction": (b"MAIL FROM:<evil@client.test>\r\nRCPT TO:<sav@example.com>\r\nDATA\r\n"
                    b"Subject: injected\r\n\r\ninjected before TLS\r\n.\r\n"),
    "rset-noop": b"RSET\r\nNOOP\r\nNOOP\r\n",
    "bare-lf": b"MAIL FROM:<evil@client.test>\nRCPT TO:<sav@example.com>\n",
}


@pytest.mark.parametrize("injected", INJECTIONS.values(), ids=INJECTIONS.keys())
def test_commands_pipelined_after_starttls_are_discarded(tls_daemon: Daemon, sink: Sink,
                                                         injected: bytes) -> None:
    client = RawClient(tls_daemon.port)
    ehlo = client.greet()
    assert b"STARTTLS" in ehlo
    client.send(b"STARTTLS\r\n" + injected)  # one write: one packet on loopback
    code, text = client.reply()
    assert code == 220, text
    assert client.buf == b""  # nothing else answered in clear
    client.starttls()
    tried("STARTTLS injection")
    # after the handshake the session starts afresh (RFC 3207 4.2): a reply to anything
    # injected would come before the EHLO's, and MAIL would be remembered
    code, text = client.cmd(b"EHLO client.test")
    assert code == 250, text
    assert b"STARTTLS" not in text
    code, text = client.cmd(b"RCPT TO:<sav@example.com>")
    assert code == 503, text  # no MAIL: the injected one was dropped
    code, text = client.cmd(b"NOOP")
    assert code == 250, text
    client.envelope()
    client.send(NORMAL + b".\r\n")
    code, text = client.reply()
    assert code == 250, text
    client.quit()
    (got,) = sink.wait_for(1)
    time.sleep(0.3)
    assert len(sink.messages) == 1
    assert got.mail_from == "customer@client.test" and got.data.endswith(NORMAL)
    assert_healthy(tls_daemon, sink)


def test_starttls_handshake_garbage_keeps_the_daemon_up(tls_daemon: Daemon, sink: Sink) -> None:
    """Plain text where the TLS ClientHello belongs, and a client that vanishes mid-handshake."""
    for junk in (b"MAIL FROM:<evil@client.test>\r\n" * 50, b"\x16\x03\x01\x00\x05" + b"\0" * 5,
                 b""):
        client = RawClient(tls_daemon.port)
        client.greet()
        assert client.cmd(b"STARTTLS")[0] == 220
        if junk:
            client.send(junk)
        tried("STARTTLS handshake garbage")
        assert client.is_closed(wait=10) or junk == b""
        client.close()
    time.sleep(0.5)
    assert sink.messages == []
    assert tls_daemon.proc is not None and tls_daemon.proc.poll() is None
    code, text = tls_daemon.send(NORMAL)
    assert code == 250, text
    assert "Traceback" not in tls_daemon.log, tls_daemon.log[-3000:]


# --------------------------------------------------------------------------
# The relay client: CR/LF in addresses never reaches the next hop as commands
# --------------------------------------------------------------------------

INJECTING_ADDRESSES = [
    "evil@client.test>\r\nRCPT TO:<victim@elsewhere.test",
    "evil@client.test\r\nRSET",
    "evil@client.test\nDATA",
    "evil@client.test\rQUIT",
    '"evil\r\nRCPT TO:<victim@elsewhere.test>"@client.test',
    '"evil\nx"@client.test',
    "evil\x00@client.test",
    "evil@client.test\r",
    "<evil@client.test>",
    "evil @client.test",
    "evil@client.test SIZE=1",
    "\r\n",
]
#: What aiosmtplib would refuse, or rewrite into another address (``a;b@x`` -> ``<a>``).
REWRITTEN_ADDRESSES = ["sav;evil@example.com", "sav,evil@example.com", "sav>x@example.com",
                       "sav[x]@example.com", 'sav"x@example.com', "a\u2028b@client.test",
                       "a\x85b@client.test", "a\u3000b@client.test", "a\tb@client.test",
                       "cust\udcffomer@client.test"]


@pytest.mark.parametrize("address", INJECTING_ADDRESSES + REWRITTEN_ADDRESSES, ids=repr)
def test_check_address_refuses_what_could_become_a_command(address: str) -> None:
    from mailflow.relay import check_address

    tried("address with CR/LF/NUL or rewritten (unit)")
    with pytest.raises(ValueError, match=r"not allowed on an SMTP line|line break|UTF-8"):
        check_address(address)


@pytest.mark.parametrize("address", ["customer@client.test", '"john doe"@client.test',
                                     "j\u00e9r\u00f4me@exemple.test", "a+tag@b.test",
                                     "x@[127.0.0.1]"])
def test_check_address_takes_real_addresses(address: str) -> None:
    from mailflow.relay import check_address

    check_address(address)


def _relay(port: int) -> Any:
    from mailflow.config import NextHop, RelaySettings
    from mailflow.relay import SmtpRelay

    return SmtpRelay(NextHop(kind="smtp", host="127.0.0.1", port=port),
                     RelaySettings(timeout=10), "mailflow.test")


async def test_smtp_relay_refuses_injecting_addresses_against_a_real_next_hop(sink: Sink) -> None:
    relay = _relay(sink.port)
    data = b"Subject: x\r\n\r\nbody\r\n"
    try:
        for address in INJECTING_ADDRESSES + REWRITTEN_ADDRESSES:
            for mail_from, rcpt in ((address, "sav@example.com"),
                                    ("customer@client.test", address)):
                result = await relay.send(mail_from, [rcpt], data)
                assert (result.code, result.text[:6]) == (553, "5.1.3 "), (address, result)
                tried("address with CR/LF/NUL (relay)")
            # one bad recipient among good ones: nothing is sent at all
            result = await relay.send("customer@client.test", ["sav@example.com", address], data)
            assert result.code == 553, result
        assert sink.messages == []
        # the pooled connection (if any) is still in step with the next hop
        result = await relay.send("customer@client.test", ["sav@example.com"], data)
        assert result.ok, result
    finally:
        await relay.close()
    (got,) = sink.wait_for(1)
    assert (got.mail_from, got.rcpt_tos, got.data) == ("customer@client.test",
                                                       ["sav@example.com"], data)


async def test_smtp_relay_command_lines_seen_by_a_lax_next_hop(hop: VulnerableHop) -> None:
    """A next hop that splits commands on CR or LF alone sees nothing of the refused
    addresses, and one transaction for the good one, every line ending in CRLF."""
    relay = _relay(hop.port)
    try:
        for address in INJECTING_ADDRESSES + REWRITTEN_ADDRESSES:
            for mail_from, rcpt in ((address, "sav@example.com"),
                                    ("customer@client.test", address)):
                result = await relay.send(mail_from, [rcpt], b"Subject: x\r\n\r\nx\r\n")
                assert result.code == 553, (address, result)
        result = await relay.send('"a b"@client.test', ["j\u00e9r\u00f4me@example.com"],
                                  b"Subject: x\r\n\r\nx\r\n")
        assert result.ok, result
    finally:
        await relay.close()
    (got,) = hop.wait_for(1)
    assert transaction_verbs(hop) == [b"MAIL", b"RCPT", b"DATA", b"QUIT"], hop.commands
    assert got["mail"] == b'MAIL FROM:<"a b"@client.test> SMTPUTF8'
    assert got["rcpt"] == ["RCPT TO:<j\u00e9r\u00f4me@example.com>".encode()]
    assert b"evil" not in hop.received() and b"victim" not in hop.received()
    assert_clean_line_endings(hop.received())


def test_unsendable_addresses_are_refused_at_mail_and_rcpt(daemon: Daemon, sink: Sink,
                                                           raw: RawClient) -> None:
    """What the relay could not send as it is, the client hears about at once: a 501,
    not a 250 now and a 4xx after DATA (retried for days) or a silently changed address."""
    for address in REWRITTEN_ADDRESSES:
        if "\t" in address or any(0xDC80 <= ord(c) <= 0xDCFF for c in address):
            continue  # aiosmtpd quotes a tab's "a b" (valid); lone surrogates: tests below
        wire = address.encode()
        code, text = raw.cmd(b"MAIL FROM:<" + wire + b"> SMTPUTF8")
        assert code in (501, 553), (address, code, text)
        assert raw.cmd(b"MAIL FROM:<customer@client.test> SMTPUTF8")[0] == 250
        local = wire.partition(b"@")[0]
        code, text = raw.cmd(b"RCPT TO:<" + local + b"@example.com>")
        assert code in (501, 553), (address, code, text)
        assert raw.cmd(b"RSET")[0] == 250
        tried("unsendable address (MAIL/RCPT)", 2)
    assert raw.cmd(b"QUIT")[0] == 221
    time.sleep(0.2)
    assert sink.messages == []
    assert_healthy(daemon, sink)


# --------------------------------------------------------------------------
# Floods, nesting, size: precise replies and bounded memory
# --------------------------------------------------------------------------


def _transaction(daemon: Daemon, message: bytes, *, mail_from: bytes = b"<customer@client.test>",
                 rcpt: bytes = b"<sav@example.com>", timeout: float = 60.0) -> tuple[int, bytes]:
    client = RawClient(daemon.port, timeout=timeout)
    try:
        client.greet()
        client.envelope(mail_from, rcpt)
        client.send(dot_stuffed(message))
        reply = client.reply()
        assert client.cmd(b"QUIT")[0] == 221
        return reply
    finally:
        client.close()


def _nested_mime(depth: int) -> bytes:
    head = b"From: a@client.test\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
    parts = [head + b'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n']
    for level in range(1, depth):
        parts.append(b"--b%d\r\nContent-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n"
                     % (level - 1, level))
    parts.append(b"--b%d\r\nContent-Type: text/plain\r\n\r\ndeepest text\r\n" % (depth - 1))
    parts.extend(b"--b%d--\r\n" % level for level in reversed(range(depth)))
    return b"".join(parts)


def _nested_rfc822(depth: int) -> bytes:
    head = b"".join(b"From: a%d@client.test\r\nSubject: level %d\r\nContent-Type: message/rfc822"
                    b"\r\n\r\n" % (i, i) for i in range(depth))
    return head + b"From: z@client.test\r\nSubject: bottom\r\n\r\nbottom text\r\n"


FLOODS: dict[str, Callable[[], bytes]] = {
    "10000-headers": lambda: b"".join(b"X-Flood-%d: value %d\r\n" % (i, i)
                                      for i in range(10_000))
    + b"From: a@client.test\r\nSubject: flood\r\n\r\nbody\r\n",
    "10000-same-header": lambda: b"Subject: flood\r\n" + b"Comments: spam spam spam\r\n" * 10_000
    + b"\r\nbody\r\n",
    "100000-continuation-lines": lambda: b"Subject: folded\r\n"
    + b"X-Folded: start\r\n" + b" more\r\n" * 100_000 + b"\r\nbody\r\n",
    "5000-encoded-words": lambda: b"Subject:" + b" =?utf-8?q?=C3=A9?=\r\n" * 5000 + b"\r\nb\r\n",
    "1000-deep-multipart": lambda: _nested_mime(1000),
    "1000-deep-rfc822": lambda: _nested_rfc822(1000),
    "20000-flat-parts": lambda: b"Subject: parts\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n'
    + b"--p\r\nContent-Type: text/plain\r\n\r\npart\r\n" * 20_000 + b"--p--\r\n",
    "html-tag-soup": lambda: b"Subject: soup\r\nContent-Type: text/html\r\n\r\n"
    + (b"<a " * 300 + b"\r\n") * 100 + (b"<!--" * 240 + b"\r\n") * 40,
}


def test_header_floods_deep_mime_and_part_floods(daemon: Daemon, sink: Sink) -> None:
    """Each is relayed intact (or refused with a precise 5xx), fast, memory bounded."""
    assert daemon.proc is not None
    baseline = rss_kib(daemon.proc.pid)
    for name, build in FLOODS.items():
        message = build()
        before = len(sink.messages)
        started = time.monotonic()
        code, text = _transaction(daemon, message)
        seconds = time.monotonic() - started
        tried("header flood / deep MIME / part flood")
        assert code == 250, (name, code, text)
        assert seconds < 15, (name, seconds)
        got = sink.wait_for(before + 1)[-1]
        assert got.data.endswith(message), name
        grown = rss_kib(daemon.proc.pid) - baseline
        print(f"  {name}: {len(message)} bytes, {seconds:.2f}s, RSS +{grown // 1024} MiB")
        assert grown < 400 * 1024, (name, grown)
    assert_healthy(daemon, sink)


@pytest.mark.parametrize(("received", "eol", "code"), [
    (100, b"\n", 250), (101, b"\n", 554), (101, b"\r", 554), (10_000, b"\r\n", 554)])
def test_hop_count_with_bare_newlines_and_odd_case(daemon: Daemon, sink: Sink, received: int,
                                                   eol: bytes, code: int) -> None:
    """A loop is recognised whatever the line endings and the spelling of the header
    (bare-LF or bare-CR lines arrive as one SMTP line: keep them under the line limit)."""
    spellings = (b"Received", b"RECEIVED", b"received")
    hops = b"".join(spellings[i % 3] + b": from hop%d.test" % i + eol
                    + b"\tby hop%d.test; Mon, 1 Jan 2024 00:00:00 +0000" % (i + 1) + eol
                    for i in range(received))
    message = hops + b"From: a@client.test" + eol + b"Subject: loop" + eol + eol + b"body" + eol
    client = RawClient(daemon.port)
    client.greet()
    client.envelope()
    client.send(message + b"\r\n.\r\n")
    got, text = client.reply()
    tried("mail loop (Received flood)")
    assert got == code, text
    if code == 554:
        assert text.startswith(b"5.4.6 ") and b"loop" in text, text
    client.quit()
    time.sleep(0.3)
    assert len(sink.messages) == (1 if code == 250 else 0)


def test_huge_message_and_endless_line_keep_memory_bounded(daemon_factory: DaemonFactory,
                                                           sink: Sink, relay_rules: Path) -> None:
    """64 MiB of DATA against a 1 MiB limit, then one 64 MiB line: 552 and 500, and the
    daemon's memory does not grow with what the client sends."""
    daemon = daemon_factory(config={"smtp": {"max_message_size": 1 << 20}}, rules=relay_rules)
    assert daemon.proc is not None
    baseline = rss_kib(daemon.proc.pid)
    chunk = (b"y" * 998 + CRLF) * 1024  # 1 MiB of proper lines
    client = RawClient(daemon.port, timeout=60)
    client.greet()
    client.envelope()
    client.send(b"Subject: big\r\n\r\n")
    for _ in range(64):
        client.send(chunk)
    client.send(b".\r\n")
    code, text = client.reply()
    tried("oversized message")
    assert code == 552, text
    peak = rss_kib(daemon.proc.pid) - baseline
    client.envelope()
    line = b"z" * (1 << 20)
    client.send(b"Subject: one line\r\n\r\n")
    for _ in range(64):
        client.send(line)
    client.send(b"\r\n.\r\n")
    code, text = client.reply()
    tried("oversized line")
    assert code == 500 and b"Line too long" in text, text
    # a command line just as long
    client.send(b"NOOP ")
    for _ in range(64):
        client.send(line)
    client.send(CRLF)
    code, text = client.reply()
    tried("oversized command line")
    assert code == 500 and b"too long" in text, text
    client.quit()
    peak = max(peak, rss_kib(daemon.proc.pid) - baseline)
    print(f"  64 MiB message + 64 MiB line + 64 MiB command: RSS +{peak // 1024} MiB")
    assert peak < 48 * 1024, peak
    assert_healthy(daemon, sink)


# --------------------------------------------------------------------------
# Invalid UTF-8, with and without SMTPUTF8
# --------------------------------------------------------------------------

BAD_UTF8 = [b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80"]


def test_invalid_utf8_addresses_in_an_smtputf8_session(daemon: Daemon, sink: Sink,
                                                       raw: RawClient) -> None:
    """Bytes that are not UTF-8 cannot make a valid address: refused at once with a 5xx,
    never accepted and then tempfailed (which would make the client retry for days)."""
    for bad in BAD_UTF8:
        code, text = raw.cmd(b"MAIL FROM:<cust" + bad + b"omer@client.test> SMTPUTF8")
        assert code == 501 and text.startswith(b"5.1.7"), (bad, text)
        assert raw.cmd(b"MAIL FROM:<customer@client.test> SMTPUTF8")[0] == 250
        code, text = raw.cmd(b"RCPT TO:<sav" + bad + b"@example.com>")
        assert code == 501 and text.startswith(b"5.1.3"), (bad, text)
        code, text = raw.cmd(b"RCPT TO:<sav@exa" + bad + b"mple.com>")
        assert code in (501, 550), (bad, text)
        assert raw.cmd(b"RSET")[0] == 250
        tried("invalid UTF-8 address (SMTPUTF8)", 3)
    # valid UTF-8 addresses and invalid UTF-8 in the content are fine
    raw.envelope(b"<j\xc3\xa9r\xc3\xb4me@client.test> SMTPUTF8", b"<sav@example.com>")
    message = (b"From: J\xc3\xa9r\xc3\xb4me <j\xc3\xa9r\xc3\xb4me@client.test>\r\n"
               b"Subject: bad \xff\xfe \xed\xa0\x80 \xc3\r\n\r\nbody \xc0\xaf \xf8\x88\r\n")
    raw.send(dot_stuffed(message))
    code, text = raw.reply()
    tried("invalid UTF-8 content (SMTPUTF8)")
    assert code == 250, text
    (got,) = sink.wait_for(1)
    assert got.mail_from == "j\u00e9r\u00f4me@client.test"
    assert got.data.endswith(message)
    assert raw.cmd(b"QUIT")[0] == 221
    assert_healthy(daemon, sink)


def test_invalid_utf8_without_smtputf8(daemon_factory: DaemonFactory, sink: Sink,
                                       relay_rules: Path) -> None:
    daemon = daemon_factory(config={"smtp": {"smtputf8": False}}, rules=relay_rules)
    raw = RawClient(daemon.port)
    ehlo = raw.greet()
    assert b"SMTPUTF8" not in ehlo
    for bad in [*BAD_UTF8, b"\xc3\xa9"]:
        code, text = raw.cmd(b"MAIL FROM:<cust" + bad + b"omer@client.test>")
        assert code == 500 and b"ASCII" in text, (bad, text)
        assert raw.cmd(b"MAIL FROM:<customer@client.test>")[0] == 250
        code, text = raw.cmd(b"RCPT TO:<sav" + bad + b"@example.com>")
        assert code == 500 and b"ASCII" in text, (bad, text)
        assert raw.cmd(b"RSET")[0] == 250
        tried("non-ASCII address (no SMTPUTF8)", 2)
    code, text = raw.cmd(b"MAIL FROM:<customer@client.test> SMTPUTF8")
    assert code in (501, 504, 555), text
    # 8-bit content, invalid UTF-8 included, still travels (8BITMIME)
    raw.envelope()
    message = b"From: a@client.test\r\nSubject: caf\xe9 \xff\r\n\r\nd\xe9j\xe0 \xc3\r\n"
    raw.send(dot_stuffed(message))
    code, text = raw.reply()
    tried("invalid UTF-8 content (no SMTPUTF8)")
    assert code == 250, text
    (got,) = sink.wait_for(1)
    assert got.data.endswith(message)
    raw.quit()
    assert_healthy(daemon, sink)


# --------------------------------------------------------------------------
# Header injection through what mailflow writes from client input
# --------------------------------------------------------------------------


@pytest.mark.parametrize("helo", [b"evil.test\rBcc: victim@elsewhere.test",
                                  b"evil.test\x00X-Injected: yes", b"\xff\xfe\r\x0bX-Injected: 1",
                                  b"[127.0.0.1]\x1b[2J", b"h\xc3\xa9l\xc3\xa8ne.test"], ids=repr)
def test_helo_name_cannot_inject_into_received(daemon: Daemon, sink: Sink, helo: bytes) -> None:
    client = RawClient(daemon.port)
    assert client.reply()[0] == 220
    code, text = client.cmd(b"EHLO " + helo)
    tried("header injection via HELO")
    if code != 250:
        assert 500 <= code < 600, text
        client.close()
        return
    client.envelope()
    client.send(dot_stuffed(NORMAL))
    assert client.reply()[0] == 250
    client.cmd(b"QUIT")
    client.close()
    (got,) = sink.wait_for(1)
    head = got.data[: -len(NORMAL)]
    assert_clean_line_endings(head)
    fields = re.findall(rb"^([^ \t:\r\n]+):", head, re.MULTILINE)
    assert fields == [b"Received", b"X-Mailflow-Gateway"], head
    assert b"\x00" not in head and b"\x1b" not in head and b"\x0b" not in head


# --------------------------------------------------------------------------
# Open relay: outside -> outside refused, whatever the address looks like
# --------------------------------------------------------------------------

RELAY_FORMS = [
    b"<someone@elsewhere.test>",
    b"<someone@ELSEWHERE.TEST>",
    b"<someone@elsewhere.test.>",
    b'<"someone@elsewhere.test"@example.com>',
    b'<"someone%elsewhere.test"@example.com>',
    b'<"someone!elsewhere.test"@example.com>',
    b'<"@elsewhere.test:someone"@example.com>',
    b'<"someone\\@elsewhere.test"@example.com>',
    b"<someone%elsewhere.test@example.com>",
    b"<SOMEONE%ELSEWHERE.TEST@EXAMPLE.COM>",
    b"<someone%elsewhere.test%example.com@example.com>",
    b"<elsewhere.test!someone@example.com>",
    b"<someone@elsewhere.test@example.com>",
    b"<@example.com:someone@elsewhere.test>",
    b"<@example.com,@elsewhere.test:someone@other.test>",
    b"<someone@[127.0.0.1]>",
    b"<someone@[192.0.2.1]>",
    b"<someone@[IPv6:::1]>",
    b"<sav@[example.com]>",
    b"<someone@example.com.elsewhere.test>",
    b"<someone@sub.example.com>",
    b"<someone@example.com%elsewhere.test>",
    b"<someone@exampl\xd0\xb5.com>",  # Cyrillic e
    b"<someone@elsewhere.test> NOTIFY=SUCCESS ORCPT=rfc822;sav@example.com",
    b"someone@elsewhere.test",
    b"<someone@elsewhere.test>@example.com",
    b"<someone@elsewhere.test,sav@example.com>",
    b"<sav@example.com,someone@elsewhere.test>",
    b"<someone@elsewhere.test (sav@example.com)>",
    b"<postmaster>",
    b"<>",
]


def test_source_route_to_a_local_mailbox_is_delivered_to_that_mailbox_only(
        daemon: Daemon, sink: Sink, raw: RawClient) -> None:
    """RFC 5321 appendix C: a server may ignore the route. aiosmtpd drops it, so the mail
    goes to the final, local mailbox, and the next hop never sees the foreign domain."""
    raw.envelope(rcpt=b"<@elsewhere.test,@other.test:someone@example.com>")
    raw.send(dot_stuffed(NORMAL))
    assert raw.reply()[0] == 250
    tried("open-relay address form")
    (got,) = sink.wait_for(1)
    assert got.rcpt_tos == ["someone@example.com"]
    assert b"elsewhere" not in got.data


def test_open_relay_refused_for_every_address_form(daemon: Daemon, sink: Sink,
                                                   raw: RawClient) -> None:
    assert raw.cmd(b"MAIL FROM:<customer@client.test>")[0] == 250
    answers = {}
    for rcpt in RELAY_FORMS:
        code, text = raw.cmd(b"RCPT TO:" + rcpt)
        answers[rcpt] = (code, text)
        tried("open-relay address form")
    accepted = {r: a for r, a in answers.items() if a[0] < 400}
    assert accepted == {}, accepted
    for rcpt, (code, text) in answers.items():
        assert code in (501, 550, 553, 555), (rcpt, code, text)
        if code == 550:
            assert text.startswith(b"5.7.1 Relaying denied"), (rcpt, text)
    code, text = raw.cmd(b"DATA")
    assert code == 503, text  # no recipient was taken
    # a sender forged as ours changes nothing
    assert raw.cmd(b"RSET")[0] == 250
    assert raw.cmd(b"MAIL FROM:<sav@example.com>")[0] == 250
    assert raw.cmd(b"RCPT TO:<someone@elsewhere.test>")[0] == 550
    assert raw.cmd(b"QUIT")[0] == 221
    time.sleep(0.3)
    assert sink.messages == []
    assert_healthy(daemon, sink)


# --------------------------------------------------------------------------
# Slow clients: cut off by the idle timeout, their slots given back
# --------------------------------------------------------------------------

IDLE = 3.0


@pytest.fixture
def quick_daemon(daemon_factory: DaemonFactory, relay_rules: Path,
                 certificate: tuple[Path, Path]) -> Daemon:
    """smtp.idle_timeout 3 s (so the chain and the relay must fit in well under it)."""
    cert, key = certificate
    return daemon_factory(config={
        "smtp": {"idle_timeout": IDLE, "max_sessions_per_client": 5,
                 "tls_cert": str(cert), "tls_key": str(key)},
        "chain_timeout": 1, "relay": {"timeout": 1}}, rules=relay_rules)


def sessions(daemon: Daemon) -> float:
    """Open SMTP sessions, from the daemon's own gauge."""
    import urllib.request

    deadline = time.monotonic() + 10
    while True:  # the SMTP port listens before the metrics server is up: wait for it
        assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics",
                                        timeout=5) as response:
                text = response.read().decode()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    match = re.search(r"^mailflow_smtp_sessions (\S+)$", text, re.MULTILINE)
    assert match, text[:2000]
    return float(match.group(1))


def _loris(port: int, setup: bytes, drip: bytes, starttls: bool, out: dict[str, Any]) -> None:
    """Send ``setup`` at once, then ``drip`` one byte a second; note when we were cut off."""
    client = RawClient(port, timeout=30)
    try:
        client.greet(b"slow.test")
        if starttls:
            assert client.cmd(b"STARTTLS")[0] == 220
        elif setup:
            client.send(setup)
        started = time.monotonic()
        out["replies"] = []
        for byte in drip:
            try:
                client.send(bytes([byte]))
            except OSError:
                break
            client.sock.settimeout(1.0)
            try:
                chunk = client.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            out["replies"].append(chunk)
        out["cut_after"] = time.monotonic() - started
    finally:
        client.close()


LORIS = {
    "command": (b"", b"EHLO slow.test\r\n" * 4, False),
    "data": (b"MAIL FROM:<slow@client.test>\r\nRCPT TO:<sav@example.com>\r\nDATA\r\n",
             b"Subject: slow\r\n\r\n" + b"x" * 60, False),
    "tls-handshake": (b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40, True),
}


def test_slow_loris_clients_are_cut_off_and_others_served(quick_daemon: Daemon,
                                                          sink: Sink) -> None:
    results: dict[str, dict[str, Any]] = {name: {} for name in LORIS}
    threads = [threading.Thread(target=_loris, args=(quick_daemon.port, *spec, results[name]))
               for name, spec in LORIS.items()]
    for t in threads:
        t.start()
    time.sleep(1.0)
    # meanwhile, a normal client is served at once
    started = time.monotonic()
    code, text = quick_daemon.send(NORMAL)
    assert code == 250, text
    assert time.monotonic() - started < 2
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    for name, out in results.items():
        tried("slow-loris")
        print(f"  slow-loris {name}: cut off after {out.get('cut_after', 0):.1f}s")
        # one byte a second would take a minute: the idle timeout (3 s) ends it
        assert IDLE - 0.5 <= out["cut_after"] <= IDLE + 4, (name, out)
    # the dripped message was never taken: the 354 was the last reply
    assert b"".join(results["data"]["replies"]).endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n")
    # the slot is given back at the latest 1 s after the polite close (TIMEOUT_GRACE)
    deadline = time.monotonic() + 3
    while sessions(quick_daemon) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sessions(quick_daemon) == 0
    # every slot is free again: five sessions at once from this address
    clients = [RawClient(quick_daemon.port) for _ in range(5)]
    for client in clients:
        client.greet()
    for client in clients:
        client.close()
    (got,) = sink.wait_for(1)
    assert got.data.endswith(NORMAL)
    assert "Traceback" not in quick_daemon.log, quick_daemon.log[-3000:]


def test_client_that_never_reads_its_replies_is_cut_off(quick_daemon: Daemon,
                                                        sink: Sink) -> None:
    """Pipelined commands whose replies are never read fill the daemon's send buffer:
    the session must still end at the idle timeout and give back its slot."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", quick_daemon.port))
    client.settimeout(20)
    flood = b"EHLO reader.test\r\n" + b"HELP\r\n" * 200_000
    progress = {"sent": 0}

    def pour() -> None:
        with contextlib.suppress(OSError):
            while progress["sent"] < len(flood):
                progress["sent"] += client.send(flood[progress["sent"]:progress["sent"] + 65536])

    pourer = threading.Thread(target=pour, daemon=True)
    started = time.monotonic()
    pourer.start()
    tried("client that never reads")
    timeline = []
    while time.monotonic() - started < IDLE + 10:
        timeline.append((round(time.monotonic() - started, 1), sessions(quick_daemon),
                         progress["sent"]))
        if timeline[-1][1] == 0 and len(timeline) > 3:
            break
        time.sleep(0.3)
    print("  never-reading client (s, sessions, bytes sent):", timeline[::3])
    client.close()
    pourer.join(5)
    assert any(n == 1 for _, n, _ in timeline), timeline
    assert timeline[-1][1] == 0, ("the session of a client that never reads was never closed",
                                  timeline)
    assert_healthy(quick_daemon, sink)
