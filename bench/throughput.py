#!/usr/bin/env python3
"""Throughput benchmark: a load client -> {smtp-sink | bare relay | mailflow} -> smtp-sink.

Three paths, each fed the same messages and ending in the same ``smtp-sink``:

* ``direct``   straight into the sink (the ceiling of the load generator on this box);
* ``bare``     through a minimal aiosmtpd server that relays each message with a small
               pool of persistent aiosmtplib connections (the floor cost of the stack);
* ``mailflow`` through ``mailflow serve`` with the default chain, once per store of
  ``--stores``: ``sqlite`` (the default, state in a temporary folder), ``postgresql``
  (one daemon on a fresh database of a private PostgreSQL, tests/pg.py) and
  ``postgresql-3`` (three daemons, node ids mx1..mx3, sharing one fresh database and
  the sink, each fed a third of the messages).

Two modes (``--mode``): ``distinct`` (the default) sends distinct customer mail made
by bench/mailgen.py (its own sender, Message-ID, subject and text each; follow-ups,
copies, urgent and automatic mail in realistic shares) with bench/load.py, which
times each reply; ``repeated`` runs Postfix's ``smtp-source``: one message repeated
from one sender (after the first, every message is a copy: no case, no ack).

The mailflow runs use a copy of the shipped rules whose acknowledgement limits are
raised, and a run's clock stops only when the sink has every accepted message and
every mail the daemon queued in its outbox (acknowledgements, escalations).

Everything listens on 127.0.0.1 only, every loop is bounded, and every process this
script starts is stopped before it exits.  See bench/README.md.

This file is the command line and the report; the runs are in runs.py, which uses
procs.py (process helpers), settle.py (the end of a run), bare_relay.py,
private_pg.py (the private PostgreSQL), mailgen.py and load.py (distinct mode).

Exit status: 0 all good; 1 a message was not accepted (distinct mode) or smtp-source
reported an error (or timed out); 2 the sink received fewer messages than expected
(accepted plus the outbox rows sent); 3 set-up failed.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

# its sibling modules, also when it is not run as a script (python -m, runpy)
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import mailgen
from procs import REPO, SetupError, find_tool, stop_process, tail_text, workdir
from runs import STORES, Bench, Result

EXIT_SOURCE_ERROR = 1
EXIT_COUNT_MISMATCH = 2
EXIT_SETUP = 3


def fmt(value: float | None, width: int, decimals: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{decimals}f}"


def print_report(bench: Bench, results: list[Result], argv: Sequence[str]) -> None:
    args = bench.args
    if args.mode == "distinct":
        per = args.per_connection or (1000 if args.reuse_connections else 1)
        feed = (f"distinct customer mail (mailgen seed {args.seed}), bench/load.py, "
                + ("a new connection per message" if per == 1 else f"{per} messages a connection"))
    else:
        feed = "one message repeated from one sender (smtp-source), " + (
            "one connection per session (-d)" if args.reuse_connections
            else "a new connection per message")
    print()
    print(f"mailflow throughput, mode {args.mode}: {args.messages} messages x {args.size} bytes,"
          f" {args.sessions} parallel sessions, {feed}")
    if bench.traffic:
        print(f"traffic: {mailgen.summary([mail.label for mail in bench.traffic])}")
    print(
        f"host: {platform.node()} {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs, python {platform.python_version()}"
    )
    print()
    header = (
        f"{'path':30} {'seconds':>8} {'msg/s':>8} {'srv CPU s':>9} {'CPU ms/msg':>10} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'2xx':>6} {'4xx':>4} {'5xx':>4} "
        f"{'acks exp':>8} {'acks queued':>11} {'sink got':>8}"
    )
    print(header)
    print("-" * len(header))
    for res in results:
        per_msg = (
            None
            if res.server_cpu is None or not res.messages
            else 1000 * res.server_cpu / res.messages
        )
        accepted = res.accepted
        if accepted is None and res.source_status == 0:
            accepted = res.messages  # smtp-source exits 0 only when every message got 2xx
        acks = res.outbox.queued("ack") if res.outbox is not None else None
        print(
            f"{res.name:30} {fmt(res.seconds, 8, 2)} {fmt(res.rate, 8, 1)} "
            f"{fmt(res.server_cpu, 9, 2)} {fmt(per_msg, 10, 2)} "
            f"{fmt(ms(res.p50), 7, 1)} {fmt(ms(res.p99), 7, 1)} {num(accepted, 6)} "
            f"{num(res.tempfailed, 4)} {num(res.refused, 4)} {num(res.acks_expected, 8)} "
            f"{num(acks, 11)} {num(res.sink_received if res.seconds is not None else None, 8)}"
        )
    print("(seconds: from the first message sent until the sink had every accepted message and"
          " every mail the daemon queued)")
    print("(srv CPU = user+sys CPU of the server under test: the sink for 'direct'; p50/p99:"
          " end of DATA to its reply)")
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
        if res.outbox is not None:
            print(outbox_line(res))
        for line in res.extra:
            print(line)
        if res.note:
            print(f"{res.label}: {res.note}")
        if res.source_status not in (None, 0):
            what = "load" if args.mode == "distinct" else "smtp-source exit"
            print(f"{res.label}: {what} {res.source_status}: {res.source_error}")
    print("command: " + shlex.join([sys.executable, sys.argv[0], *argv]))


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


def num(value: int | None, width: int) -> str:
    return f"{'-' if value is None else value:>{width}}"


def outbox_line(res: Result) -> str:
    """What the daemon queued, by kind and state, against what the labels expect."""
    assert res.outbox is not None
    kinds = sorted({kind for kind, _ in res.outbox.rows})
    queued = ", ".join(f"{kind} {res.outbox.queued(kind)}" for kind in kinds) or "nothing"
    failed = res.outbox.states("failed")
    expected = ""
    if res.escalations_expected is not None:
        expected = (f"; expected: ack {res.acks_expected}, escalation"
                    f" {res.escalations_expected}")
    return (f"{res.label} outbox: {queued}{expected}; sent {res.outbox.sent}, failed {failed},"
            f" still to send {res.outbox.pending}; the sink should count"
            f" {res.sink_expected} (accepted + sent), counted {res.sink_received}")


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
    parser.add_argument(
        "--mode",
        choices=("distinct", "repeated"),
        default="distinct",
        help="distinct: distinct customer mail (mailgen.py) sent by load.py (default); "
        "repeated: one message repeated from one sender (smtp-source)",
    )
    parser.add_argument("--messages", type=int, default=5000, help="messages per run (-m)")
    parser.add_argument("--sessions", type=int, default=20, help="parallel sessions (-s)")
    parser.add_argument(
        "--size",
        type=int,
        default=10240,
        help="bytes a message (distinct: the whole message; repeated: smtp-source -l)",
    )
    parser.add_argument("--seed", type=int, default=1, help="distinct: mailgen's seed")
    parser.add_argument(
        "--share",
        type=mailgen.share,
        action="append",
        default=[],
        help=f"distinct: KIND=FRACTION, repeatable (default {mailgen.SHARES})",
    )
    parser.add_argument("--workers", type=int, default=None, help="passed to mailflow serve")
    parser.add_argument(
        "--reuse-connections",
        action="store_true",
        help="keep each session's connection for its messages: smtp-source -d; distinct: "
        "up to 1000 messages a connection (default: a new connection per message)",
    )
    parser.add_argument(
        "--per-connection", type=int, default=None, help="distinct: messages a connection"
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
    parser.add_argument("--timeout", type=float, default=600, help="limit for sending a run")
    parser.add_argument(
        "--message-timeout", type=float, default=60, help="distinct: limit for one message"
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=120,
        help="limit for the sink to get the rest (the daemon's outbox) once all is sent",
    )
    parser.add_argument("--startup-timeout", type=float, default=30)
    parser.add_argument("--stop-timeout", type=float, default=20, help="SIGTERM grace, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    args = parser.parse_args(argv)
    for name in ("messages", "sessions", "size", "pool", "per_connection"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    phases = args.only or ["direct", "bare", "mailflow"]
    results: list[Result] = []
    with workdir("mailflow-bench-", args.keep) as work:
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
    if any(res.seconds is not None and res.sink_received < res.sink_expected for res in results):
        print("error: the sink received fewer messages than expected", file=sys.stderr)
        return EXIT_COUNT_MISMATCH
    return 0


if __name__ == "__main__":
    sys.exit(main())
