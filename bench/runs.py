"""The runs of the throughput benchmark: one smtp-sink, then each path timed into it.

One class holds the sink, the processes and the work folder, so that every run feeds
the same sink and the entry point can stop whatever a failed run left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bare_relay import bare_relay_command
from private_pg import PrivatePostgres
from procs import (
    HOST,
    REPO,
    cpu_seconds,
    free_port,
    sink_messages,
    split_evenly,
    stop_all,
    stop_process,
    tail_text,
    wait_until_ready,
)

SENDER = "sender@client.example"
RECIPIENT = "sav@example.com"

#: --stores: run name, number of daemons sharing the store
STORES = {
    "sqlite": ("mailflow serve", 1),
    "postgresql": ("mailflow pg x1", 1),
    "postgresql-3": ("mailflow pg x3", 3),
}


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

    def __post_init__(self) -> None:
        self.sink_counter = self.workdir / "sink-counters.out"

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
        with log.open("wb") as err, (stdout or Path(os.devnull)).open("wb") as out:
            proc = subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=out if stdout else err,
                stderr=err,
                cwd=cwd or self.workdir,
                start_new_session=True,
            )
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

    def run_sources(
        self, result: Result, targets: Sequence[tuple[int, subprocess.Popen[bytes]]]
    ) -> None:
        """One smtp-source per (port, server), all at once, the messages and sessions split
        evenly over them; times the whole, from the first start to the last exit."""
        shares = zip(
            split_evenly(self.args.messages, len(targets)),
            split_evenly(self.args.sessions, len(targets)),
            strict=True,
        )
        commands = [
            self.source_command(port, messages, max(1, min(sessions, messages)))
            for (port, _), (messages, sessions) in zip(targets, shares, strict=True)
            if messages > 0
        ]
        result.extra += ["smtp-source: " + shlex.join(cmd) for cmd in commands]
        servers = [server for _, server in targets]
        before_sink = sink_messages(self.sink_counter)
        before_cpu = cpu_seconds(server.pid for server in servers)
        started = time.perf_counter()
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
        result.seconds = time.perf_counter() - started
        result.source_status = next((status for status in statuses if status != 0), 0)
        result.source_error = "; ".join(errors)
        after_cpu = cpu_seconds(server.pid for server in servers)
        if before_cpu is not None and after_cpu is not None:
            result.server_cpu = after_cpu - before_cpu
        time.sleep(0.2)  # let smtp-sink write its last counter line
        result.messages = self.args.messages
        result.sink_received = sink_messages(self.sink_counter) - before_sink

    def phase_direct(self, sink: subprocess.Popen[bytes]) -> Result:
        result = Result("direct  smtp-source -> smtp-sink")
        self.run_sources(result, [(self.sink_port, sink)])
        return result

    def phase_bare(self) -> Result:
        result = Result("bare    aiosmtpd -> aiosmtplib")
        port = free_port()
        cmd = bare_relay_command(port, self.sink_port, self.args.pool)
        log = self.workdir / "bare-relay.log"
        proc = self.spawn(cmd, log)
        try:
            wait_until_ready("bare relay", proc, port, self.args.startup_timeout)
            self.run_sources(result, [(port, proc)])
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
            self.run_sources(result, daemons)
            pg_after = self.postgres.cpu_seconds() if url else None
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
                + f"; sink got {late} more message(s) after the smtp-source run"
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
        """Start one daemon and wait for its greeting: as today on SQLite (its state in
        a temp folder); on PostgreSQL with ``url`` and ``node_id: mx<node>``."""
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
        if url is not None:
            config = self.workdir / f"{stem}.yaml"
            config.write_text(f"node_id: mx{node}\n", encoding="utf-8")
            cmd += ["--config", str(config), "--store", url, "--rules", str(REPO / "rules")]
        if self.args.workers is not None:
            cmd += ["--workers", str(self.args.workers)]
        result.extra.append(("mailflow: " if url is None else f"mx{node}: ") + shlex.join(cmd))
        log = self.workdir / f"{stem}.log"
        # from the repository root, so its default ./rules is the shipped rules/ folder
        proc = self.spawn(cmd, log, cwd=REPO)
        wait_until_ready(f"mailflow serve ({stem})", proc, port, self.args.startup_timeout)
        return port, proc, log
