"""The runs of the throughput benchmark: one smtp-sink, then each path timed into it.

One class holds the sink, the processes and the work folder, so that every run feeds
the same sink and the entry point can stop whatever a failed run left behind.

Two modes feed the paths (``--mode``): ``distinct``, the default, sends distinct
customer mail (bench/mailgen.py) with bench/load.py, the same messages to every path;
``repeated`` runs Postfix's smtp-source, one message repeated from one sender. Either
way a run's clock stops when the sink has everything (settle.py): for mailflow, the
accepted messages and all the mail the daemon wrote (acknowledgements, escalations).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import load
import mailgen
from bare_relay import bare_relay_command
from private_pg import PrivatePostgres
from procs import (
    HOST,
    REPO,
    cpu_seconds,
    free_port,
    sink_messages,
    spawn,
    split_evenly,
    stop_all,
    stop_process,
    tail_text,
    wait_until_ready,
)
from settle import Outbox, OutboxCounts, settle

SENDER = "sender@client.example"
RECIPIENT = "sav@example.com"

#: acknowledge.limits of the runs' copy of the rules: no acknowledgement is suppressed by a
#: limit, so a run costs what acknowledging every new case costs
NO_ACK_LIMITS = {"per_case": 1_000_000, "per_address_per_day": 1_000_000,
                 "global_per_minute": 1_000_000, "global_per_hour": 1_000_000}

#: --stores: run name, number of daemons sharing the store
STORES = {
    "sqlite": ("mailflow serve", 1),
    "postgresql": ("mailflow pg x1", 1),
    "postgresql-3": ("mailflow pg x3", 3),
}


def raised_rules(folder: Path) -> Path:
    """The shipped rules copied to ``folder``/rules, their acknowledgement limits raised
    (NO_ACK_LIMITS; ruamel.yaml keeps the file as it was otherwise)."""
    from ruamel.yaml import YAML

    rules = folder / "rules"
    shutil.copytree(REPO / "rules", rules)
    path = rules / "acknowledge.yaml"
    yaml = YAML()
    data = yaml.load(path)
    data["acknowledge"]["limits"].update(NO_ACK_LIMITS)
    yaml.dump(data, path)
    return rules


@dataclass
class Result:
    name: str
    seconds: float | None = None
    messages: int = 0
    sink_received: int = 0
    server_cpu: float | None = None
    source_status: int | None = None
    source_error: str = ""
    note: str = ""
    extra: list[str] = field(default_factory=list)
    tag: str = ""  # how notes name the run; default: the first word of its name
    # the replies (distinct mode: bench/load.py sees each one)
    accepted: int | None = None  # 2xx to the end of DATA
    tempfailed: int | None = None  # 4xx
    refused: int | None = None  # 5xx
    p50: float | None = None  # seconds from the end of DATA to its reply
    p99: float | None = None
    load_cpu: float | None = None  # the load client's own CPU seconds
    # what the daemon should write (by the generator's labels) and what it queued
    acks_expected: int | None = None
    escalations_expected: int | None = None
    outbox: OutboxCounts | None = None
    sink_expected: int = 0  # accepted messages plus the outbox rows sent

    @property
    def label(self) -> str:
        return self.tag or self.name.split()[0]

    @property
    def rate(self) -> float | None:
        if self.seconds is None or self.seconds <= 0 or self.source_status != 0:
            return None
        return self.messages / self.seconds


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path
    smtp_source: str
    smtp_sink: str
    sink_port: int = 0
    sink_counter: Path = field(init=False)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    postgres: PrivatePostgres = field(default_factory=PrivatePostgres)  # for the pg runs
    traffic: list[mailgen.Mail] = field(default_factory=list)  # distinct mode
    wire: list[load.Outgoing] = field(default_factory=list)  # the same, ready to send
    rules: Path | None = None  # the mailflow runs' copy of the rules

    def __post_init__(self) -> None:
        self.sink_counter = self.workdir / "sink-counters.out"
        if self.args.mode == "distinct":
            generator = mailgen.Generator(self.args.seed, self.args.size, dict(self.args.share))
            self.traffic = generator.generate(self.args.messages)
            self.wire = [load.outgoing(m.label.mail_from, [m.label.rcpt_to], m.data,
                                       m.label.eight_bit, m.label.parent) for m in self.traffic]

    def mailflow_rules(self) -> Path:
        """The runs' copy of the rules (``raised_rules``), made once."""
        if self.rules is None:
            self.rules = raised_rules(self.workdir)
        return self.rules

    def source_command(self, port: int, messages: int, sessions: int) -> list[str]:
        cmd = [
            self.smtp_source,
            "-s", str(sessions),
            "-m", str(messages),
            "-l", str(self.args.size),
            "-f", SENDER,
            "-t", RECIPIENT,
        ]  # fmt: skip
        if self.args.reuse_connections:
            cmd.insert(1, "-d")
        cmd.append(f"{HOST}:{port}")
        return cmd

    def spawn(
        self, cmd: Sequence[str], log: Path, stdout: Path | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        proc = spawn(cmd, log, stdout, cwd or self.workdir)
        self.procs.append(proc)
        return proc

    def start_sink(self) -> subprocess.Popen[bytes]:
        self.sink_port = free_port()
        cmd = [self.smtp_sink, "-c", "-m", str(max(256, 4 * self.args.sessions + 32))]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # smtp-sink refuses to run as root without -u
        cmd += [f"{HOST}:{self.sink_port}", "1024"]
        proc = self.spawn(cmd, self.workdir / "sink.log", stdout=self.sink_counter)
        wait_until_ready("smtp-sink", proc, self.sink_port, self.args.startup_timeout)
        return proc

    def feed(self, result: Result, targets: Sequence[tuple[int, subprocess.Popen[bytes]]],
             outbox: Outbox | None = None) -> None:
        """Send the run's messages to the servers (``targets``: port, process), then wait
        until the sink has them all, and what the daemons' ``outbox`` sent; times the
        whole and measures the servers' CPU over it."""
        servers = [server for _, server in targets]
        before_sink = sink_messages(self.sink_counter)
        before_cpu = cpu_seconds(server.pid for server in servers)
        started = time.perf_counter()
        if self.args.mode == "distinct":
            self.run_load(result, [port for port, _ in targets])
            accepted = result.accepted or 0
        else:
            self.run_sources(result, [port for port, _ in targets])
            accepted = result.messages if result.source_status == 0 else 0
        # a failed smtp-source leaves no count to wait for: one look
        bound = self.args.settle_timeout if self.args.mode == "distinct" or accepted else 0
        done = settle(self.sink_counter, before_sink, accepted, outbox, bound)
        result.seconds = done.at - started
        after_cpu = cpu_seconds(server.pid for server in servers)
        if before_cpu is not None and after_cpu is not None:
            result.server_cpu = after_cpu - before_cpu
        result.sink_received, result.sink_expected = done.sink, done.expected
        result.outbox = done.outbox if outbox is not None else None
        if not done.complete and bound:
            result.note = (f"not settled after {bound:.0f}s: the sink got {done.sink} of "
                           f"{done.expected}, outbox rows still to send {done.outbox.pending}")

    def run_sources(self, result: Result, ports: Sequence[int]) -> None:
        """Repeated mode: one smtp-source per port, all at once, the messages and sessions
        split evenly over them, until the last one exits."""
        shares = zip(
            split_evenly(self.args.messages, len(ports)),
            split_evenly(self.args.sessions, len(ports)),
            strict=True,
        )
        commands = [
            self.source_command(port, messages, max(1, min(sessions, messages)))
            for port, (messages, sessions) in zip(ports, shares, strict=True)
            if messages > 0
        ]
        result.extra += ["smtp-source: " + shlex.join(cmd) for cmd in commands]
        deadline = time.monotonic() + self.args.timeout
        logs = [self.workdir / f"source-{len(self.procs)}-{i}.log" for i in range(len(commands))]
        sources = [self.spawn(cmd, log) for cmd, log in zip(commands, logs, strict=True)]
        statuses: list[int] = []
        errors: list[str] = []
        for cmd, proc, log in zip(commands, sources, logs, strict=True):
            try:
                statuses.append(proc.wait(timeout=max(0.0, deadline - time.monotonic())))
                error = log.read_text(errors="replace").strip()
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                statuses.append(-1)
                error = f"smtp-source timed out after {self.args.timeout}s (killed)"
            if error:
                errors.append(error if len(commands) == 1 else f"{cmd[-1]}: {error}")
        result.source_status = next((status for status in statuses if status != 0), 0)
        result.source_error = "; ".join(errors)
        result.messages = self.args.messages

    def run_load(self, result: Result, ports: Sequence[int]) -> None:
        """Distinct mode: bench/load.py sends the generated messages, message i to port
        i mod n over the sessions split evenly; every reply code and latency kept."""
        per_connection = self.args.per_connection or (1000 if self.args.reuse_connections else 1)
        cpu = time.process_time()
        outcome = load.run(self.wire, ports, self.args.sessions, per_connection,
                           self.args.message_timeout, self.args.timeout)
        result.load_cpu = time.process_time() - cpu
        result.messages = len(self.wire)
        result.accepted, result.tempfailed, result.refused = (
            outcome.count(2), outcome.count(4), outcome.count(5))
        result.p50, result.p99 = outcome.percentile(0.5), outcome.percentile(0.99)
        result.source_status = 0 if result.accepted == result.messages else 1
        result.source_error = "; ".join(f"{n} x {error}" for error, n in
                                        outcome.errors.most_common(3))
        result.extra.append(
            f"{result.label}: bench/load.py to {', '.join(f'{HOST}:{p}' for p in ports)}, "
            f"{self.args.sessions} sessions, {per_connection} message(s) a connection; "
            f"{outcome.no_reply} without a reply; all sent in {outcome.seconds:.2f}s; load "
            f"client CPU {result.load_cpu:.2f}s "
            f"({1000 * result.load_cpu / max(1, result.messages):.2f} ms/msg)")

    def phase_direct(self, sink: subprocess.Popen[bytes]) -> Result:
        client = "load.py" if self.args.mode == "distinct" else "smtp-source"
        result = Result(f"direct  {client} -> smtp-sink")
        self.feed(result, [(self.sink_port, sink)])
        return result

    def phase_bare(self) -> Result:
        result = Result("bare    aiosmtpd -> aiosmtplib")
        port = free_port()
        cmd = bare_relay_command(port, self.sink_port, self.args.pool)
        log = self.workdir / "bare-relay.log"
        proc = self.spawn(cmd, log)
        try:
            wait_until_ready("bare relay", proc, port, self.args.startup_timeout)
            self.feed(result, [(port, proc)])
        finally:
            status, killed = stop_process(proc, grace=10)
        if killed or status not in (0, -signal.SIGTERM):
            result.note = f"bare relay stopped with status {status}{' (SIGKILL)' if killed else ''}"
        if result.source_status != 0:
            result.extra.append("bare relay log tail:\n" + tail_text(log))
        return result

    def phase_mailflow(self, store: str = "sqlite") -> Result:
        """``mailflow serve`` on ``store`` (a key of STORES): one daemon, or several on
        one PostgreSQL database with their own ports, node ids and state folders."""
        name, nodes = STORES[store]
        result = Result(name, tag=name if store != "sqlite" else "")
        binary = Path(self.args.mailflow)
        if not binary.exists():
            result.note = f"skipped: {binary} does not exist"
            return result
        url = None
        if store != "sqlite":
            url = self.postgres.fresh_database()
            version = self.postgres.version()
            result.extra.append(f"{name} store: {url} (a fresh database, {version})")
        daemons: list[tuple[int, subprocess.Popen[bytes]]] = []
        logs: list[Path] = []
        try:
            for node in range(1, nodes + 1):
                port, proc, log = self.start_mailflow(result, binary, url, node)
                daemons.append((port, proc))
                logs.append(log)
            pg_before = self.postgres.cpu_seconds() if url else None
            outbox = Outbox(url or self.workdir / "mailflow-state" / "mailflow.sqlite3")
            try:
                self.feed(result, daemons, outbox)
            finally:
                outbox.close()
            pg_after = self.postgres.cpu_seconds() if url else None
            if self.traffic:
                result.acks_expected = sum(m.label.ack for m in self.traffic)
                result.escalations_expected = sum(m.label.escalation for m in self.traffic)
            if pg_before is not None and pg_after is not None:
                pg_cpu = pg_after - pg_before
                result.extra.append(
                    f"{name}: PostgreSQL server CPU {pg_cpu:.2f}s during the run"
                    f" ({1000 * pg_cpu / result.messages:.2f} ms/msg, not in srv CPU)"
                )
            before_stop = sink_messages(self.sink_counter)
            stop_started = time.monotonic()
            stopped = stop_all([proc for _, proc in daemons], grace=self.args.stop_timeout)
            stopped_in = time.monotonic() - stop_started
            time.sleep(0.2)
            late = sink_messages(self.sink_counter) - before_stop
            statuses = ", ".join(str(status) for status, _ in stopped)
            killed = any(was_killed for _, was_killed in stopped)
            result.extra.append(
                f"{result.label} stop: SIGTERM -> exit status "
                f"{statuses} in {stopped_in:.1f}s"
                + (" (needed SIGKILL)" if killed else "")
                + f"; sink got {late} more message(s) after the run"
            )
            if killed or any(status not in (0, -signal.SIGTERM) for status, _ in stopped):
                result.note = f"daemon exit status {statuses}{' (SIGKILL)' if killed else ''}"
        finally:
            stop_all([proc for _, proc in daemons], grace=self.args.stop_timeout)
        if result.source_status != 0 or result.note:
            for log in logs:
                result.extra.append(f"{log.stem} log tail:\n" + tail_text(log))
        return result

    def start_mailflow(
        self, result: Result, binary: Path, url: str | None, node: int
    ) -> tuple[int, subprocess.Popen[bytes], Path]:
        """Start one daemon on the runs' rules and wait for its greeting: on SQLite, its
        state in the work folder; on PostgreSQL with ``url`` and ``node_id: mx<node>``."""
        port = free_port()
        stem = "mailflow" if url is None else f"mailflow-pg-{result.name.split()[-1]}-mx{node}"
        state = self.workdir / ("mailflow-state" if url is None else f"{stem}-state")
        state.mkdir()
        cmd = [
            str(binary), "serve",
            "--listen", f"{HOST}:{port}",
            "--next-hop", f"smtp://{HOST}:{self.sink_port}",
            "--state-dir", str(state),
        ]  # fmt: skip
        cmd += ["--rules", str(self.mailflow_rules())]
        if url is not None:
            config = self.workdir / f"{stem}.yaml"
            config.write_text(f"node_id: mx{node}\n", encoding="utf-8")
            cmd += ["--config", str(config), "--store", url]
        if self.args.workers is not None:
            cmd += ["--workers", str(self.args.workers)]
        result.extra.append(("mailflow: " if url is None else f"mx{node}: ") + shlex.join(cmd))
        log = self.workdir / f"{stem}.log"
        proc = self.spawn(cmd, log, cwd=REPO)
        wait_until_ready(f"mailflow serve ({stem})", proc, port, self.args.startup_timeout)
        return port, proc, log
