"""The options every command shares, and the settings they make."""

from __future__ import annotations

import argparse
from typing import Any

from mailflow.config import Settings, load_settings


def add_common(parser: argparse.ArgumentParser) -> None:
    """Where the configuration is, and what the command line overrides of it."""
    parser.add_argument("--config", "-c", metavar="FILE",
                        help="YAML configuration file (default: embedded defaults)")
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to accept SMTP on")
    parser.add_argument("--next-hop", metavar="URL",
                        help="smtp://HOST:PORT or maildir:PATH (default: Maildir in state dir)")
    parser.add_argument("--state-dir", metavar="DIR", help="where the store and Maildir live")
    parser.add_argument("--store", metavar="URL", help="store URL (default: SQLite in state dir)")
    parser.add_argument("--rules", metavar="DIR", help="rules folder (default: ./rules)")
    parser.add_argument("--metrics", metavar="HOST:PORT",
                        help="serve /metrics and /healthz here")
    parser.add_argument("--workers", type=int, metavar="N", help="processes sharing the socket")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """Command-line options that replace what the configuration file says."""
    return {
        "listen": args.listen, "next_hop": args.next_hop, "state_dir": args.state_dir,
        "store": args.store, "rules": args.rules, "metrics": args.metrics,
        "workers": args.workers, "log_level": args.log_level,
    }


def settings_from(args: argparse.Namespace) -> Settings:
    """The configuration file's settings with the command line's overrides."""
    return load_settings(args.config, overrides_from(args))
