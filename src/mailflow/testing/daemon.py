"""The real daemon for end-to-end tests: ``mailflow serve`` as a subprocess, on free
loopback ports, configured through a YAML file in a temporary folder, with its own
SQLite store, stopped afterwards.

``test_clock``: the daemon runs on a time the test moves (``advance``, ``set_time``),
so a reminder due tomorrow at 9:00 fires now, without sleeping through the night.
The daemon's log (JSON lines) is kept in its folder; ``settle`` waits until nothing is
left to send (the outbox), so a test proves an absence instead of sleeping on it.
"""

from __future__ import annotations

import shutil
import signal
import smtplib
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from mailflow.testing.nexthop import free_port, wait_for_port


def drain_outbox(db: Path, timeout: float = 10.0, now: float | None = None) -> None:
    """Wait until the daemon's outbox has nothing ready to send (``now``: a test clock's
    time; then only what is due by it: a row paced or retried later stays ready)."""
    deadline = time.monotonic() + timeout
    due = "" if now is None else f" AND next_attempt <= {float(now)!r}"
    while time.monotonic() < deadline:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            ready = conn.execute(f"SELECT count(*) FROM outbox WHERE state = 'ready'{due}"
                                 ).fetchone()
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


class Daemon:
    """``mailflow serve`` as a real subprocess, configured through a YAML file."""

    def __init__(self, tmp: Path, next_hop: str, config: dict[str, Any] | None = None,
                 rules: Path | None = None, test_clock: float | None = None,
                 default_rules: Path | None = None, default_chain: str = "") -> None:
        """``test_clock``: run on a fake time starting there (a file under ``tmp``,
        moved with ``set_time``/``advance``), with ``--allow-test-clock``."""
        self.tmp = tmp
        self.port = free_port()
        self.metrics_port = free_port()
        self.rules = tmp / "rules"
        tmp.mkdir(parents=True, exist_ok=True)
        source = rules or default_rules
        if source is None:
            raise ValueError("a rules folder is needed (rules=...)")
        shutil.copytree(source, self.rules, dirs_exist_ok=True)
        if rules is None and default_chain:
            (self.rules / "chain.yaml").write_text(default_chain, encoding="utf-8")
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
            drain_outbox(self.db, timeout, self.now() if self.clock_path else None)

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



