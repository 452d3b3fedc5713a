"""Shared fixtures: a real next hop (aiosmtpd sink) and the real daemon as a subprocess."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as AioSMTP
from aiosmtpd.smtp import Envelope, Session
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from rawsmtp import RawClient

REPO = Path(__file__).resolve().parents[1]
#: the test data beside the project (../shared: corpus, realmail), present in CI
SHARED = Path(os.environ.get("MAILFLOW_SHARED", REPO.parent / "shared"))
CORPUS = Path(os.environ.get("MAILFLOW_CORPUS", SHARED / "corpus"))
REALMAIL = SHARED / "realmail"
#: the suites over ../shared: not collected in a clone of the project alone
SHARED_SUITES = (
    "unit/test_message_corpus.py",
    "unit/test_customer_text_corpus.py",
    "integration/test_corpus_cases.py",
    "integration/test_corpus_relay.py",
    "integration/test_triage_corpus.py",
    "integration/test_escalate_corpus.py",
    "reliability/test_shared_corpus.py",
    "reliability/test_one_reception.py",
)
REALMAIL_SUITES = ("reliability/test_realmail.py", "reliability/test_one_reception.py")
collect_ignore = ([] if CORPUS.is_dir() else list(SHARED_SUITES)) + (
    [] if REALMAIL.is_dir() else list(REALMAIL_SUITES))


def pytest_report_header(config: pytest.Config) -> str | None:
    missing = [f"no {CORPUS}: not collected: {', '.join(SHARED_SUITES)}"] * (
        not CORPUS.is_dir())
    missing += [f"no {REALMAIL}: not collected: {', '.join(REALMAIL_SUITES)}"] * (
        not REALMAIL.is_dir())
    return "\n".join(missing) or None
RULES = REPO / "rules"
FULL_CHAIN = ("chain: [number, deduplicate, prioritise, route, sla, escalate, acknowledge,"
              " replies, statistics]\n")
RELAY_ONLY_CHAIN = "chain: [headers]\nheaders:\n  add:\n    X-Mailflow-Gateway: mailflow\n"


def full_chain_rules(folder: Path, chain: str = FULL_CHAIN, **changes: Any) -> Path:
    """A copy of the shipped rules running the whole chain; ``changes`` merged into the
    sections of the same name (``acknowledge={"envelope_sender": ...}``)."""
    shutil.copytree(RULES, folder)
    (folder / "chain.yaml").write_text(chain, encoding="utf-8")
    yaml = YAML()
    for section, values in changes.items():
        for path in sorted(folder.glob("*.yaml")):
            data = yaml.load(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and section in data:
                if isinstance(values, dict):
                    data[section].update(values)
                else:
                    data[section] = values
                with open(path, "w", encoding="utf-8") as fh:
                    yaml.dump(data, fh)
                break
        else:
            with open(folder / f"{section}.yaml", "w", encoding="utf-8") as fh:
                yaml.dump({section: values}, fh)
    return folder


def rules_with_chain(tmp_path: Path, chain: list[str], name: str = "rules-src") -> Path:
    """A copy of the shipped rules whose chain is ``chain``."""
    return full_chain_rules(tmp_path / name, f"chain: [{', '.join(chain)}]\n")


def snapshot_store(db: Path, target: Path) -> Path:
    """A consistent copy of a live store, in a state folder of its own (for `mailflow try`)."""
    target.mkdir(parents=True)
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    dst = sqlite3.connect(target / "mailflow.sqlite3")
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")
    finally:
        src.close()
        dst.close()
    return target


def drain_outbox(db: Path, timeout: float = 10.0) -> None:
    """Wait until the daemon's outbox has nothing ready to send."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            ready = conn.execute("SELECT count(*) FROM outbox WHERE state = 'ready'").fetchone()
        finally:
            conn.close()
        if ready == (0,):
            return
        time.sleep(0.05)
    raise AssertionError("the outbox did not drain")


def drain_outbox_pg(url: str, timeout: float = 10.0) -> None:
    """``drain_outbox`` for a daemon on PostgreSQL."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(url.partition("?")[0], autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM outbox WHERE state = 'ready'").fetchone()
            if row == (0,):
                return
            time.sleep(0.05)
    raise AssertionError("the outbox did not drain")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None
                  ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open within {timeout}s")


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class SinkHandler:
    """A next hop whose answer the test chooses: 250, a 4xx or a 5xx."""

    messages: list[Received] = field(default_factory=list)
    data_reply: str = "250 2.0.0 Ok"
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: this many messages are taken, then the connection dropped before the answer
    vanish_after_data: int = 0

    async def handle_RCPT(self, server: AioSMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: AioSMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply.startswith("250"):
            with self.lock:
                self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                              envelope.original_content or b""))
        if self.vanish_after_data > 0:  # it has the message, but will never say so
            self.vanish_after_data -= 1
            assert server.transport is not None
            server.transport.abort()  # type: ignore[attr-defined]
            await asyncio.sleep(3600)  # cancelled with the session
        return self.data_reply


class _LongLineSMTP(AioSMTP):
    line_length_limit = 1 << 20


class _LongLineController(Controller):
    def factory(self) -> AioSMTP:
        return _LongLineSMTP(self.handler, **self.SMTP_kwargs)


class Sink:
    """An aiosmtpd server on a free loopback port, standing in for the company mail server.

    ``long_lines``: take lines longer than RFC 5321's 1,000 octets, as Postfix and
    Exchange do (aiosmtpd alone answers 500 past 1,001).
    """

    def __init__(self, long_lines: bool = False) -> None:
        self.port = free_port()
        self.handler = SinkHandler()
        self.long_lines = long_lines
        self.controller: Controller | None = None

    def start(self) -> None:
        controller = _LongLineController if self.long_lines else Controller
        self.controller = controller(self.handler, hostname="127.0.0.1", port=self.port,
                                     decode_data=False, enable_SMTPUTF8=True,
                                     data_size_limit=None)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def reset(self) -> None:
        """Back to a fresh sink on the same port: nothing received, answers 250, running."""
        if self.long_lines:
            self.stop()
            self.long_lines = False
        self.handler = SinkHandler()
        self.stop()
        self.start()

    @property
    def messages(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.messages)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.messages) >= count:
                return self.messages
            time.sleep(0.05)
        raise AssertionError(f"expected {count} message(s) at the next hop, "
                             f"got {len(self.messages)}")


@pytest.fixture(scope="module")
def module_sink() -> Iterator[Sink]:
    s = Sink()
    s.start()
    yield s
    s.stop()


@pytest.fixture
def sink(request: pytest.FixtureRequest) -> Iterator[Sink]:
    """A fresh next hop; in a ``one_daemon`` module, the module's, emptied and reset."""
    if request.node.get_closest_marker("one_daemon"):
        shared: Sink = request.getfixturevalue("module_sink")
        shared.reset()
        yield shared
        return
    s = Sink()
    s.start()
    yield s
    s.stop()


class Daemon:
    """``mailflow serve`` as a real subprocess, configured through a YAML file."""

    def __init__(self, tmp: Path, next_hop: str, config: dict[str, Any] | None = None,
                 rules: Path | None = None, test_clock: float | None = None) -> None:
        """``test_clock``: run on a fake time starting there (a file under ``tmp``,
        moved with ``set_time``/``advance``), with ``--allow-test-clock``."""
        self.tmp = tmp
        self.port = free_port()
        self.metrics_port = free_port()
        self.rules = tmp / "rules"
        tmp.mkdir(parents=True, exist_ok=True)
        shutil.copytree(rules or RULES, self.rules, dirs_exist_ok=True)
        if rules is None:
            # relay tests want the bytes through untouched by policy: the shipped rules,
            # with only the `headers` stage in the chain
            (self.rules / "chain.yaml").write_text(RELAY_ONLY_CHAIN, encoding="utf-8")
        self.config_path = tmp / "mailflow.yaml"
        self.config: dict[str, Any] = {
            "listen": f"127.0.0.1:{self.port}",
            "next_hop": next_hop,
            "state_dir": str(tmp / "state"),
            "rules": str(self.rules),
            "metrics": f"127.0.0.1:{self.metrics_port}",
            # loopback is NOT trusted by default here, so tests see what a stranger sees
            "trusted_networks": ["192.0.2.0/24"],
            "smtp": {"hostname": "mailflow.test", "idle_timeout": 60},
            "relay": {"timeout": 10},
            "chain_timeout": 20,
            "outbox": {"poll_interval": 0.2, "backoff_initial": 0.5, "backoff_max": 2},
            "scheduler": {"poll_interval": 0.2, "backoff_initial": 0.5, "backoff_max": 2},
        }
        self.clock_path: Path | None = None
        if test_clock is not None:
            self.clock_path = tmp / "clock"
            self.config["test_clock"] = str(self.clock_path)
            self.set_time(test_clock)
        _merge(self.config, config or {})
        self.log_path = tmp / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        with open(self.config_path, "w", encoding="utf-8") as fh:
            YAML().dump(self.config, fh)

    def start(self) -> Daemon:
        """Start and wait until *this* daemon says it is ready. A port another process
        took between ``free_port`` and the bind is retried on fresh ports, twice."""
        for _ in range(3):
            self.write_config()
            log = open(self.log_path, "ab")  # noqa: SIM115 (closed with the process)
            mark = self.log_path.stat().st_size
            self.proc = subprocess.Popen(self.serve_command(), stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.tmp)
            log.close()
            if self._ready(mark):
                break
            if "Address already in use" not in self.log[mark:]:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n"
                                   f"{self.log[mark:][-3000:]}")
            self.port, self.metrics_port = free_port(), free_port()
            self.config["listen"] = f"127.0.0.1:{self.port}"
            if self.config.get("metrics"):
                self.config["metrics"] = f"127.0.0.1:{self.metrics_port}"
        else:
            raise RuntimeError("no free port for the daemon after three tries")
        wait_for_port(self.port, proc=self.proc)
        metrics = self.config.get("metrics")
        if metrics:  # the metrics endpoint opens just after the SMTP port
            wait_for_port(int(str(metrics).rpartition(":")[2]), proc=self.proc)
        return self

    def serve_command(self, allow_test_clock: bool | None = None) -> list[str]:
        """``mailflow serve`` for this daemon; ``--allow-test-clock`` with a test clock."""
        allow = self.clock_path is not None if allow_test_clock is None else allow_test_clock
        return [sys.executable, "-m", "mailflow.cli", "serve", "--config",
                str(self.config_path), *(["--allow-test-clock"] if allow else [])]

    # -- the test clock ----------------------------------------------------------

    def now(self) -> float:
        """The daemon's time: its test clock's."""
        assert self.clock_path is not None, "this daemon runs on the real time"
        return float(self.clock_path.read_text(encoding="utf-8"))

    def set_time(self, ts: float) -> None:
        """Move the daemon's test clock to ``ts`` (the file is replaced atomically)."""
        assert self.clock_path is not None, "Daemon(..., test_clock=T0) to move time"
        from mailflow.clock import write_clock_file

        write_clock_file(self.clock_path, ts)

    def advance(self, seconds: float) -> float:
        """Move the test clock forward; returns the new time."""
        now = self.now() + seconds
        self.set_time(now)
        return now

    def _ready(self, mark: int, timeout: float = 15.0) -> bool:
        """True once the daemon logged ``ready``; False if it exited first."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if '"event": "ready"' in self.log[mark:]:
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.02)
        raise TimeoutError(f"the daemon was not ready within {timeout}s:\n{self.log[-3000:]}")

    def smtp(self, timeout: float = 30.0) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.port, timeout=timeout)
        client.ehlo("client.test")
        return client

    def send(self, data: bytes, mail_from: str = "customer@client.test",
             rcpt_to: list[str] | None = None) -> tuple[int, bytes]:
        """One transaction; returns the reply to DATA (code, text)."""
        with self.smtp() as client:
            code, text = client.mail(mail_from)
            assert code == 250, text
            for rcpt in rcpt_to or ["sav@example.com"]:
                code, text = client.rcpt(rcpt)
                if code != 250:
                    return code, text
            return client.data(data)

    @property
    def db(self) -> Path:
        return Path(self.config["state_dir"]) / "mailflow.sqlite3"

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until nothing more can leave: every outbox row sent or given up. What the
        next hop holds then is final, so an absence (no second copy) is proven, not slept on."""
        store = str(self.config.get("store") or "")
        if store.startswith("postgresql://"):
            drain_outbox_pg(store, timeout)
        else:
            drain_outbox(self.db, timeout)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return int(code)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log:
                return self.log
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the daemon log:\n{self.log[-3000:]}")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


@pytest.fixture
def daemon_factory(tmp_path: Path, sink: Sink) -> Iterator[Any]:
    """Build daemons relaying to ``sink``; all are stopped at the end of the test."""
    started: list[Daemon] = []

    def make(config: dict[str, Any] | None = None, rules: Path | None = None,
             start: bool = True, test_clock: float | None = None) -> Daemon:
        d = Daemon(tmp_path / f"d{len(started)}", f"smtp://127.0.0.1:{sink.port}", config,
                   rules, test_clock=test_clock)
        started.append(d)
        return d.start() if start else d

    yield make
    for d in started:
        d.stop()


@pytest.fixture
def relay_rules(tmp_path: Path) -> Path:
    """Rules where only the SMTP layer and relaying matter: a chain that writes no mail."""
    folder = tmp_path / "relay-rules"
    folder.mkdir()
    (folder / "chain.yaml").write_text(RELAY_ONLY_CHAIN, encoding="utf-8")
    (folder / "domains.yaml").write_text("local_domains: [example.com]\n", encoding="utf-8")
    return folder


@pytest.fixture
def raw(daemon: Daemon) -> Iterator[RawClient]:
    """A raw SMTP session with the daemon, greeted (EHLO done)."""
    client = RawClient(daemon.port)
    client.greet()
    yield client
    client.close()


@pytest.fixture(scope="module")
def module_daemon(tmp_path_factory: pytest.TempPathFactory,
                  module_sink: Sink) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("one-daemon"), f"smtp://127.0.0.1:{module_sink.port}")
    d.start()
    yield d
    d.stop()


@pytest.fixture
def daemon(request: pytest.FixtureRequest, daemon_factory: Any, sink: Sink) -> Daemon:
    """The daemon with the shipped rules but a relay-only chain, relaying to the sink.

    A module marked ``one_daemon`` shares one (its tests send no signal and need no
    fresh store; the sink is emptied for each): a daemon start is most of a test's time.
    A test with a next hop of its own (its own ``sink``) still gets its own daemon.
    """
    if request.node.get_closest_marker("one_daemon") and \
            sink is request.getfixturevalue("module_sink"):
        shared: Daemon = request.getfixturevalue("module_daemon")
        assert shared.proc is not None and shared.proc.poll() is None, shared.log[-3000:]
        return shared
    d: Daemon = daemon_factory()
    return d


def ack_case(ack: Any) -> str:
    """The case number an acknowledgement names in its Subject (our X-Mailflow-Case
    header stays inside the company: an ack never carries it)."""
    from mailflow.cases import ANY_NUMBER

    assert ack["X-Mailflow-Case"] is None, "an internal header left the company"
    found = ANY_NUMBER.search(str(ack["Subject"]))
    assert found is not None, ack["Subject"]
    return found.group(0)


NULL_SENDERS = ("", "<>")  # how a sink may spell the null sender of mail mailflow writes


def parse_email(data: bytes) -> EmailMessage:
    """Bytes the sink got, as a message (headers decoded)."""
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def is_ack(received: Received, msg: EmailMessage) -> bool:
    """An acknowledgement mailflow wrote (null sender, its own Message-ID)."""
    return received.mail_from in NULL_SENDERS and str(msg["Message-ID"]).startswith("<ack.")


#: lines a suite measured (``report``), shown at the end of every run, even without -s
REPORTED: list[str] = []


def report(line: str) -> None:
    print(line)
    REPORTED.append(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORTED:
        terminalreporter.section("figures")
        for line in REPORTED:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """One private PostgreSQL for the whole session, started only when a test asks for
    it (imported here, so a session that never does starts none); a failure, never a skip."""
    from pg import PgServer, unavailable

    problem = unavailable()
    if problem is not None:  # make test installs what this needs
        pytest.fail(f"no private PostgreSQL can run here: {problem}")
    server = PgServer().start()
    yield server
    server.remove()


def metric(d: Daemon, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples carrying ``labels``, as the daemon's /metrics shows now
    (0 when there is none)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics",
                                timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(sample.value) for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v
                                              for k, v in labels.items()))
