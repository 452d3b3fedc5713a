"""``mailflow serve``: run the SMTP daemon."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mailflow.cli.options import CliError, overrides_from, settings_from
from mailflow.clock import TEST_CLOCK_REFUSED, TestClockRefused
from mailflow.logs import configure


def share_metrics(directory: Path) -> None:
    """Pre-forked workers share metrics through prometheus_client's multiprocess mode.

    Must run before prometheus_client is imported: it picks its value store
    at import time (hence here, before the daemon module is).
    """
    assert "prometheus_client" not in sys.modules, "metrics imported too early"
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    configure(settings.log_level)  # the file's log_level, or --log-level
    allow_test_clock = bool(getattr(args, "allow_test_clock", False))
    if settings.test_clock is not None and not allow_test_clock:
        raise CliError(TEST_CLOCK_REFUSED, code=2)  # before anything binds or forks
    if settings.workers > 1:
        share_metrics(settings.state_path / "metrics")
    from mailflow.launch import run as run_daemon

    try:
        return run_daemon(args.config, overrides_from(args), allow_test_clock=allow_test_clock)
    except TestClockRefused as exc:  # the file is missing or holds no time
        raise CliError(str(exc), code=2) from None
