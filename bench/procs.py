"""Process helpers of the throughput benchmark: start, probe, time and stop what it runs.

Kept apart from the runs so every run stops its processes the same way and measures
CPU the same way.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


class SetupError(RuntimeError):
    """A process could not be started or did not become ready in time."""


def find_tool(name: str) -> str:
    """Locate a Postfix test tool (they live in /usr/sbin, often not on a user's PATH)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
    found = shutil.which(name, path=path)
    if found is None:
        raise SetupError(f"{name} not found: apt-get install postfix (see bench/README.md)")
    return found


def spawn(cmd: Sequence[str], log: Path, stdout: Path | None = None,
          cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a session of its own (so its group can be killed), its stderr
    (and its stdout, unless ``stdout`` names a file of its own) into ``log``; ``env``:
    variables added to the environment."""
    with log.open("wb") as err, (stdout or Path(os.devnull)).open("wb") as out:
        return subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL,
                                stdout=out if stdout else err, stderr=err, cwd=cwd,
                                start_new_session=True,
                                env={**os.environ, **env} if env else None)


@contextlib.contextmanager
def workdir(prefix: str, keep: bool) -> Iterator[Path]:
    """A temporary folder for a run's files, removed at the end unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if keep:
            print(f"work folder kept: {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


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
    started by the benchmark with ``start_new_session=True``, so its group is its own.
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


def process_table() -> dict[int, tuple[int, int]]:
    """Every live process: pid -> (parent pid, user+system+reaped children's CPU ticks)."""
    table: dict[int, tuple[int, int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
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
    return table


def tree_pids(roots: Iterable[int], table: dict[int, tuple[int, int]] | None = None) -> set[int]:
    """``roots`` and their live descendants (forked workers, cluster nodes, backends)."""
    table = process_table() if table is None else table
    wanted = {root for root in roots if root in table}
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _) in table.items():
            if ppid in wanted and pid not in wanted:
                wanted.add(pid)
                changed = True
    return wanted


def tree_cpu_seconds(root: int) -> float | None:
    """User+system CPU of ``root`` and its live descendants (incl. reaped children), Linux."""
    table = process_table()
    if root not in table:
        return None
    return sum(table[pid][1] for pid in tree_pids([root], table)) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(roots: Iterable[int]) -> float | None:
    """``tree_cpu_seconds`` summed over several process trees; None if one is unknown."""
    total = 0.0
    for root in roots:
        seconds = tree_cpu_seconds(root)
        if seconds is None:
            return None
        total += seconds
    return total


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


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` shares that differ by at most one: 3000/3, 20 -> 7, 7, 6."""
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


def stop_all(
    procs: Sequence[subprocess.Popen[bytes]], grace: float
) -> list[tuple[int | None, bool]]:
    """``stop_process`` for several at once: SIGTERM to all, then one shared grace."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    return [stop_process(proc, grace=max(0.0, deadline - time.monotonic())) for proc in procs]
