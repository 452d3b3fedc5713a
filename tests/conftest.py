"""Shared fixtures: a real next hop (aiosmtpd sink) and the real daemon as a subprocess."""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import sqlite3
import urllib.request
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from mailflow.testing.daemon import Daemon as KitDaemon
from mailflow.testing.daemon import drain_outbox, drain_outbox_pg
from mailflow.testing.nexthop import Received, Sink, SinkHandler, free_port, wait_for_port
from rawsmtp import RawClient

__all__ = ["Received", "SinkHandler", "drain_outbox", "drain_outbox_pg", "free_port",
           "wait_for_port"]

REPO = Path(__file__).resolve().parents[1]
#: the test data beside the project (../shared: corpus, realmail), present in CI
SHARED = Path(os.environ.get("MAILFLOW_SHARED", REPO.parent / "shared"))
CORPUS = Path(os.environ.get("MAILFLOW_CORPUS", SHARED / "corpus"))
REALMAIL = SHARED / "realmail"
#: the suites over ../shared: not collected in a clone of the project alone
SHARED_SUITES = (
    "unit/test_message_corpus.py",
    "unit/test_customer_text_corpus.py",
    "unit/test_try_corpus.py",
    "integration/test_corpus_cases.py",
    "integration/test_corpus_relay.py",
    "integration/test_replay_corpus.py",
    "integration/test_triage_corpus.py",
    "integration/test_escalate_corpus.py",
    "reliability/test_shared_corpus.py",
    "reliability/test_one_reception.py",
)
REALMAIL_SUITES = ("reliability/test_realmail.py", "reliability/test_one_reception.py")
collect_ignore = ([] if CORPUS.is_dir() else list(SHARED_SUITES)) + (
    [] if REALMAIL.is_dir() else list(REALMAIL_SUITES))
#: packages the tests install and run on their own (tests/integration/test_plugin_kit.py)
collect_ignore_glob = ["fixtures/*"]


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


@pytest.fixture(autouse=True)
def _structlog_as_found(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A test that runs mailflow's logs.configure() in-process (the CLI's) leaves structlog
    as it found it: its level does not filter the next test's logs, and no module's
    logger is cached on first use, out of reach of ``structlog.testing.capture_logs``."""
    saved = structlog.get_config()
    configure = structlog.configure

    def uncached(**settings: Any) -> None:
        configure(**{**settings, "cache_logger_on_first_use": False})

    monkeypatch.setattr(structlog, "configure", uncached)
    yield
    configure(**saved)


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


class Daemon(KitDaemon):
    """The kit's daemon; without ``rules``, the shipped rules with only the ``headers``
    stage (relay tests want the bytes through untouched by policy)."""

    def __init__(self, tmp: Path, next_hop: str, config: dict[str, Any] | None = None,
                 rules: Path | None = None, test_clock: float | None = None) -> None:
        super().__init__(tmp, next_hop, config, rules, test_clock, default_rules=RULES,
                         default_chain=RELAY_ONLY_CHAIN)


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
