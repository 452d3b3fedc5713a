"""Plugins a SIGHUP reload adds or removes get their startup and shutdown hooks, and
SMTP hooks receive their plugin's own validated rules section."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, Daemon

pytestmark = pytest.mark.slow  # starts the daemon: `pytest -m 'not slow'` leaves it out

LIFECYCLE_DIR = REPO / "tests" / "fixtures" / "lifecycle_plugin"


def wait_lines(path: Path, expected: list[str], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(encoding="utf-8").split("\n")[:-1] == expected:
            return
        time.sleep(0.05)
    found = path.read_text(encoding="utf-8") if path.exists() else "(no file)"
    raise AssertionError(f"expected {expected} in {path}, found {found!r}")


def mail_from(d: Daemon, sender: str) -> int:
    with d.smtp() as client:
        code, _ = client.mail(sender)
        return int(code)


def test_reload_starts_an_added_plugin_and_stops_a_removed_one(daemon_factory: Any,
                                                               tmp_path: Path) -> None:
    journal = tmp_path / "journal.txt"
    d: Daemon = daemon_factory()
    d.wait_for_log('"event": "ready"')
    assert mail_from(d, "spam@bad.test") == 250  # no plugin yet
    (d.rules / "lifecycle.yaml").write_text(
        f"lifecycle:\n  journal: {journal}\n  refuse: [spam@bad.test]\n", encoding="utf-8")
    d.config["plugin_dirs"] = [str(LIFECYCLE_DIR)]
    d.write_config()
    d.signal(signal.SIGHUP)
    d.wait_for_log('"event": "reloaded"')
    wait_lines(journal, ["startup 0"])
    assert mail_from(d, "spam@bad.test") == 550  # the hook got its section as options
    assert mail_from(d, "claire@client.test") == 250
    del d.config["plugin_dirs"]
    (d.rules / "lifecycle.yaml").unlink()
    d.write_config()
    d.signal(signal.SIGHUP)
    wait_lines(journal, ["startup 0", "shutdown 0"])
    assert mail_from(d, "spam@bad.test") == 250
    assert d.stop() == 0
    wait_lines(journal, ["startup 0", "shutdown 0"])  # not stopped twice
