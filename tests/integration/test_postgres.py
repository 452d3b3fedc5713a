"""Several daemons on one real PostgreSQL (tests/pg.py: a private server on a free
loopback port), each test on a database of its own, with a real next hop (the sink).

What we look at: what the sink receives, what the database holds, what the
clients were told.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from clirunner import run_cli
from conftest import NULL_SENDERS, Daemon, Received, Sink, full_chain_rules, parse_email
from pg import PgServer, unavailable

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    problem = unavailable()
    if problem is not None:  # never a skip: make test installs what this needs
        pytest.fail(f"no private PostgreSQL can run here: {problem}")
    server = PgServer().start()
    yield server
    server.remove()


@pytest.fixture
def url(pg: PgServer) -> str:
    return pg.database()


def daemon_on(daemon_factory: Any, tmp_path: Path, url: str, node: str,
              **config: Any) -> Daemon:
    rules = tmp_path / f"rules-{node}"
    if not rules.exists():
        full_chain_rules(rules)
    d: Daemon = daemon_factory(config={"store": url, "node_id": node,
                                       "trusted_networks": ["127.0.0.0/8"], **config},
                               rules=rules)
    return d


def query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url.partition("?")[0], autocommit=True) as conn:
        cursor = conn.execute(sql, args)
        return [tuple(r) for r in cursor.fetchall()] if cursor.description else []


def question(i: int, customer: str | None = None) -> tuple[str, bytes]:
    customer = customer or f"client{i}@customer.test"
    return customer, (f"From: <{customer}>\r\nTo: sav@example.com\r\nSubject: Commande {i}\r\n"
                      f"Message-ID: <q{i}@customer.test>\r\n\r\nOu est ma commande {i} ?\r\n"
                      ).encode()


def relayed(sink: Sink) -> list[Received]:
    return [m for m in sink.messages if m.mail_from not in NULL_SENDERS]


def acks(sink: Sink) -> list[Received]:
    return [m for m in sink.messages if m.mail_from in NULL_SENDERS]


def send_retrying(d: Daemon, data: bytes, sender: str, attempts: int = 6) -> list[int]:
    """As an MTA would: again after a 4xx, until a 250 (the codes heard)."""
    codes = []
    for _ in range(attempts):
        code, _ = d.send(data, mail_from=sender)
        codes.append(code)
        if code < 400:
            break
        time.sleep(0.3)
    return codes


def test_one_daemon_on_postgresql_end_to_end(daemon_factory: Any, tmp_path: Path, url: str,
                                             sink: Sink) -> None:
    d = daemon_on(daemon_factory, tmp_path, url, "mx1")
    customer, data = question(1)
    code, text = d.send(data, mail_from=customer)
    assert code == 250, text
    sink.wait_for(2)
    d.settle()
    (got,) = relayed(sink)
    (ack,) = acks(sink)
    case = parse_email(got.data)["X-Mailflow-Case"]
    assert ack.rcpt_tos == [customer] and case in str(parse_email(ack.data)["Subject"])
    assert query(url, "SELECT number, customer FROM cases") == [(case, customer)]
    assert ("core", 4) in query(url, "SELECT owner, version FROM schema_versions")
    # the timestamps keep their seconds: double precision, not PostgreSQL's 4-byte real
    (received,), = query(url, "SELECT received_at FROM messages")
    assert abs(received - time.time()) < 60
    # the CLI reads the same database
    shown = run_cli("cases", "show", case, "--store", url, "--config", str(d.config_path))
    assert shown.returncode == 0, shown.stderr
    assert customer in shown.stdout
    listed = run_cli("timers", "list", "--store", url, "--config", str(d.config_path))
    assert case in listed.stdout and "sla.breach" in listed.stdout
    # a restart on the same database: migrations already applied, numbering goes on
    assert d.stop() == 0
    d.start()
    customer2, data2 = question(2)
    assert d.send(data2, mail_from=customer2)[0] == 250
    sink.wait_for(4)
    numbers = [n for (n,) in query(url, "SELECT number FROM cases ORDER BY number")]
    assert len(numbers) == 2 and numbers[1] > numbers[0]


def test_two_daemons_share_the_work_without_a_duplicate_number(
        daemon_factory: Any, tmp_path: Path, url: str, sink: Sink) -> None:
    a = daemon_on(daemon_factory, tmp_path, url, "mx1")
    b = daemon_on(daemon_factory, tmp_path, url, "mx2")
    count = 60
    codes: list[int] = []

    def client(offset: int) -> None:
        for i in range(offset, count, 4):
            customer, data = question(i)
            codes.extend(send_retrying(a if i % 2 else b, data, customer))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.wait_for(2 * count, timeout=30)
    a.settle()
    b.settle()
    numbers = [n for (n,) in query(url, "SELECT number FROM cases")]
    assert len(numbers) == count and len(set(numbers)) == count
    by_message = Counter(str(parse_email(m.data)["Message-ID"]) for m in relayed(sink))
    assert len(by_message) == count and set(by_message.values()) == {1}
    assert sorted(m.rcpt_tos[0] for m in acks(sink)) == sorted(
        f"client{i}@customer.test" for i in range(count))
    # round-robin across both daemons: the sav team's three agents share the cases evenly
    per_agent = Counter(a for (a,) in query(url, "SELECT assignee FROM cases"))
    assert len(per_agent) == 3 and max(per_agent.values()) - min(per_agent.values()) <= 1


def test_the_same_message_at_two_daemons_at_once_gives_one_case(
        daemon_factory: Any, tmp_path: Path, url: str, sink: Sink) -> None:
    """Two MX hosts each get a copy of one message (the sender's MTA tried both): one
    case, one acknowledgement; the second copy, if it got through, is marked."""
    a = daemon_on(daemon_factory, tmp_path, url, "mx1")
    b = daemon_on(daemon_factory, tmp_path, url, "mx2")
    raced = 0  # pairs where the unique constraint turned the later copy away (a 4xx)
    for i in range(8):
        customer, data = question(100 + i)
        start = threading.Barrier(2)
        heard: dict[str, list[int]] = {}

        def deliver(d: Daemon, name: str, data: bytes = data, customer: str = customer,
                    start: threading.Barrier = start,
                    heard: dict[str, list[int]] = heard) -> None:
            start.wait()
            heard[name] = send_retrying(d, data, customer)

        threads = [threading.Thread(target=deliver, args=(d, n)) for d, n in ((a, "a"), (b, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert heard["a"][-1] == 250 and heard["b"][-1] == 250, heard
        raced += any(code >= 400 for code in heard["a"] + heard["b"])
    a.settle()
    b.settle()
    assert raced >= 1, "the two copies never met: the race was not exercised"
    assert query(url, "SELECT count(*) FROM cases") == [(8,)]
    per_customer = Counter(m.rcpt_tos[0] for m in acks(sink))
    assert len(per_customer) == 8 and set(per_customer.values()) == {1}
    for copies in _copies_by_message(sink).values():
        assert 1 <= len(copies) <= 2
        cases = {str(c["X-Mailflow-Case"]) for c in copies}
        assert len(cases) == 1  # both copies name the one case
        if len(copies) == 2:
            assert sum(1 for c in copies if c["X-Mailflow-Duplicate"]) == 1


def _copies_by_message(sink: Sink) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for m in relayed(sink):
        msg = parse_email(m.data)
        found.setdefault(str(msg["Message-ID"]), []).append(msg)
    return found


def test_a_node_id_in_use_is_refused(daemon_factory: Any, tmp_path: Path, url: str) -> None:
    daemon_on(daemon_factory, tmp_path, url, "mx1")
    twin = Daemon(tmp_path / "twin", "smtp://127.0.0.1:9", {"store": url, "node_id": "mx1"})
    with pytest.raises(RuntimeError, match="node id 'mx1' is in use by another running"):
        twin.start()


def test_a_restart_waits_for_its_crashed_predecessors_lock(daemon_factory: Any,
                                                           tmp_path: Path, url: str) -> None:
    """Restarted at once after a kill -9, a daemon may find its node's lock still held by
    the session PostgreSQL has not yet seen gone: it waits for it, then serves."""
    predecessor = psycopg.connect(url.partition("?")[0], autocommit=True)
    predecessor.execute("SELECT pg_advisory_lock(hashtext('mailflow node mx1'))")
    gone = threading.Timer(1.5, predecessor.close)
    gone.start()
    started = time.monotonic()
    try:
        daemon = daemon_on(daemon_factory, tmp_path, url, "mx1")
    finally:
        gone.join()
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert time.monotonic() - started >= 1.5  # it did wait for the lock


def test_a_restart_recovers_its_own_rows_only(daemon_factory: Any, tmp_path: Path, url: str,
                                              sink: Sink) -> None:
    """mx2 has an ack leased (its next hop is slow to answer) when mx1 restarts: mx1's
    recovery leaves mx2's lease alone, and nothing goes out twice."""
    a = daemon_on(daemon_factory, tmp_path, url, "mx1")
    b = daemon_on(daemon_factory, tmp_path, url, "mx2")
    customer, data = question(7)
    assert b.send(data, mail_from=customer)[0] == 250
    sink.wait_for(2)
    b.settle()
    with psycopg.connect(url, autocommit=True) as conn:  # a row mx2 holds right now
        conn.execute("INSERT INTO outbox (message, kind, state, mail_from, rcpt_to, data,"
                     " created_at, next_attempt, attempts, lease_owner, lease_until) VALUES"
                     " (NULL, 'relay', 'ready', '', '[\"held@example.com\"]', %s, 0, 0, 0,"
                     " 'mx2:999', extract(epoch from now()) + 3600)", (b"Subject: x\r\n\r\nx\r\n",))
    assert a.stop() == 0
    a.start()
    assert query(url, "SELECT lease_owner FROM outbox WHERE lease_until IS NOT NULL") == [
        ("mx2:999",)]
    assert query(url, "SELECT count(*) FROM messages WHERE state = 'unknown'") == [(0,)]


def test_a_dead_node_is_recovered_by_the_others(daemon_factory: Any, tmp_path: Path, url: str,
                                                sink: Sink, pg: PgServer) -> None:
    """mx2 is killed with mail leased to it; it never comes back: after node_timeout,
    mx1 frees its leases and sends what it owed."""
    quick = f"{url}?node_timeout=2"
    a = daemon_on(daemon_factory, tmp_path, quick, "mx1")
    b = daemon_on(daemon_factory, tmp_path, quick, "mx2")
    assert a.proc is not None
    b.kill()
    with psycopg.connect(url, autocommit=True) as conn:  # what mx2 held when it died
        conn.execute("INSERT INTO outbox (message, kind, state, mail_from, rcpt_to, data,"
                     " created_at, next_attempt, attempts, lease_owner, lease_until) VALUES"
                     " (NULL, 'relay', 'ready', '', '[\"owed@example.com\"]', %s, 0, 0, 0,"
                     " 'mx2:999', extract(epoch from now()) + 3600)",
                     (b"Subject: owed\r\n\r\nowed\r\n",))
        conn.execute("UPDATE nodes SET heartbeat = heartbeat - 10 WHERE node = 'mx2'")
    (got,) = sink.wait_for(1, timeout=30)
    assert got.rcpt_tos == ["owed@example.com"]
    a.wait_for_log("node_recovered")
    assert query(url, "SELECT node FROM nodes") == [("mx1",)]


def test_the_database_going_away_and_back(daemon_factory: Any, tmp_path: Path, url: str,
                                          sink: Sink, pg: PgServer) -> None:
    """While PostgreSQL is down: 4xx to clients, /healthz unhealthy. Back: the daemon
    reconnects by itself and nothing accepted is lost."""
    d = daemon_on(daemon_factory, tmp_path, url, "mx1")
    customer, data = question(1)
    assert d.send(data, mail_from=customer)[0] == 250
    pg.stop()
    try:
        customer2, data2 = question(2)
        code, text = d.send(data2, mail_from=customer2)
        assert 400 <= code < 500, (code, text)
        deadline = time.monotonic() + 15
        status = 200
        while time.monotonic() < deadline and status == 200:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/healthz",
                                            timeout=5) as resp:
                    status = resp.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            time.sleep(0.3)
        assert status == 503
    finally:
        pg.start()
    codes = send_retrying(d, data2, customer2, attempts=20)
    assert codes[-1] == 250, codes
    sink.wait_for(4, timeout=20)
    d.settle()
    assert sorted(m.rcpt_tos[0] for m in acks(sink)) == [customer, customer2]
    # the node's lock went with the old server: the daemon holds it again, so no other
    # daemon takes it for dead
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and query(
            url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == [(0,)]:
        time.sleep(0.3)
    assert query(url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == [(1,)]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrate_manual_refuses_an_older_schema_until_mailflow_migrate(
        daemon_factory: Any, tmp_path: Path, pg: PgServer, backend: str) -> None:
    store = pg.database() if backend == "postgresql" else \
        f"sqlite:///{tmp_path / 'manual.sqlite3'}"
    d: Daemon = daemon_factory(config={"store": store, "node_id": "mx1", "migrate": "manual"},
                               start=False)
    with pytest.raises(RuntimeError, match=r"older than this mailflow .*run .mailflow migrate."):
        d.start()
    behind = run_cli("migrate", "--check", "--config", str(d.config_path))
    assert behind.returncode == 1 and "core           behind (0 < 4)" in behind.stdout
    done = run_cli("migrate", "--config", str(d.config_path))
    assert done.returncode == 0, done.stderr
    assert "core           migrated 0 -> 4" in done.stdout
    assert run_cli("migrate", "--check", "--config", str(d.config_path)).returncode == 0
    d.start()
    assert d.send(question(1)[1], mail_from="client1@customer.test")[0] == 250
    assert d.stop() == 0
    # a newer mailflow migrated the store further: this one keeps working on it
    bump = "UPDATE schema_versions SET version = 9 WHERE owner = 'core'"
    if backend == "postgresql":
        query(store, bump)
    else:
        import sqlite3

        with sqlite3.connect(store.removeprefix("sqlite:///")) as db:
            db.execute(bump)
    d.start()
    assert d.send(question(2)[1], mail_from="client2@customer.test")[0] == 250


def test_escalation_on_the_fake_clock_with_two_daemons(daemon_factory: Any, tmp_path: Path,
                                                       url: str, sink: Sink) -> None:
    """The escalation tests' fake clock on PostgreSQL: the legal notice forwarded to the
    lawyer, one reminder when both daemons' clocks pass its due time (sent once, by one of
    them), and the lawyer's answer, with a Subject of their own, cancelling the rest."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    paris = ZoneInfo("Europe/Paris")

    def at(*args: int) -> float:
        return dt.datetime(*args, tzinfo=paris).timestamp()  # type: ignore[misc]

    notice = (Path(__file__).parents[1] / "data" / "legal_notice.eml").read_bytes()
    rules = full_chain_rules(tmp_path / "rules-legal")
    a, b = (daemon_factory(config={"store": url, "node_id": n}, rules=rules,
                           test_clock=at(2026, 11, 23, 10, 0)) for n in ("mx1", "mx2"))
    expert = "maitre.durand@example.com"

    def to_expert() -> list[Received]:
        return [m for m in sink.messages if expert in m.rcpt_tos]

    code, text = a.send(notice, mail_from="service.juridique@union-conso.test",
                        rcpt_to=["contact@example.com"])
    assert code == 250, text
    deadline = time.monotonic() + 10
    while not to_expert() and time.monotonic() < deadline:
        time.sleep(0.05)
    (forward,) = to_expert()
    reply_to = str(parse_email(forward.data)["Reply-To"])
    for d in (a, b):
        d.set_time(at(2026, 11, 23, 15, 0))  # the first reminder is due (4 business hours)
    deadline = time.monotonic() + 10
    while len(to_expert()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # both schedulers polled several times since
    a.settle()
    assert len(to_expert()) == 2 and "Relance 1/2" in str(parse_email(to_expert()[1].data)[
        "Subject"])
    answer = (f"From: <durand@cabinet.test>\r\nTo: {reply_to}\r\nSubject: mon avis\r\n"
              "Message-ID: <avis-1@cabinet.test>\r\n\r\nFondé.\r\n").encode()
    code, text = b.send(answer, mail_from="durand@cabinet.test", rcpt_to=[reply_to])
    assert code == 250, text
    b.settle()
    assert query(url, "SELECT count(*) FROM timers WHERE kind LIKE 'escalate.%%'"
                 " AND state = 'active'") == [(0,)]
    for d in (a, b):
        d.set_time(at(2026, 11, 30, 12, 0))
    time.sleep(1.0)
    a.settle()
    assert len(to_expert()) == 2
