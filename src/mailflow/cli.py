"""``mailflow serve | check | try | cases | agents | version``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from mailflow import __version__
from mailflow.config import ConfigError, Settings, load_settings
from mailflow.logs import configure


def _common(parser: argparse.ArgumentParser) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the SMTP daemon")
    _common(serve)
    check = sub.add_parser("check", help="validate configuration, rules and plugins")
    _common(check)
    trial = sub.add_parser("try", help="dry-run the chain on one message; changes nothing")
    _common(trial)
    trial.add_argument("message", metavar="MESSAGE.eml", help="the message file ('-' for stdin)")
    trial.add_argument("--mail-from", default=None, help="envelope sender (default: From:)")
    trial.add_argument("--rcpt-to", action="append", default=None,
                       help="envelope recipient (repeatable; default: To:)")
    trial.add_argument("--peer", default="192.0.2.1",
                       help="client IP the message pretends to come from")
    trial.add_argument("--json", action="store_true", help="machine-readable output")
    cases = sub.add_parser("cases", help="list, show, close or reopen cases")
    _common(cases)
    cases.add_argument("action", choices=["list", "show", "close", "reopen"])
    cases.add_argument("number", nargs="?", help="case number (show, close, reopen)")
    cases.add_argument("--status", choices=["open", "closed"], help="list only these")
    cases.add_argument("--limit", type=int, default=50)
    cases.add_argument("--json", action="store_true", help="machine-readable output")
    agents = sub.add_parser("agents", help="set who is present to take mail")
    _common(agents)
    agents.add_argument("action", choices=["list", "set"])
    agents.add_argument("name", nargs="?", help="agent name (set)")
    agents.add_argument("status", nargs="?", choices=["away", "present"], help="(set)")
    sub.add_parser("version", help="print the version")
    return parser


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """Command-line options that replace what the configuration file says."""
    return {
        "listen": args.listen, "next_hop": args.next_hop, "state_dir": args.state_dir,
        "store": args.store, "rules": args.rules, "metrics": args.metrics,
        "workers": args.workers, "log_level": args.log_level,
    }


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, overrides_from(args))


def cmd_check(args: argparse.Namespace) -> int:
    from mailflow.runtime import load_runtime

    settings = settings_from(args)
    runtime = load_runtime(settings)
    print(f"configuration OK: {settings.source}")
    print(f"rules OK: {Path(settings.rules).resolve()} "
          f"({len(runtime.rules.local_domains)} local domain(s))")
    print(f"chain: {', '.join(runtime.chain.names) or '(empty)'}")
    plugins = sorted(name for name, _ in runtime.pm.list_name_plugin())
    print(f"plugins: {', '.join(plugins)}")
    return 0


def _share_metrics(directory: Path) -> None:
    """Pre-forked workers share metrics through prometheus_client's multiprocess mode.

    Must run before prometheus_client is imported: it picks its value store
    at import time (hence here, before the daemon module is).
    """
    assert "prometheus_client" not in sys.modules, "metrics imported too early"
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    configure(settings.log_level)  # the file's log_level, or --log-level
    if settings.workers > 1:
        _share_metrics(settings.state_path / "metrics")
    from mailflow.daemon import run

    return run(args.config, overrides_from(args))


def cmd_try(args: argparse.Namespace) -> int:
    from mailflow.trial import run_trial

    settings = settings_from(args)
    raw = sys.stdin.buffer.read() if args.message == "-" else Path(args.message).read_bytes()
    report = asyncio.run(run_trial(settings, raw, mail_from=args.mail_from,
                                   rcpt_to=args.rcpt_to, peer=args.peer))
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    else:
        from mailflow.trial import format_report

        print(format_report(report))
    return 0


def cmd_cases(args: argparse.Namespace) -> int:
    from mailflow.casebook import run_cases

    return asyncio.run(run_cases(settings_from(args), args.action, args.number,
                                 status=args.status, limit=args.limit, as_json=args.json))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"mailflow {__version__}")
        return 0
    quiet = args.command in ("check", "try", "cases", "agents")  # their output is the answer
    configure(getattr(args, "log_level", None) or ("warning" if quiet else "info"))
    try:
        if args.command == "check":
            return cmd_check(args)
        if args.command == "try":
            return cmd_try(args)
        if args.command == "cases":
            return cmd_cases(args)
        if args.command == "agents":
            from mailflow.casebook import run_agents

            return asyncio.run(run_agents(settings_from(args), args.action, args.name,
                                          args.status))
        return cmd_serve(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"mailflow: {len(exc.problems)} configuration error(s)", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"mailflow: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
