#!/usr/bin/env python3
"""Throughput benchmark: smtp-source -> {smtp-sink | bare relay | mailflow} -> smtp-sink.

Three runs of Postfix's ``smtp-source`` against the same ``smtp-sink``:

* ``direct``   straight into the sink (the ceiling of the load generator on this box);
* ``bare``     through a minimal aiosmtpd server that relays each message with a small
               pool of persistent aiosmtplib connections (the floor cost of the stack);
* ``mailflow`` through ``mailflow serve`` with the default chain.

Everything listens on 127.0.0.1 only, every loop is bounded, and every process this
script starts is stopped before it exits.  See bench/README.md.

Exit status: 0 all good; 1 smtp-source reported an error (or timed out);
2 the sink received fewer messages than smtp-source sent; 3 set-up failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
SENDER = "sender@client.example"
RECIPIENT = "sav@example.com"
REPO = Path(__file__).resolve().parent.parent
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")

EXIT_SOURCE_ERROR = 1
EXIT_COUNT_MISMATCH = 2
EXIT_SETUP = 3


class SetupError(RuntimeError):
    """A process could not be started or did not become ready in time."""


# --------------------------------------------------------------------------- helpers


def find_tool(name: str) -> str:
    """Locate a Postfix test tool (they live in /usr/sbin, often not on a user's PATH)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
    found = shutil.which(name, path=path)
    if found is None:
        raise SetupError(f"{name} not found: apt-get install postfix (see bench/README.md)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def smtp_greets(port: int, timeout: float = 2.0) -> bool:
    """True if something on HOST:port answers with an SMTP 220 greeting."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            greeting = sock.recv(512)
            if not greeting.startswith(b"220"):
                return False
            with contextlib.suppress(OSError):
                sock.sendall(b"QUIT\r\n")
                sock.recv(512)
            return True
    except OSError:
        return False


def wait_until_ready(name: str, proc: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SetupError(f"{name} exited with status {proc.returncode} before accepting")
        if smtp_greets(port):
            return
        time.sleep(0.1)
    raise SetupError(f"{name} did not accept SMTP on {HOST}:{port} within {timeout:.0f}s")


def stop_process(proc: subprocess.Popen[bytes], grace: float) -> tuple[int | None, bool]:
    """SIGTERM the process, wait up to ``grace`` s, then SIGKILL its process group.

    Returns (exit status, whether SIGKILL was needed).  Every process given here was
    started by this script with ``start_new_session=True``, so its group is its own.
    """
    if proc.poll() is not None:
        return proc.returncode, False
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=grace), False
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    return proc.returncode, True


def tree_cpu_seconds(root: int) -> float | None:
    """User+system CPU of ``root`` and its live descendants (incl. reaped children), Linux."""
    table: dict[int, tuple[int, int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        # fields[0] is field 3 (state): ppid=4, utime=14, stime=15, cutime=16, cstime=17
        ticks = sum(int(value) for value in fields[11:15])
        table[int(entry)] = (int(fields[1]), ticks)
    if root not in table:
        return None
    wanted = {root}
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _) in table.items():
            if ppid in wanted and pid not in wanted:
                wanted.add(pid)
                changed = True
    return sum(table[pid][1] for pid in wanted) / os.sysconf("SC_CLK_TCK")


_COUNTER = re.compile(rb"mesg=(\d+)")


def sink_messages(counter_file: Path) -> int:
    """Last ``mesg=N`` counter that ``smtp-sink -c`` wrote (CR-separated, cumulative)."""
    try:
        with counter_file.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 512))
            tail = handle.read()
    except OSError:
        return 0
    found = _COUNTER.findall(tail)
    return int(found[-1]) if found else 0


def tail_text(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


# --------------------------------------------------------------------------- bare relay


class _PooledRelay:
    """aiosmtpd handler: relay each message through a pool of persistent aiosmtplib clients."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host = host
        self.port = port
        self.size = size
        self.pool: asyncio.Queue[Any] = asyncio.Queue()

    async def start(self) -> None:
        import aiosmtplib

        for _ in range(self.size):
            client = aiosmtplib.SMTP(
                hostname=self.host, port=self.port, local_hostname="bare-relay", timeout=30
            )
            await client.connect()
            self.pool.put_nowait(client)

    async def close(self) -> None:
        while not self.pool.empty():
            client = self.pool.get_nowait()
            with contextlib.suppress(Exception):
                await client.quit()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import aiosmtplib

        client = await self.pool.get()
        try:
            if not client.is_connected:
                await client.connect()
            await client.sendmail(
                envelope.mail_from or "", envelope.rcpt_tos, envelope.original_content or b""
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()  # drop it; reconnected on its next use
            return f"451 4.4.0 next hop failed: {exc}"
        finally:
            self.pool.put_nowait(client)
        return "250 2.0.0 Ok: relayed"


async def _serve_bare_relay(listen_port: int, sink_port: int, pool_size: int) -> None:
    from aiosmtpd.smtp import SMTP

    relay = _PooledRelay(HOST, sink_port, pool_size)
    await relay.start()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(relay, hostname="bare-relay"), HOST, listen_port, backlog=1024
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
        await relay.close()


def bare_relay_python() -> str:
    if importlib.util.find_spec("aiosmtpd") and importlib.util.find_spec("aiosmtplib"):
        return sys.executable
    venv_python = REPO / ".venv" / "bin" / "python"
    if venv_python.exists():
        return str(venv_python)
    raise SetupError("aiosmtpd/aiosmtplib not importable: run with the project's venv python")


# --------------------------------------------------------------------------- benchmark


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

    def __post_init__(self) -> None:
        self.sink_counter = self.workdir / "sink-counters.out"

    def source_command(self, port: int) -> list[str]:
        cmd = [
            self.smtp_source,
            "-s", str(self.args.sessions),
            "-m", str(self.args.messages),
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

    def run_source(self, result: Result, port: int, server: subprocess.Popen[bytes]) -> None:
        cmd = self.source_command(port)
        result.extra.append("smtp-source: " + shlex.join(cmd))
        before_sink = sink_messages(self.sink_counter)
        before_cpu = tree_cpu_seconds(server.pid)
        started = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=self.args.timeout, check=False)
            result.source_status = done.returncode
            result.source_error = done.stderr.decode(errors="replace").strip()
        except subprocess.TimeoutExpired:
            result.source_status = -1
            result.source_error = f"smtp-source timed out after {self.args.timeout}s (killed)"
        result.seconds = time.perf_counter() - started
        after_cpu = tree_cpu_seconds(server.pid)
        if before_cpu is not None and after_cpu is not None:
            result.server_cpu = after_cpu - before_cpu
        time.sleep(0.2)  # let smtp-sink write its last counter line
        result.messages = self.args.messages
        result.sink_received = sink_messages(self.sink_counter) - before_sink

    def phase_direct(self, sink: subprocess.Popen[bytes]) -> Result:
        result = Result("direct  smtp-source -> smtp-sink")
        self.run_source(result, self.sink_port, sink)
        return result

    def phase_bare(self) -> Result:
        result = Result("bare    aiosmtpd -> aiosmtplib")
        port = free_port()
        cmd = [
            bare_relay_python(), str(Path(__file__).resolve()),
            "--_bare-relay", str(port), str(self.sink_port), str(self.args.pool),
        ]  # fmt: skip
        log = self.workdir / "bare-relay.log"
        proc = self.spawn(cmd, log)
        try:
            wait_until_ready("bare relay", proc, port, self.args.startup_timeout)
            self.run_source(result, port, proc)
        finally:
            status, killed = stop_process(proc, grace=10)
        if killed or status not in (0, -signal.SIGTERM):
            result.note = f"bare relay stopped with status {status}{' (SIGKILL)' if killed else ''}"
        if result.source_status != 0:
            result.extra.append("bare relay log tail:\n" + tail_text(log))
        return result

    def phase_mailflow(self) -> Result:
        result = Result("mailflow serve")
        binary = Path(self.args.mailflow)
        if not binary.exists():
            result.note = f"skipped: {binary} does not exist"
            return result
        port = free_port()
        state = self.workdir / "mailflow-state"
        state.mkdir()
        cmd = [
            str(binary), "serve",
            "--listen", f"{HOST}:{port}",
            "--next-hop", f"smtp://{HOST}:{self.sink_port}",
            "--state-dir", str(state),
        ]  # fmt: skip
        if self.args.workers is not None:
            cmd += ["--workers", str(self.args.workers)]
        result.extra.append("mailflow: " + shlex.join(cmd))
        log = self.workdir / "mailflow.log"
        # from the repository root, so its default ./rules is the shipped rules/ folder
        proc = self.spawn(cmd, log, cwd=REPO)
        try:
            wait_until_ready("mailflow serve", proc, port, self.args.startup_timeout)
            self.run_source(result, port, proc)
            before_stop = sink_messages(self.sink_counter)
            stop_started = time.monotonic()
            status, killed = stop_process(proc, grace=self.args.stop_timeout)
            stopped_in = time.monotonic() - stop_started
            time.sleep(0.2)
            late = sink_messages(self.sink_counter) - before_stop
            result.extra.append(
                f"mailflow stop: SIGTERM -> exit status {status} in {stopped_in:.1f}s"
                + (" (needed SIGKILL)" if killed else "")
                + f"; sink got {late} more message(s) after the smtp-source run"
            )
            if killed or status not in (0, -signal.SIGTERM):
                result.note = f"daemon exit status {status}{' (SIGKILL)' if killed else ''}"
        finally:
            stop_process(proc, grace=self.args.stop_timeout)
        if result.source_status != 0 or result.note:
            result.extra.append("mailflow log tail:\n" + tail_text(log))
        return result


def fmt(value: float | None, width: int, decimals: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{decimals}f}"


def print_report(bench: Bench, results: list[Result], argv: Sequence[str]) -> None:
    args = bench.args
    mode = "a new connection per message"
    if args.reuse_connections:
        mode = "one connection per session (-d)"
    print()
    print(
        f"mailflow throughput: {args.messages} messages x {args.size} bytes, "
        f"{args.sessions} parallel sessions, {mode}"
    )
    print(
        f"host: {platform.node()} {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs, python {platform.python_version()}"
    )
    print()
    header = (
        f"{'path':34} {'seconds':>8} {'msg/s':>9} {'srv CPU s':>10} "
        f"{'CPU ms/msg':>11} {'sink got':>9}"
    )
    print(header)
    print("-" * len(header))
    for res in results:
        per_msg = (
            None
            if res.server_cpu is None or not res.messages
            else 1000 * res.server_cpu / res.messages
        )
        got = str(res.sink_received) if res.seconds is not None else "-"
        print(
            f"{res.name:34} {fmt(res.seconds, 8, 2)} {fmt(res.rate, 9, 1)} "
            f"{fmt(res.server_cpu, 10, 2)} {fmt(per_msg, 11, 2)} {got:>9}"
        )
    print("(srv CPU = user+sys CPU of the server under test: the sink for 'direct')")
    rates = {res.name.split()[0]: res.rate for res in results}
    mailflow = rates.get("mailflow")
    print()
    for other in ("direct", "bare"):
        base = rates.get(other)
        ratio = None if mailflow is None or not base else mailflow / base
        print(f"ratio mailflow/{other}: {fmt(ratio, 0, 3)}")
    print()
    for res in results:
        for line in res.extra:
            print(line)
        if res.note:
            print(f"{res.name.split()[0]}: {res.note}")
        if res.source_status not in (None, 0):
            label = res.name.split()[0]
            print(f"{label}: smtp-source exit {res.source_status}: {res.source_error}")
    print("command: " + shlex.join([sys.executable, sys.argv[0], *argv]))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=5000, help="messages per run (-m)")
    parser.add_argument("--sessions", type=int, default=20, help="parallel sessions (-s)")
    parser.add_argument("--size", type=int, default=10240, help="payload bytes (-l)")
    parser.add_argument("--workers", type=int, default=None, help="passed to mailflow serve")
    parser.add_argument(
        "--reuse-connections",
        action="store_true",
        help="smtp-source -d: keep each session's connection for all its messages "
        "(default: a new connection per message, as smtp-source does)",
    )
    parser.add_argument("--pool", type=int, default=8, help="bare relay: aiosmtplib connections")
    parser.add_argument(
        "--mailflow", default=str(REPO / ".venv" / "bin" / "mailflow"), help="mailflow executable"
    )
    parser.add_argument(
        "--only", choices=("direct", "bare", "mailflow"), action="append", help="run only these"
    )
    parser.add_argument("--timeout", type=float, default=600, help="limit for one smtp-source run")
    parser.add_argument("--startup-timeout", type=float, default=30)
    parser.add_argument("--stop-timeout", type=float, default=20, help="SIGTERM grace, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    parser.add_argument("--_bare-relay", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("messages", "sessions", "size", "pool"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mailflow-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"work directory kept: {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args._bare_relay:
        asyncio.run(_serve_bare_relay(*args._bare_relay))
        return 0
    phases = args.only or ["direct", "bare", "mailflow"]
    results: list[Result] = []
    with workdir(args.keep) as work:
        try:
            bench = Bench(args, work, find_tool("smtp-source"), find_tool("smtp-sink"))
        except SetupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_SETUP
        try:
            sink = bench.start_sink()
            if "direct" in phases:
                results.append(bench.phase_direct(sink))
            if "bare" in phases:
                results.append(bench.phase_bare())
            if "mailflow" in phases:
                results.append(bench.phase_mailflow())
        except SetupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            for log in sorted(work.glob("*.log")):
                print(f"--- {log.name}\n{tail_text(log)}", file=sys.stderr)
            print_report(bench, results, argv)
            return EXIT_SETUP
        finally:
            for proc in reversed(bench.procs):
                stop_process(proc, grace=args.stop_timeout)
        print_report(bench, results, argv)
    if any(res.source_status not in (None, 0) for res in results):
        return EXIT_SOURCE_ERROR
    if any(res.seconds is not None and res.sink_received < res.messages for res in results):
        print("error: the sink received fewer messages than smtp-source sent", file=sys.stderr)
        return EXIT_COUNT_MISMATCH
    return 0


if __name__ == "__main__":
    sys.exit(main())
