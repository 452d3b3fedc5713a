"""A real, private PostgreSQL for the tests: initdb in a temporary folder, one free
loopback port, started and stopped by the test session.

Debian's ``postgresql`` package (installed by ``make test``, its own cluster never
started) provides the binaries; the server runs as the ``postgres`` user, since it
refuses to run as root. Its folder is a ``mkdtemp`` of its own (pytest's are 0700 and
root's), removed at :meth:`PgServer.stop`. Each test that wants a clean database
takes one from :meth:`PgServer.database` (``CREATE DATABASE``, milliseconds).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from conftest import free_port, wait_for_port

USER = "postgres"


def bindir() -> Path | None:
    """The newest installed PostgreSQL's binaries, or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    return found[-1].parent if found else None


def unavailable() -> str | None:
    """Why no private PostgreSQL can run here, or None."""
    if bindir() is None:
        return "PostgreSQL is not installed (make test installs Debian's postgresql)"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return "the postgres user is missing"
    if os.geteuid() != 0:
        return "the tests start PostgreSQL as the postgres user: they must run as root"
    return None


class PgServer:
    """``initdb`` + ``pg_ctl start`` on 127.0.0.1:``port``; trust authentication, loopback
    only, fsync on (the store's promise is durability: the tests keep it real)."""

    def __init__(self) -> None:
        found = bindir()
        assert found is not None, unavailable()
        self.bin = found
        self.root = Path(tempfile.mkdtemp(prefix="mailflow-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.running = False

    def _as_postgres(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        entry = pwd.getpwnam(USER)

        def demote() -> None:
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)

        done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                              preexec_fn=demote, cwd=self.root,
                              env={"PATH": f"{self.bin}:/usr/bin:/bin", "LANG": "C.UTF-8"})
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited with {done.returncode}:\n"
                               f"{done.stdout}{done.stderr}{self.log_tail()}")
        return done

    def start(self) -> PgServer:
        entry = pwd.getpwnam(USER)
        os.chown(self.root, entry.pw_uid, entry.pw_gid)
        if not self.data.exists():
            self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-U", USER,
                              "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
        for attempt in range(3):
            options = (f"-c listen_addresses=127.0.0.1 -c port={self.port}"
                       f" -c unix_socket_directories={self.root} -c max_connections=200"
                       " -c shared_buffers=32MB")
            try:
                self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                                  str(self.root / "server.log"), "-o", options, "-w", "-t",
                                  "30", "start")
                break
            except RuntimeError:
                if attempt == 2 or "already in use" not in self.log_tail():
                    raise
                self.port = free_port()
        self.running = True
        wait_for_port(self.port)
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: as a crash would); the data folder stays."""
        if self.running:
            self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode,
                              "-w", "stop")
            self.running = False

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement with psql, as the superuser; its output."""
        done = self._as_postgres(str(self.bin / "psql"), "-h", "127.0.0.1", "-p",
                                 str(self.port), "-U", USER, "-d", database, "-At", "-c",
                                 statement)
        return done.stdout.strip()

    def database(self) -> str:
        """A new, empty database: its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.sql(f"CREATE DATABASE {name}")
        return self.url(name)

    def log_tail(self, lines: int = 30) -> str:
        log = self.root / "server.log"
        if not log.exists():
            return ""
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        return "\n--- PostgreSQL log (end) ---\n" + "\n".join(tail)
