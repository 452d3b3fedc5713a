"""The options every command shares, the settings they make, and the store they find."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from mailflow.config import Settings, load_settings


class CliError(Exception):
    """A problem the user can act on, said in one line (no traceback); exits ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def add_common(parser: argparse.ArgumentParser) -> None:
    """Where the configuration is, and what the command line overrides of it."""
    parser.add_argument("--config", "-c", metavar="FILE",
                        help="YAML configuration file (default: embedded defaults, their "
                             "var/ and rules/ those of the checkout mailflow runs from)")
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to accept SMTP on")
    parser.add_argument("--next-hop", metavar="URL",
                        help="smtp://HOST:PORT or maildir:PATH (default: Maildir in state dir)")
    parser.add_argument("--state-dir", metavar="DIR", help="where the store and Maildir live")
    parser.add_argument("--store", metavar="URL", help="store URL (default: SQLite in state dir)")
    parser.add_argument("--rules", metavar="DIR", help="rules folder")
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


def add_shadow(parser: argparse.ArgumentParser) -> None:
    """For the commands that read cases: shadow mode's store instead of the live one."""
    parser.add_argument("--shadow", action="store_true",
                        help="read shadow mode's store (what mailflow would have done)")


def settings_from(args: argparse.Namespace) -> Settings:
    """The configuration file's settings with the command line's overrides; with
    ``--shadow``, shadow mode's store in place of the live one."""
    settings = load_settings(args.config, overrides_from(args))
    if getattr(args, "shadow", False):
        return settings.model_copy(update={"store": settings.shadow_store_url})
    return settings


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///PATH[?options]`` store URL; None for other stores."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(unquote(url.removeprefix("sqlite:///").partition("?")[0]))


def existing_store_url(settings: Settings) -> str:
    """The store's URL once it is known to exist: looking at cases or agents must
    never create an empty store in the wrong place and show nothing from it."""
    path = sqlite_path(settings.store_url)
    if path is not None and not path.is_file():
        raise CliError(f"no store at {path.absolute()} (started with `make run`? "
                       "otherwise give --config or --state-dir)")
    return settings.store_url
