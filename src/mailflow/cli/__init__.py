"""``mailflow serve | check | try | cases | agents | timers | report | migrate | plugins
| answers``.

Each command is one module of this package with a ``run(args) -> int``,
imported only when it runs: ``serve`` must choose how metrics are stored
before anything imports prometheus_client. The enabled plugins' commands
(``mailflow_commands``) join them. Options may come before or after a command's
positional arguments (``mailflow cases show --config FILE N`` and ``mailflow
cases show N --config FILE`` alike).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from mailflow import __version__
from mailflow.cli.options import CliError, add_common, add_shadow
from mailflow.config import ConfigError
from mailflow.logs import configure
from mailflow.store import StoreUnavailable

if TYPE_CHECKING:  # `serve` must import prometheus_client itself, after choosing its mode
    from mailflow.host import Command

DESCRIPTION = ("The mailflow daemon and its tools: serve, check, try, cases, agents,"
               " timers, report, migrate, replay, plugins, answers, version (and the enabled"
               " plugins' commands). 'mailflow COMMAND --help' says more.")
#: the module of each command, in this package
COMMANDS = {"serve": "serve", "check": "check", "try": "try_message", "cases": "cases",
            "agents": "agents", "timers": "timers", "report": "report", "migrate": "migrate",
            "plugins": "plugins_list", "replay": "replay", "answers": "answers"}
#: commands whose output is the answer: their logs stay quiet unless asked
QUIET = frozenset({"check", "try", "cases", "agents", "timers", "report", "migrate",
                   "plugins", "replay", "answers"})
#: the exit status of a process killed by SIGPIPE, as a shell reports it
BROKEN_PIPE = 128 + 13


def version() -> str:
    """The installed distribution's version (the source's when not installed)."""
    try:
        return importlib.metadata.version("mailflow")
    except importlib.metadata.PackageNotFoundError:
        return __version__


def _add_try(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    trial = sub.add_parser("try", help="dry-run the chain on one message; changes nothing")
    add_common(trial)
    trial.add_argument("message", metavar="MESSAGE.eml", help="the message file ('-' for stdin)")
    trial.add_argument("--mail-from", default=None, help="envelope sender (default: From:)")
    trial.add_argument("--rcpt-to", action="append", default=None,
                       help="envelope recipient (repeatable; default: To:)")
    trial.add_argument("--peer", default="192.0.2.1",
                       help="client IP the message pretends to come from")
    trial.add_argument("--submission", action="store_true",
                       help="as if received on the submission listener (agents' mail)")
    trial.add_argument("--json", action="store_true", help="machine-readable output")


def _add_cases(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cases = sub.add_parser("cases", help="list, show, close or reopen cases")
    add_common(cases)
    add_shadow(cases)
    cases.add_argument("action", nargs="?", default="list",
                       choices=["list", "show", "close", "reopen"], help="(default: list)")
    cases.add_argument("number", nargs="?", help="case number (show, close, reopen)")
    cases.add_argument("--status", choices=["open", "closed"], help="list only these")
    cases.add_argument("--limit", type=int, default=50)
    cases.add_argument("--json", action="store_true", help="machine-readable output")


def _add_agents(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agents = sub.add_parser("agents", help="set who is present to take mail")
    add_common(agents)
    agents.add_argument("action", nargs="?", default="list", choices=["list", "set"],
                        help="(default: list)")
    agents.add_argument("name", nargs="?", metavar="NAME|ADDRESS",
                        help="agent, by name or full address (set)")
    agents.add_argument("status", nargs="?", choices=["away", "present"], help="(set)")


def _add_timers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    timers = sub.add_parser("timers", help="list or cancel the follow-ups waiting to fire")
    add_common(timers)
    add_shadow(timers)
    timers.add_argument("action", nargs="?", default="list", choices=["list", "cancel"],
                        help="(default: list)")
    timers.add_argument("id", nargs="?", type=int, help="timer id (cancel)")
    timers.add_argument("--case", metavar="N", help="only this case's timers")
    timers.add_argument("--kind", metavar="K", help="only timers of this kind")
    timers.add_argument("--all", action="store_true",
                        help="list done, cancelled and failed timers too")
    timers.add_argument("--json", action="store_true", help="machine-readable output")


def _add_replay(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay = sub.add_parser("replay", help="an archive through the daemon, as live, on a"
                            " scratch store: what it would have done (nothing is sent)")
    add_common(replay)
    replay.add_argument("archives", nargs="+", metavar="ARCHIVE",
                        help="an mbox, a Maildir or a folder of .eml files")
    replay.add_argument("--sent", action="append", default=[], metavar="ARCHIVE",
                        help="the agents' Sent items (repeatable): replies, merged by time")
    replay.add_argument("--output", metavar="FILE.json|FILE.csv",
                        help="one row per message: what the daemon would have done")
    replay.add_argument("--html", metavar="FILE", help="the report page of the period")
    replay.add_argument("--against", metavar="RULES",
                        help="a second rules folder: list what it decides differently")
    replay.add_argument("--after", default=None, metavar="DURATION",
                        help="let the timers run on this long after the last message"
                             " (e.g. 2d: the last messages' deadlines fall due)")


def _add_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = sub.add_parser(
        "report", help="the statistics of the last days: a summary, or an HTML page",
        description="Volumes per day, first-response times, the share answered within the"
                    " promised time, SLA breaches by team, agents and escalations, read from"
                    " the store (read-only). Only aggregate figures and configured agent"
                    " names: no customer address, no subject.")
    add_common(report)
    add_shadow(report)
    report.add_argument("--since", default="7d", metavar="DURATION",
                        help="how far back: 7d, 24h, 90m (whole days, from the day it falls"
                             " on; default 7d)")
    report.add_argument("--html", metavar="FILE",
                        help="write the page with its charts to FILE ('-': stdout); it needs"
                             " no network (the chart library is inside)")


def build_parser(plugin_commands: dict[str, tuple[str, Command]] | None = None,
                 ) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailflow", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"mailflow {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the SMTP daemon")
    add_common(serve)
    serve.add_argument("--allow-test-clock", action="store_true",
                       help="let the test_clock setting replace the system's time (tests only)")
    add_common(sub.add_parser("check", help="validate configuration, rules and plugins"))
    _add_try(sub)
    _add_cases(sub)
    _add_agents(sub)
    _add_timers(sub)
    _add_report(sub)
    migrate = sub.add_parser("migrate", help="bring the store's tables up to this version")
    add_common(migrate)
    migrate.add_argument("--check", action="store_true",
                         help="change nothing; exit 1 if the store is behind")
    _add_replay(sub)
    from mailflow.cli.answers import add_parser as add_answers

    add_common(add_answers(sub))
    plugins = sub.add_parser("plugins", help="the installed plugins: enabled or not, their"
                             " stages, sections, tables, timers, commands and routes")
    add_common(plugins)
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("version", help="print the version")
    if plugin_commands:
        from mailflow.cli.plugin_commands import add_parsers

        add_parsers(sub, plugin_commands)
    return parser


def parse(argv: list[str], plugin_commands: dict[str, tuple[str, Command]] | None = None,
          ) -> argparse.Namespace:
    """The command line, options and positional arguments in any order after the command
    (argparse's intermixed parsing, which its subcommands do not get by themselves)."""
    parser = build_parser(plugin_commands)
    args, rest = parser.parse_known_args(argv)
    if not rest:
        return args
    subparsers = next(a for a in parser._actions
                      if isinstance(a, argparse._SubParsersAction))
    command: argparse.ArgumentParser = subparsers.choices[args.command]
    found: argparse.Namespace = command.parse_intermixed_args(
        argv[argv.index(args.command) + 1:])
    found.command = args.command
    return found


def _run(args: argparse.Namespace,
         plugin_commands: dict[str, tuple[str, Command]] | None = None) -> int:
    """Import the command's module now, and run it."""
    if args.command not in COMMANDS:
        from mailflow.cli.plugin_commands import run as plugin_run

        plugin, command = (plugin_commands or {})[args.command]
        return plugin_run(args, plugin, command)
    module = importlib.import_module(f"mailflow.cli.{COMMANDS[args.command]}")
    run: Callable[[argparse.Namespace], int] = module.run
    return run(args)


def main(argv: list[str] | None = None) -> int:
    """The ``mailflow`` command; returns the exit status.

    A reader that stops early (``mailflow cases list | head``) ends the command
    quietly, as it would end ``cat``: no traceback, exit status 141.
    """
    try:
        try:
            return _main(argv)
        finally:  # argparse's --help and --version too (SystemExit)
            sys.stdout.flush()  # the last buffered lines fail here, not at interpreter exit
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE


def _wants_plugins(argv: list[str]) -> bool:
    """A plugin's command, or the help that lists them: the configuration's plugins are
    loaded to know them (a built-in command never waits for that)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first is None or first not in {*COMMANDS, "version"}


def _silence_stdout() -> None:
    """Point stdout at /dev/null: Python's final flush would otherwise fail again."""
    with contextlib.suppress(OSError, ValueError):  # no file descriptor (captured output)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    plugin_commands = {}
    if _wants_plugins(argv):
        from mailflow.cli.plugin_commands import enabled_commands

        plugin_commands = enabled_commands(argv, {*COMMANDS, "version"})
    args = parse(argv, plugin_commands)
    if args.command == "version":
        print(f"mailflow {version()}")
        return 0
    configure(getattr(args, "log_level", None)
              or ("warning" if args.command in QUIET else "info"))
    try:
        return _run(args, plugin_commands)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"mailflow: {len(exc.problems)} configuration error(s)", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"mailflow {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except StoreUnavailable as exc:
        print(f"mailflow {args.command}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise  # an OSError, but not one to report: see main
    except OSError as exc:
        print(f"mailflow: {exc}", file=sys.stderr)
        return 1
