#!/usr/bin/env python3
"""Throughput benchmark: smtp-source -> {smtp-sink | bare relay | mailflow} -> smtp-sink.

Three runs of Postfix's ``smtp-source`` against the same ``smtp-sink``:

* ``direct``   straight into the sink (the ceiling of the load generator on this box);
* ``bare``     through a minimal aiosmtpd server that relays each message with a small
               pool of persistent aiosmtplib connections (the floor cost of the stack);
* ``mailflow`` through ``mailflow serve`` with the default chain, once per store of
  ``--stores``: ``sqlite`` (the default, state in a temporary folder), ``postgresql``
  (one daemon on a fresh database of a private PostgreSQL, tests/pg.py) and
  ``postgresql-3`` (three daemons, node ids mx1..mx3, sharing one fresh database and
  the sink, each fed a third of the messages by its own concurrent smtp-source).

Everything listens on 127.0.0.1 only, every loop is bounded, and every process this
script starts is stopped before it exits.  See bench/README.md.

This file is the command line and the report; the runs are in runs.py, which uses
procs.py (process helpers), bare_relay.py and private_pg.py (the private PostgreSQL).

Exit status: 0 all good; 1 smtp-source reported an error (or timed out);
2 the sink received fewer messages than smtp-source sent; 3 set-up failed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

# its sibling modules, also when it is not run as a script (python -m, runpy)
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import REPO, SetupError, find_tool, stop_process, tail_text
from runs import STORES, Bench, Result

EXIT_SOURCE_ERROR = 1
EXIT_COUNT_MISMATCH = 2
EXIT_SETUP = 3


def fmt(value: float | None, width: int, decimals: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{decimals}f}"


def print_report(bench: Bench, results: list[Result], argv: Sequence[str]) -> None:
    args = bench.args
    mode = "a new connection per message"
    if args.reuse_connections:
        mode = "one connection per session (-d)"
    print()
    print(
        f"mailflow throughput: {args.messages} messages x {args.size} bytes, "
        f"{args.sessions} parallel sessions, {mode}"
    )
    print(
        f"host: {platform.node()} {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs, python {platform.python_version()}"
    )
    print()
    header = (
        f"{'path':34} {'seconds':>8} {'msg/s':>9} {'srv CPU s':>10} "
        f"{'CPU ms/msg':>11} {'sink got':>9}"
    )
    print(header)
    print("-" * len(header))
    for res in results:
        per_msg = (
            None
            if res.server_cpu is None or not res.messages
            else 1000 * res.server_cpu / res.messages
        )
        got = str(res.sink_received) if res.seconds is not None else "-"
        print(
            f"{res.name:34} {fmt(res.seconds, 8, 2)} {fmt(res.rate, 9, 1)} "
            f"{fmt(res.server_cpu, 10, 2)} {fmt(per_msg, 11, 2)} {got:>9}"
        )
    print("(srv CPU = user+sys CPU of the server under test: the sink for 'direct')")
    if any(res.tag.startswith("mailflow pg") for res in results):
        print("(for 'mailflow pg': all its daemons; PostgreSQL's own CPU is given below)")
    rates = {res.label: res.rate for res in results}
    mailflow = rates.get("mailflow")
    print()
    for other in ("direct", "bare"):
        base = rates.get(other)
        ratio = None if mailflow is None or not base else mailflow / base
        print(f"ratio mailflow/{other}: {fmt(ratio, 0, 3)}")
    for name, _ in list(STORES.values())[1:]:
        if name in rates:
            rate = rates[name]
            ratio = None if rate is None or not mailflow else rate / mailflow
            print(f"ratio {name.removeprefix('mailflow ')}/sqlite: {fmt(ratio, 0, 3)}")
    print()
    for res in results:
        for line in res.extra:
            print(line)
        if res.note:
            print(f"{res.label}: {res.note}")
        if res.source_status not in (None, 0):
            print(f"{res.label}: smtp-source exit {res.source_status}: {res.source_error}")
    print("command: " + shlex.join([sys.executable, sys.argv[0], *argv]))


def store_list(value: str) -> list[str]:
    """``--stores sqlite,postgresql``: known names, each once, in the order given."""
    names = list(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    unknown = [name for name in names if name not in STORES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{','.join(unknown) or repr(value)}: choose from {', '.join(STORES)}"
        )
    return names


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=5000, help="messages per run (-m)")
    parser.add_argument("--sessions", type=int, default=20, help="parallel sessions (-s)")
    parser.add_argument("--size", type=int, default=10240, help="payload bytes (-l)")
    parser.add_argument("--workers", type=int, default=None, help="passed to mailflow serve")
    parser.add_argument(
        "--reuse-connections",
        action="store_true",
        help="smtp-source -d: keep each session's connection for all its messages "
        "(default: a new connection per message, as smtp-source does)",
    )
    parser.add_argument("--pool", type=int, default=8, help="bare relay: aiosmtplib connections")
    parser.add_argument(
        "--mailflow", default=str(REPO / ".venv" / "bin" / "mailflow"), help="mailflow executable"
    )
    parser.add_argument(
        "--only", choices=("direct", "bare", "mailflow"), action="append", help="run only these"
    )
    parser.add_argument(
        "--stores",
        type=store_list,
        default=["sqlite"],
        help="the stores of the mailflow runs, comma-separated, of "
        f"{','.join(STORES)} (postgresql-3: three daemons on one database; default sqlite)",
    )
    parser.add_argument("--timeout", type=float, default=600, help="limit for one smtp-source run")
    parser.add_argument("--startup-timeout", type=float, default=30)
    parser.add_argument("--stop-timeout", type=float, default=20, help="SIGTERM grace, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    args = parser.parse_args(argv)
    for name in ("messages", "sessions", "size", "pool"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mailflow-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"work directory kept: {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    phases = args.only or ["direct", "bare", "mailflow"]
    results: list[Result] = []
    with workdir(args.keep) as work:
        try:
            bench = Bench(args, work, find_tool("smtp-source"), find_tool("smtp-sink"))
        except SetupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_SETUP
        try:
            sink = bench.start_sink()
            if "direct" in phases:
                results.append(bench.phase_direct(sink))
            if "bare" in phases:
                results.append(bench.phase_bare())
            if "mailflow" in phases:
                for store in args.stores:
                    results.append(bench.phase_mailflow(store))
        except SetupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            for log in sorted(work.glob("*.log")):
                print(f"--- {log.name}\n{tail_text(log)}", file=sys.stderr)
            print_report(bench, results, argv)
            return EXIT_SETUP
        finally:
            for proc in reversed(bench.procs):
                stop_process(proc, grace=args.stop_timeout)
            bench.postgres.remove()
        print_report(bench, results, argv)
    if any(res.source_status not in (None, 0) for res in results):
        return EXIT_SOURCE_ERROR
    if any(res.seconds is not None and res.sink_received < res.messages for res in results):
        print("error: the sink received fewer messages than smtp-source sent", file=sys.stderr)
        return EXIT_COUNT_MISMATCH
    return 0


if __name__ == "__main__":
    sys.exit(main())
