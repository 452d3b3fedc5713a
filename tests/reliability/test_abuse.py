"""Abuse of what mailflow writes by itself, and of its configuration.

- auto-reply loops: two mailflow instances, and mailflow against out-of-office robots
  that answer everything: the exchange stops within the configured limits;
- backscatter: with ``acknowledge.check_sender_domain``, no acknowledgement to a domain
  that does not resolve, checked against a real DNS server on loopback (dnsmasq);
- header injection through the merge fields of the acknowledgement;
- path traversal through template and data file names (``mailflow check`` refuses);
- the metrics endpoint binds to loopback unless told otherwise; the systemd unit runs
  the daemon as an unprivileged user.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import smtplib
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as AioSMTP
from aiosmtpd.smtp import Envelope, Session
from test_hostile import RawClient, dot_stuffed

from clirunner import CliResult, run_cli
from conftest import REPO, Daemon, Received, Sink, free_port, full_chain_rules

pytestmark = pytest.mark.slow  # starts the daemon: `pytest -m 'not slow'` leaves it out

DaemonFactory = Callable[..., Daemon]
FIGURES: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print("\n[abuse] " + "; ".join(f"{k}: {v}" for k, v in FIGURES.items()))


def is_ack(data: bytes) -> bool:
    head = data.split(b"\r\n\r\n", 1)[0]
    return re.search(rb"^Auto-Submitted: auto-replied\r?$", head, re.MULTILINE) is not None


def headers_of(data: bytes) -> Any:
    return BytesHeaderParser(policy=compat32).parsebytes(data)


def message(sender: str, subject: str, body: str, mid: str, extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: sav@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <{mid}>\r\nDate: Mon, 2 Mar 2026 10:00:00 +0100\r\n{extra}"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


def wait_quiet(count: Callable[[], int], settle: float = 2.0, limit: float = 30.0) -> int:
    """Wait until ``count()`` stops changing for ``settle`` seconds; return it."""
    deadline = time.monotonic() + limit
    last, since = count(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= settle:
            return now
    raise AssertionError(f"still going after {limit}s: {last}")


def acks_per_case(daemon: Daemon) -> dict[str, int]:
    db = sqlite3.connect(daemon.tmp / "state" / "mailflow.sqlite3", timeout=10)
    try:
        rows = db.execute("SELECT case_number, count(*) FROM acks GROUP BY case_number")
        return {str(case): int(n) for case, n in rows}
    finally:
        db.close()


# --------------------------------------------------------------------------
# Two mailflow instances
# --------------------------------------------------------------------------


def test_two_instances_never_acknowledge_each_others_acknowledgements(
        daemon_factory: DaemonFactory, sink: Sink, tmp_path: Path) -> None:
    """A (example.com) acknowledges a customer of B (example.org); A's next hop is B,
    B's is the sink. B receives A's acknowledgement, sent from a real address (not the
    null sender, so only Auto-Submitted and the loop marker can stop B), and must not
    acknowledge it."""
    b = daemon_factory(
        config={"smtp": {"hostname": "b.example.org"}, "trusted_networks": ["127.0.0.0/8"]},
        # B's teams are not example.com's: no route stage
        rules=full_chain_rules(tmp_path / "rules-b",
                               "chain: [number, deduplicate, prioritise, acknowledge]\n",
                               local_domains=["example.org"],
                               own_addresses=["contact@example.org"]))
    a = daemon_factory(
        config={"smtp": {"hostname": "a.example.com"}, "next_hop": f"smtp://127.0.0.1:{b.port}"},
        rules=full_chain_rules(tmp_path / "rules-a",
                               acknowledge={"envelope_sender": "sav@example.com"}))
    # Marie's message has a Message-ID that B sees too: A's ack, threaded to it, is a
    # follow-up for B. Paul's has none: for B, A's ack to him starts a new case, and only
    # the robot markers (Auto-Submitted, the loop marker) keep B quiet.
    code, text = a.send(message("Marie <marie@example.org>", "Ma commande 42",
                                "Bonjour, ma commande n'est pas arrivée. Merci.",
                                "order42@example.org"),
                        mail_from="marie@example.org")
    assert code == 250, text
    code, text = a.send(message("Paul <paul@example.org>", "Mon devis", "Bonjour, mon devis "
                                "est-il prêt ? Merci.", "x").replace(b"Message-ID: <x>\r\n", b""),
                        mail_from="paul@example.org")
    assert code == 250, text
    settled = wait_quiet(lambda: len(sink.messages))
    acks = [m for m in sink.messages if is_ack(m.data)]
    relayed = [m for m in sink.messages if not is_ack(m.data)]
    FIGURES["two instances"] = (f"2 customer messages, {settled} message(s) at the end, "
                                f"{len(acks)} acknowledgement(s), all from A")
    assert sorted(m.mail_from for m in relayed) == ["marie@example.org", "paul@example.org"]
    assert len(acks) == 2  # A's, to the customers, relayed by B: B wrote none
    assert sorted(m.rcpt_tos[0] for m in acks) == ["marie@example.org", "paul@example.org"]
    for ack in acks:
        assert ack.mail_from == "sav@example.com"
        assert headers_of(ack.data)["X-Mailflow-Loop"] == "a.example.com"
    assert "ack_queued" not in b.log
    suppressed = [line for line in b.log.splitlines()
                  if "ack_suppressed" in line and '"sav@example.com"' in line]
    assert len(suppressed) == 2, b.log[-3000:]
    assert any("Auto-Submitted: auto-replied" in line for line in suppressed), b.log[-3000:]
    assert sum(acks_per_case(a).values()) == 2 and acks_per_case(b) == {}
    for d in (a, b):
        assert "Traceback" not in d.log, d.log[-3000:]


# --------------------------------------------------------------------------
# Out-of-office robots
# --------------------------------------------------------------------------

ROBOT = "robot@client.test"


class RobotHandler:
    """A next hop that records everything and, as the customer's out-of-office robot,
    answers every message it gets for ``ROBOT`` (no Auto-Submitted), up to ``limit``."""

    def __init__(self, mode: str, limit: int) -> None:
        self.mode = mode
        self.limit = limit
        self.messages: list[Received] = []
        self.replies = 0
        self.mailflow_port = 0
        self.lock = threading.Lock()
        self.errors: list[str] = []
        self.first = self.last = 0.0

    async def handle_DATA(self, server: AioSMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), data))
            self.last = time.monotonic()
            self.first = self.first or self.last
            answer = ROBOT in envelope.rcpt_tos and self.replies < self.limit
            if answer:
                self.replies += 1
                n = self.replies
        if answer:
            threading.Thread(target=self._answer, args=(data, n), daemon=True).start()
        return "250 2.0.0 Ok"

    def _answer(self, data: bytes, n: int) -> None:
        received = headers_of(data)
        subject = str(received["Subject"] or "")
        extra = ""
        if self.mode == "same-subject":
            subject_out = subject  # as is, case number included
        elif self.mode == "in-reply-to":
            subject_out = "Automatic reply: " + subject
            extra = f"In-Reply-To: {received['Message-ID']}\r\n"
        elif self.mode == "subject-marker":  # an out-of-office reply known by its subject
            subject_out = f"Absence du bureau ({n})"
        else:  # "fresh": nothing ties it to the case or marks a robot; the text changes
            subject_out = f"Votre message ({n})"
        body = f"Je suis absent jusqu'au {n + 1} mars, réponse numéro {n}. Merci."
        try:
            with smtplib.SMTP("127.0.0.1", self.mailflow_port, timeout=30) as client:
                client.sendmail(ROBOT, ["sav@example.com"],
                                message(f"Robot <{ROBOT}>", subject_out, body,
                                        f"ooo{n}.{time.monotonic_ns()}@client.test", extra))
        except Exception as exc:  # reported by the test
            with self.lock:
                self.errors.append(repr(exc))


@pytest.fixture
def robot_factory() -> Iterator[Callable[[str, int], tuple[RobotHandler, int]]]:
    controllers: list[Controller] = []

    def make(mode: str, limit: int) -> tuple[RobotHandler, int]:
        handler = RobotHandler(mode, limit)
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, decode_data=False,
                                enable_SMTPUTF8=True, data_size_limit=None)
        controller.start()
        controllers.append(controller)
        return handler, port

    yield make
    for c in controllers:
        c.stop()


@pytest.mark.parametrize(("mode", "max_acks"), [
    ("same-subject", 1),  # the case number in the Subject: a follow-up, per case 1
    ("in-reply-to", 1),   # threaded to our acknowledgement: a follow-up
    ("subject-marker", 1),  # "Absence du bureau": known as automatic, never answered
    ("fresh", 5),         # a new case every time: stopped by per address per day (5)
])
def test_out_of_office_robot_loop_stops_within_the_limits(
        daemon_factory: DaemonFactory, robot_factory: Any, tmp_path: Path, mode: str,
        max_acks: int) -> None:
    robot, port = robot_factory(mode, 20)
    daemon = daemon_factory(config={"next_hop": f"smtp://127.0.0.1:{port}"},
                            rules=full_chain_rules(tmp_path / "rules"))
    robot.mailflow_port = daemon.port
    code, text = daemon.send(message(f"Robert <{ROBOT}>", "Question sur ma facture",
                                     "Bonjour, une question sur ma facture. Merci.",
                                     "first@client.test"), mail_from=ROBOT)
    assert code == 250, text
    wait_quiet(lambda: len(robot.messages), settle=2.5)
    acks = [m for m in robot.messages if is_ack(m.data)]
    FIGURES[f"OOO robot ({mode})"] = (f"{len(acks)} ack(s), {robot.replies} robot repl(ies), "
                                      f"over in {robot.last - robot.first:.1f}s")
    assert robot.errors == []
    assert len(acks) == max_acks, [headers_of(m.data)["Subject"] for m in acks]
    assert robot.replies == max_acks  # it answers each ack; no ack, no answer: it stopped
    assert all(m.rcpt_tos == [ROBOT] for m in acks)
    # every message of the robot was still delivered to the team
    assert len(robot.messages) - len(acks) == 1 + robot.replies
    assert all(n <= 1 for n in acks_per_case(daemon).values())
    log = daemon.log
    reason = {"fresh": "limit per address per day",
              "subject-marker": "out-of-office (subject: absence du bureau)"}.get(
        mode, "follow-up on an existing case")
    assert reason in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


# --------------------------------------------------------------------------
# Backscatter: acknowledge only senders whose domain resolves (real DNS on loopback)
# --------------------------------------------------------------------------


def _free_udp_tcp_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


@pytest.fixture
def dns_server(tmp_path: Path) -> Iterator[int]:
    """dnsmasq on 127.0.0.1:<port>, authoritative for .test, talking to nobody else."""
    binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not Path(binary).exists():
        pytest.fail("dnsmasq is not installed (make test installs it: TEST_DEBS)")
    import dns.resolver

    port = _free_udp_tcp_port()
    log = open(tmp_path / "dnsmasq.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [binary, "--no-daemon", "--conf-file=/dev/null", f"--port={port}",
         "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
         "--pid-file=", "--log-queries", "--log-facility=-",
         "--local=/test/",  # every other name under .test: NXDOMAIN
         "--mx-host=good-exemple.test,mx.good-exemple.test,10",
         "--host-record=good-exemple.test,127.0.0.1",
         "--host-record=a-only-exemple.test,127.0.0.1",
         "--host-record=aaaa-only-exemple.test,::1",
         "--mx-host=mx-only-exemple.test,mx.good-exemple.test,10"],
        stdout=log, stderr=subprocess.STDOUT)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port, resolver.lifetime = ["127.0.0.1"], port, 0.5
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                resolver.resolve("good-exemple.test", "A")
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / "dnsmasq.log").read_text()) from None
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


SENDERS = {
    "claire@good-exemple.test": True,     # MX and A
    "paul@a-only-exemple.test": True,     # A only (RFC 5321 implicit MX)
    "ana@aaaa-only-exemple.test": True,   # AAAA only
    "zoe@mx-only-exemple.test": True,     # MX only
    "forged@forged-exemple.test": False,  # NXDOMAIN
    "forged@sub.forged-exemple.test": False,
    "forged@elsewhere.invalid": False,    # the server refuses: doubt means silence
    "forged@localhost-exemple": False,    # not a domain name
    "forged@" + "a" * 64 + ".test": False,  # a label too long for the DNS
    "forged@" + "b" * 60 + "." + ("c" * 60 + ".") * 4 + "test": False,  # name too long
}


def test_acknowledgements_only_to_senders_whose_domain_resolves(
        daemon_factory: DaemonFactory, sink: Sink, tmp_path: Path, dns_server: int) -> None:
    daemon = daemon_factory(rules=full_chain_rules(
        tmp_path / "rules", acknowledge={"check_sender_domain": True, "dns": {
            "nameservers": ["127.0.0.1"], "port": dns_server, "timeout": 2}}))
    for i, sender in enumerate(SENDERS):
        code, text = daemon.send(message(sender, f"Question {i}",
                                         f"Bonjour, question numéro {i}. Merci.",
                                         f"q{i}@client.test"), mail_from=sender)
        assert code == 250, (sender, text)  # the mail itself always goes through
    wait_quiet(lambda: len(sink.messages))
    acked = {m.rcpt_tos[0] for m in sink.messages if is_ack(m.data)}
    relayed = [m for m in sink.messages if not is_ack(m.data)]
    assert len(relayed) == len(SENDERS)
    assert acked == {s for s, ok in SENDERS.items() if ok}, acked
    log = daemon.log
    assert log.count("sender domain check: domain does not exist") == 2, log[-3000:]
    assert "sender domain check: DNS lookup failed" in log
    assert log.count("sender domain check: not a domain name") == 3, log[-3000:]
    queries = (tmp_path / "dnsmasq.log").read_text(errors="replace")
    assert "query[MX] forged-exemple.test" in queries
    FIGURES["backscatter"] = (f"{len(acked)} of {len(SENDERS)} senders acknowledged "
                              f"({sum(not ok for ok in SENDERS.values())} forged refused)")
    assert "Traceback" not in log, log[-3000:]


def test_internationalised_sender_is_acknowledged(daemon_factory: DaemonFactory, sink: Sink,
                                                  tmp_path: Path) -> None:
    """RFC 6531/6532: a customer whose address is not ASCII gets the acknowledgement
    (through SMTPUTF8), and the message is not tempfailed because of the address."""
    daemon = daemon_factory(rules=full_chain_rules(tmp_path / "rules"))
    client = RawClient(daemon.port)
    client.greet()
    client.envelope(b"<j\xc3\xa9r\xc3\xb4me@exemple.test> SMTPUTF8", b"<sav@example.com>")
    client.send(dot_stuffed(message("J\u00e9r\u00f4me <j\u00e9r\u00f4me@exemple.test>",
                                    "Ma commande", "Bonjour, ma commande. Merci.",
                                    "idn@exemple.test")))
    code, text = client.reply()
    assert code == 250, text
    client.quit()
    wait_quiet(lambda: len(sink.messages))
    (ack,) = [m for m in sink.messages if is_ack(m.data)]
    assert ack.rcpt_tos == ["j\u00e9r\u00f4me@exemple.test"]
    assert "j\u00e9r\u00f4me@exemple.test".encode() in ack.data.split(b"\r\n\r\n")[0]
    assert "Traceback" not in daemon.log, daemon.log[-3000:]


# --------------------------------------------------------------------------
# Header injection through merge fields
# --------------------------------------------------------------------------


def test_merge_fields_cannot_inject_headers_into_the_acknowledgement(
        daemon_factory: DaemonFactory, sink: Sink, tmp_path: Path) -> None:
    """Display name and Subject are merged into the acknowledgement: encoded CR/LF in
    them (RFC 2047 can carry any byte) must not start new header lines."""
    evil_name = "=?utf-8?q?Evil=0D=0ABcc=3A_victim=40elsewhere=2Etest=0D=0AX-Injected=3A_1?="
    evil_subject = ("=?utf-8?q?Hello=0D=0ABcc=3A_victim=40elsewhere=2Etest=0D=0A=0D=0A"
                    "injected_body?= =?utf-8?b?DQpUbzogdmljdGltQGVsc2V3aGVyZS50ZXN0DQo=?=")
    daemon = daemon_factory(rules=full_chain_rules(tmp_path / "rules"))
    data = message(f"{evil_name} <hostile@client.test>", evil_subject,
                   "Bonjour, merci pour votre aide.", "evil@client.test",
                   extra="Reply-To: =?utf-8?q?x=0D=0ABcc=3A_v=40e=2Etest?= "
                         "<hostile@client.test>\r\n")
    code, text = daemon.send(data, mail_from="hostile@client.test")
    assert code == 250, text
    wait_quiet(lambda: len(sink.messages))
    (ack,) = [m for m in sink.messages if is_ack(m.data)]
    assert ack.rcpt_tos == ["hostile@client.test"]
    head_bytes, _, body = ack.data.partition(b"\r\n\r\n")
    head = headers_of(ack.data)
    names = [n.lower() for n in head]
    assert "bcc" not in names and "x-injected" not in names, head_bytes
    assert names.count("to") == 1 and names.count("subject") == 1, head_bytes
    assert "hostile@client.test" in head["To"] and "victim" not in head["To"]
    for line in head_bytes.split(b"\r\n"):
        assert re.match(rb"^([!-9;-~]+:|[ \t])", line), line  # a field, or its folding
    assert not body.startswith(b"injected_body")
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", ack.data) is None  # CRLF only, as relayed
    # the relayed copy's own added headers are clean too
    (relayed,) = [m for m in sink.messages if not is_ack(m.data)]
    added = relayed.data[: relayed.data.index(b"From: ")]
    assert b"victim" not in added and b"\r\n\r\n" not in added


# --------------------------------------------------------------------------
# Path traversal through file names in the rules
# --------------------------------------------------------------------------


def _check(tmp_path: Path, rules: Path) -> CliResult:
    """``mailflow check`` in-process, from ``tmp_path``."""
    config = tmp_path / "check.yaml"
    config.write_text(f"rules: {rules}\nstate_dir: {tmp_path / 'state'}\n", encoding="utf-8")
    return run_cli("check", "--config", str(config), cwd=tmp_path)


@pytest.mark.parametrize(("section", "change", "where"), [
    ("acknowledge", {"templates": {"fr": "../../etc/passwd", "en": "templates/ack.en.txt"}},
     "acknowledge.yaml"),
    ("acknowledge", {"templates": {"fr": "templates/../../../../../../etc/passwd",
                                   "en": "templates/ack.en.txt"}}, "acknowledge.yaml"),
    ("acknowledge", {"templates": {"fr": "/etc/passwd", "en": "templates/ack.en.txt"}},
     "acknowledge.yaml"),
    ("acknowledge", {"templates": {"fr": "templates/link.txt", "en": "templates/ack.en.txt"}},
     "acknowledge.yaml"),
    ("route", {"account_managers_file": "../../../etc/passwd"}, "route.yaml"),
], ids=["dotdot", "deep-dotdot", "absolute", "symlink-out", "route-csv"])
def test_file_names_in_rules_cannot_leave_the_rules_folder(tmp_path: Path, section: str,
                                                           change: dict[str, Any],
                                                           where: str) -> None:
    rules = full_chain_rules(tmp_path / "rules", **{section: change})
    (rules / "templates" / "link.txt").symlink_to("/etc/passwd")
    result = _check(tmp_path, rules)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert re.search(rf"{re.escape(where)}:\d+:\d+: .*outside the rules folder", output), output
    assert "root:" not in output  # nothing of the file leaked into the message


def test_maildir_file_names_stay_inside_the_maildir(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The Maildir file name is built from the host name: a hostile one cannot escape."""
    from mailflow.relay import MaildirDelivery

    monkeypatch.setattr(socket, "gethostname", lambda: "../../../escaped/host")
    maildir = tmp_path / "maildir"
    result = asyncio.run(MaildirDelivery(maildir).send("a@client.test", ["sav@example.com"],
                                                       b"Subject: x\r\n\r\nx\r\n"))
    assert result.ok, result
    (delivered,) = (maildir / "new").iterdir()
    assert "/" not in delivered.name
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [delivered]


def test_rules_inside_the_folder_still_pass_check(tmp_path: Path) -> None:
    result = _check(tmp_path, full_chain_rules(tmp_path / "rules"))
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------
# Exposure: metrics on loopback, an unprivileged user under systemd
# --------------------------------------------------------------------------


def test_metrics_address_defaults_to_loopback() -> None:
    from mailflow.config import Settings, load_settings

    assert Settings(metrics=":9125").metrics_address == ("127.0.0.1", 9125)
    assert Settings(metrics="[::1]:9125").metrics_address == ("::1", 9125)
    defaults = Settings()
    assert defaults.metrics is None and defaults.listen_address[0] == "127.0.0.1"
    shipped = load_settings(REPO / "deploy" / "mailflow.yaml")
    assert shipped.metrics_address is not None and shipped.metrics_address[0] == "127.0.0.1"
    assert shipped.listen_address[0] == "127.0.0.1"


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table, encoding="ascii") as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                address, hex_port = fields[1].rsplit(":", 1)
                if int(hex_port, 16) == port and fields[3] == "0A":  # LISTEN
                    found.append(address)
    return found


def test_daemon_binds_metrics_to_loopback_when_no_host_is_given(
        daemon_factory: DaemonFactory) -> None:
    port = free_port()
    daemon = daemon_factory(config={"metrics": f":{port}"})
    import urllib.request

    deadline = time.monotonic() + 10
    while True:  # the SMTP port listens before the metrics server is up: wait for it
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                        timeout=5) as response:
                assert response.status == 200
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert _listening(port) == ["0100007F"], _listening(port)  # 127.0.0.1 only
    assert _listening(daemon.port) == ["0100007F"]


def test_systemd_unit_runs_as_an_unprivileged_user() -> None:
    unit = (REPO / "deploy" / "systemd" / "mailflow.service").read_text(encoding="utf-8")
    settings: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    dynamic = settings.get("DynamicUser", ["no"])[-1] == "yes"
    assert dynamic or settings.get("User", ["root"])[-1] not in ("", "root", "0"), settings
    assert settings.get("Group", ["mailflow"])[-1] not in ("root", "0")
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["CapabilityBoundingSet"] == [""]  # no capability at all by default
    assert settings["AmbientCapabilities"] == [""]
    assert "PrivateTmp" in settings and settings["ProtectSystem"] == ["strict"]
