"""``mailflow serve``: run the SMTP daemon."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mailflow.cli.options import overrides_from, settings_from
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
    if settings.workers > 1:
        share_metrics(settings.state_path / "metrics")
    from mailflow.daemon import run as run_daemon

    return run_daemon(args.config, overrides_from(args))
