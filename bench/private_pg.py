"""The private PostgreSQL of the ``postgresql`` runs: one server, a fresh database per run.

Started on first use with tests/pg.py (the test suite's throwaway server) so the
benchmark needs no PostgreSQL of its own, and removed when the benchmark ends.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from procs import REPO, SetupError, cpu_seconds


def private_postgres() -> Any:
    """A started ``PgServer`` of tests/pg.py (initdb + postgres as the postgres user)."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        import pg  # tests/pg.py; it imports tests/conftest.py, hence the test venv
    except ImportError as exc:
        raise SetupError(
            f"cannot import tests/pg.py ({exc}): run with the test venv (make bench)"
        ) from None
    why = pg.unavailable()
    if why is not None:
        raise SetupError(f"no private PostgreSQL: {why}")
    server = pg.PgServer()
    try:
        return server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        server.remove()
        raise SetupError(f"PostgreSQL did not start: {exc}") from None


def postmaster_pid(server: Any) -> int | None:
    """The PostgreSQL server's main pid (its backends are its children), from its data dir."""
    try:
        return int((Path(server.data) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class PrivatePostgres:
    """The one server of the benchmark, started by the first database asked for."""

    def __init__(self) -> None:
        self.server: Any = None  # tests/pg.py's PgServer

    def fresh_database(self) -> str:
        """A new, empty database on the private PostgreSQL (started on first use)."""
        if self.server is None:
            self.server = private_postgres()
        try:
            url: str = self.server.database()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            raise SetupError(f"CREATE DATABASE failed: {exc}") from None
        return url

    def version(self) -> str:
        try:
            done = subprocess.run(
                [str(Path(self.server.bin) / "postgres"), "--version"],
                capture_output=True, text=True, timeout=10, check=False,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return "PostgreSQL"
        return done.stdout.strip() or "PostgreSQL"

    def cpu_seconds(self) -> float | None:
        """CPU of the server and its backends so far; None if it is not known."""
        pid = postmaster_pid(self.server) if self.server is not None else None
        return cpu_seconds([pid]) if pid else None

    def remove(self) -> None:
        if self.server is not None:
            try:
                self.server.remove()
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                print(f"warning: PostgreSQL did not stop cleanly: {exc}", file=sys.stderr)
            self.server = None
