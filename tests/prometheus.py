"""A real, private Prometheus for the tests: Debian's ``/usr/bin/prometheus`` (installed by
``make test``, its own service never started) on a free loopback port, with its
configuration and TSDB in a folder of its own, scraping the targets given every second.

The system's Prometheus, if any, is neither read nor queried: the server gets its own
``--config.file``, ``--storage.tsdb.path`` and ``--web.listen-address``, and
:meth:`PrometheusServer.stop` terminates it and removes its folder.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from ruamel.yaml import YAML

from conftest import free_port, wait_for_port

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")


def unavailable() -> str | None:
    """Why no private Prometheus (or promtool) can run here, or None."""
    for tool in (PROMETHEUS, PROMTOOL):
        if not tool.exists():
            return f"{tool} is missing (make test installs Debian's prometheus)"
    return None


@contextlib.contextmanager
def scraping(daemon_metrics_port: int, rule_files: Sequence[Path] = ()
             ) -> Iterator[PrometheusServer]:
    """A private Prometheus scraping a daemon's /metrics on loopback, started, and stopped
    afterwards; where none can run, a failure (``make test`` installs it), never a skip."""
    problem = unavailable()
    if problem is not None:
        pytest.fail(problem)
    server = PrometheusServer([f"127.0.0.1:{daemon_metrics_port}"], rule_files=rule_files)
    try:
        yield server.start()
    finally:
        server.stop()


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


class PrometheusServer:
    """``prometheus`` scraping ``targets`` (``host:port``) every second, with ``rule_files``."""

    def __init__(self, targets: Sequence[str], rule_files: Sequence[Path] = (),
                 job: str = "mailflow") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mailflow-prometheus-"))
        self.port = free_port()
        self.config = self.root / "prometheus.yml"
        rules = []
        for i, path in enumerate(rule_files):  # copied: Prometheus reads them from its folder
            copy = self.root / f"rules-{i}-{path.name}"
            shutil.copy(path, copy)
            rules.append(str(copy))
        with open(self.config, "w", encoding="utf-8") as fh:
            YAML().dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                                    "scrape_timeout": "1s"},
                         "rule_files": rules,
                         "scrape_configs": [{"job_name": job,
                                             "static_configs": [{"targets": list(targets)}]}]},
                        fh)
        self.log_path = self.root / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrometheusServer:
        for _ in range(3):
            log = open(self.log_path, "ab")  # noqa: SIM115 (closed with the process)
            self.proc = subprocess.Popen(
                [str(PROMETHEUS), f"--config.file={self.config}",
                 f"--storage.tsdb.path={self.root / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--storage.tsdb.retention.time=1d", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
            log.close()
            try:
                wait_for_port(self.port, timeout=30, proc=self.proc)
            except RuntimeError:
                if "address already in use" not in self.log.lower():
                    raise RuntimeError(f"prometheus exited:\n{self.log[-3000:]}") from None
                self.port = free_port()
                continue
            self.wait_ready()
            return self
        raise RuntimeError("no free port for prometheus after three tries")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"prometheus not ready within {timeout}s:\n{self.log[-3000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET /api/v1/``path``; the decoded answer, whatever its status (errors included)."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}",
                                        timeout=30) as resp:
                body = resp.read()
        except urllib.error.HTTPError as failed:  # 400/422: a bad query, with its error
            body = failed.read()
        answer: dict[str, Any] = json.loads(body)
        return answer

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("query", query=expr)

    def scrapes(self, job: str = "mailflow") -> float:
        """How many scrapes of ``job`` succeeded so far (summed over its targets)."""
        found = self.query(f'sum(sum_over_time(up{{job="{job}"}}[1h]))')
        result = found.get("data", {}).get("result") or []
        return float(result[0]["value"][1]) if result else 0.0

    def wait_scrapes(self, more: int = 2, job: str = "mailflow", timeout: float = 30.0) -> None:
        """Wait for ``more`` scrapes after now (what a test did since is then in the TSDB)."""
        target = self.scrapes(job) + more
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.scrapes(job) >= target:
                return
            time.sleep(0.2)
        raise TimeoutError(f"prometheus did not scrape {job} {more} more times:\n"
                           f"{self.api('targets')}\n{self.log[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
