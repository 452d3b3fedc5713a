"""The servers ``make bench`` compares, each started once on loopback in front of one sink.

| key | what |
| --- | --- |
| ``sink`` | Postfix's ``smtp-sink`` alone: the limit, and the latency subtracted from the others |
| ``bare`` | aiosmtpd in, pooled aiosmtplib out, ``250`` only after the next hop (bare_relay.py) |
| ``haraka`` | Haraka from npm, ``queue/smtp_forward``, one node per core (haraka.py) |
| ``mailflow`` | ``mailflow serve``, the shipped chain, SQLite, one worker |
| ``mailflow-workers`` | the same, one worker per core (``--workers N``) |
| ``mailflow-pg`` | one daemon on a fresh database of the private PostgreSQL (private_pg.py) |
| ``mailflow@REV`` | ``mailflow``, its code as of git REV (exported, first on PYTHONPATH) |

A target's processes are the process trees under its ``roots``: a daemon and its forked
workers, Haraka's cluster master and nodes, and for ``mailflow-pg`` PostgreSQL's server
and backends too (what a message costs there). The mailflow targets get the shipped rules
with the acknowledgement limits raised (runs.raised_rules), and their outbox is read to
know when a run is over (settle.py).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import haraka
from bare_relay import bare_relay_command
from private_pg import PrivatePostgres, postmaster_pid
from procs import HOST, REPO, SetupError, free_port, spawn, stop_all, wait_until_ready
from runs import raised_rules
from settle import Outbox

CORES = os.cpu_count() or 1
KEYS = ("sink", "bare", "haraka", "mailflow", "mailflow-workers", "mailflow-pg")


@dataclass
class Target:
    key: str
    name: str  # as the table prints it
    port: int
    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]
    outbox: Outbox | None = None  # the mailflow targets': what they still have to send
    extra_roots: Callable[[], list[int]] = list  # PostgreSQL's server, for mailflow-pg
    notes: list[str] = field(default_factory=list)

    def roots(self) -> list[int]:
        return [proc.pid for proc in self.procs] + self.extra_roots()

    def alive(self) -> bool:
        return all(proc.poll() is None for proc in self.procs)


@dataclass
class Servers:
    """The sink and the targets of one benchmark, in ``workdir``; ``stop`` ends them all."""

    workdir: Path
    smtp_sink: str
    max_sessions: int
    mailflow: Path = REPO / ".venv" / "bin" / "mailflow"
    pool: int = 8  # the bare relay's aiosmtplib connections
    haraka_log_level: str = "info"
    startup_timeout: float = 60.0
    sink_port: int = 0
    sink_counter: Path = field(init=False)
    targets: dict[str, Target] = field(default_factory=dict)
    postgres: PrivatePostgres = field(default_factory=PrivatePostgres)
    rules: Path | None = None

    def __post_init__(self) -> None:
        self.sink_counter = self.workdir / "sink-counters.out"

    def start_sink(self) -> Target:
        """smtp-sink, counting what it receives (``-c``) into ``sink_counter``."""
        self.sink_port = free_port()
        cmd = [self.smtp_sink, "-c", "-m", str(max(256, 4 * self.max_sessions + 64))]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # smtp-sink refuses to run as root without -u
        cmd += [f"{HOST}:{self.sink_port}", "1024"]
        log = self.workdir / "sink.log"
        proc = spawn(cmd, log, stdout=self.sink_counter, cwd=self.workdir)
        target = Target("sink", "smtp-sink alone", self.sink_port, [proc], [log])
        self.targets["sink"] = target
        wait_until_ready("smtp-sink", proc, self.sink_port, self.startup_timeout)
        return target

    def start(self, key: str, state: Path | None = None) -> Target:
        """Start target ``key`` (of KEYS but ``sink``: ``start_sink`` first) and wait for
        its greeting; ``state``: a mailflow target's state folder, its store seeded."""
        starters: dict[str, Callable[[], Target]] = {
            "bare": self.start_bare, "haraka": self.start_haraka,
            "mailflow": lambda: self.start_mailflow(key, 1, state=state),
            "mailflow-workers": lambda: self.start_mailflow(key, CORES),
            "mailflow-pg": lambda: self.start_mailflow(key, 1, postgres=True)}
        if key in starters:
            target = starters[key]()
        elif key.startswith("mailflow@"):
            target = self.start_mailflow(key, 1, source=self.source_of(key.partition("@")[2]))
        else:
            target = self.start_mailflow(key, 1, state=state)
        self.targets[key] = target
        for proc in target.procs:
            wait_until_ready(target.name, proc, target.port, self.startup_timeout)
        return target

    def start_bare(self) -> Target:
        port = free_port()
        log = self.workdir / "bare-relay.log"
        proc = spawn(bare_relay_command(port, self.sink_port, self.pool), log, cwd=self.workdir)
        return Target("bare", f"bare relay (aiosmtpd+aiosmtplib, pool {self.pool})", port,
                      [proc], [log])

    def start_haraka(self) -> Target:
        binary = haraka.install()
        port = free_port()
        folder = haraka.configure(binary, self.workdir / "haraka", port, self.sink_port,
                                  log_level=self.haraka_log_level)
        log = self.workdir / "haraka.log"
        proc = spawn(haraka.command(binary, folder), log, cwd=folder)
        version = haraka.installed_version() or "?"
        return Target("haraka", f"Haraka {version} (nodes={CORES})", port, [proc], [log])

    def source_of(self, revision: str) -> Path:
        """mailflow's ``src`` as of git ``revision``, exported into the work folder."""
        folder = self.workdir / f"source-{revision.replace('/', '_')}"
        if not folder.is_dir():
            folder.mkdir()
            archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "src"],
                                     capture_output=True, check=False, timeout=60)
            if archive.returncode != 0:
                raise SetupError(f"git archive {revision}: {archive.stderr.decode()[-500:]}")
            subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True,
                           timeout=60)
        return folder / "src"

    def start_mailflow(self, key: str, workers: int, postgres: bool = False,
                       state: Path | None = None, source: Path | None = None) -> Target:
        """``mailflow serve`` with ``workers``, on PostgreSQL or on SQLite in ``state``
        (a new folder by default); ``source``: another mailflow package to run (its
        ``src`` folder, put first on PYTHONPATH), the same venv otherwise."""
        if not self.mailflow.exists():
            raise SetupError(f"{self.mailflow} does not exist: make the venv (make bench)")
        if self.rules is None:
            self.rules = raised_rules(self.workdir)
        port = free_port()
        if state is None:
            state = self.workdir / f"{key.replace('/', '_')}-state"
            state.mkdir()
        cmd = [str(self.mailflow), "serve", "--listen", f"{HOST}:{port}",
               "--next-hop", f"smtp://{HOST}:{self.sink_port}", "--state-dir", str(state),
               "--rules", str(self.rules), "--workers", str(workers)]
        store: str | Path = state / "mailflow.sqlite3"
        extra: Callable[[], list[int]] = list
        if postgres:
            store = self.postgres.fresh_database()
            cmd += ["--store", store]
            server = self.postgres

            def extra() -> list[int]:
                pid = postmaster_pid(server.server) if server.server is not None else None
                return [pid] if pid else []
        log = self.workdir / f"{key.replace('/', '_')}.log"
        proc = spawn(cmd, log, cwd=REPO, env={"PYTHONPATH": str(source)} if source else None)
        what = ("PostgreSQL, one daemon" if postgres
                else f"SQLite, {workers} worker{'s' if workers > 1 else ''}")
        if source is not None:
            what += f", as of {key.partition('@')[2]}"
        target = Target(key, f"mailflow ({what})", port, [proc], [log], Outbox(store), extra)
        if postgres:
            target.notes.append(f"{self.postgres.version()}: its server and backends counted"
                                " in the CPU and memory of this target")
        return target

    def stop(self, grace: float = 20.0) -> None:
        """Stop every target, the sink last, and remove the private PostgreSQL."""
        order = [t for k, t in self.targets.items() if k != "sink"]
        order += [self.targets["sink"]] if "sink" in self.targets else []
        for target in order:
            if target.outbox is not None:
                target.outbox.close()
            stop_all(target.procs, grace=grace)
        self.postgres.remove()
