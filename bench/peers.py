#!/usr/bin/env python3
"""``make bench``: mailflow against its peers, in one run, on loopback, under real traffic.

Every target (targets.py: the sink alone, a bare aiosmtpd+aiosmtplib relay, Haraka, mailflow
on SQLite with one worker and one per core, mailflow on PostgreSQL) is started once in
front of one ``smtp-sink`` and fed, cell after cell (cells.py: message size, concurrent
sessions, messages a connection), the same distinct customer mail (bench/mailgen.py) by
bench/load.py, which times each reply. A round's clock stops when the sink has every
accepted message and, for mailflow, every mail it wrote (its outbox empty: settle.py).
Each cell runs ``--rounds`` rounds, the targets taking turns within a round (so a drift
of the shared machine touches them all alike); the table keeps each target's best.

    .venv/bin/python bench/peers.py                # all cells and targets, best of 3
    .venv/bin/python bench/peers.py --quick        # 1 round, fewer messages: a smoke run
    .venv/bin/python bench/peers.py --cells 10k-s20 --targets sink,bare,mailflow
    .venv/bin/python bench/peers.py --cells 10k-s20 --targets mailflow --against main

The table is printed and written (markdown and JSON) under bench/results/. See
bench/README.md for what each column means. Exit status: 0; 1 a message was not
accepted or the sink missed something; 3 set-up failed.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import cells
import load
import peers_report
from memory import PeakPss
from procs import REPO, SetupError, cpu_seconds, find_tool, sink_messages, tail_text, workdir
from settle import settle
from targets import CORES, KEYS, Servers, Target

EXIT_MISSED = 1
EXIT_SETUP = 3


@dataclass
class Sample:
    """One round of one cell through one target."""

    target: str
    cell: str
    round: int
    messages: int
    accepted: int
    tempfailed: int
    refused: int
    seconds: float
    cpu: float | None  # the target's processes, user+system seconds
    p50: float | None  # end of DATA to the reply, seconds
    p99: float | None
    peak_mib: float  # PSS of the target's processes, the largest sum sampled
    sink_expected: int
    sink_got: int
    complete: bool
    load_cpu: float
    acks_expected: int
    acks_queued: int | None = None
    error: str = ""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ms(self) -> float | None:
        return None if self.cpu is None else 1000 * self.cpu / self.messages

    @property
    def ok(self) -> bool:
        return self.accepted == self.messages and self.complete


def measure(servers: Servers, target: Target, cell: cells.Cell, rnd: cells.Round,
            index: int, args: argparse.Namespace) -> Sample:
    """Send ``rnd`` to ``target`` and wait until the sink has it all: the whole timed, the
    target's CPU counted and its memory sampled meanwhile."""
    before_sink = sink_messages(servers.sink_counter)
    if target.outbox is not None:
        target.outbox.mark()
    before_cpu = cpu_seconds(target.roots())
    with PeakPss(target.roots) as memory:
        started = time.perf_counter()
        load_started = time.process_time()
        outcome = load.run(rnd.wire, [target.port], cell.sessions, cell.per_connection,
                           args.message_timeout, args.timeout)
        load_cpu = time.process_time() - load_started
        accepted = outcome.count(2)
        done = settle(servers.sink_counter, before_sink, accepted, target.outbox,
                      args.settle_timeout)
        seconds = done.at - started
    after_cpu = cpu_seconds(target.roots())
    cpu = None if before_cpu is None or after_cpu is None else after_cpu - before_cpu
    acks = done.outbox.queued("ack") if target.outbox is not None else None
    errors = "; ".join(f"{n} x {e}" for e, n in outcome.errors.most_common(3))
    if not done.complete:
        errors += (f"{'; ' if errors else ''}not settled after {args.settle_timeout:.0f}s:"
                   f" the sink got {done.sink} of {done.expected}")
    return Sample(target.key, cell.key, index, len(rnd.wire), accepted, outcome.count(4),
                  outcome.count(5), seconds, cpu, outcome.percentile(0.5),
                  outcome.percentile(0.99), memory.peak, done.expected, done.sink,
                  done.complete, load_cpu, rnd.acks_expected, acks, errors)


def run_cells(servers: Servers, keys: Sequence[str], chosen: Sequence[cells.Cell],
              args: argparse.Namespace) -> list[Sample]:
    """Every cell, round after round, each round through every target in turn (the first
    target changes from round to round); a line of progress for each."""
    samples: list[Sample] = []
    for number, cell in enumerate(chosen):
        made = time.perf_counter()
        rounds = cells.traffic(cell, args.rounds, args.seed + 1000 * number)
        print(f"[{cell.key}] {cell.title}: {args.rounds} x {cell.messages} messages made in"
              f" {time.perf_counter() - made:.1f}s", flush=True)
        for index, rnd in enumerate(rounds):
            order = [*keys[index % len(keys):], *keys[:index % len(keys)]]
            for key in order:
                target = servers.targets[key]
                if not target.alive():
                    raise SetupError(f"{target.name} is no longer running")
                sample = measure(servers, target, cell, rnd, index + 1, args)
                samples.append(sample)
                print("  " + peers_report.progress(sample), flush=True)
        del rounds
    return samples


def target_list(value: str) -> list[str]:
    names = list(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    unknown = [name for name in names if name not in KEYS and not name.startswith("mailflow@")]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{','.join(unknown) or value!r}: of {','.join(KEYS)}")
    return names


def cell_list(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in cells.BY_KEY]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{','.join(unknown) or value!r}: of {','.join(cells.BY_KEY)}")
    return names


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds a cell, the best kept (default 3; --quick: 1)")
    parser.add_argument("--targets", type=target_list, default=list(KEYS),
                        help=f"comma-separated, of {','.join(KEYS)} (the sink always runs)")
    parser.add_argument("--cells", type=cell_list, default=None,
                        help=f"comma-separated, of {','.join(cells.BY_KEY)} (default all)")
    parser.add_argument("--messages", type=int, default=None,
                        help="a round's messages in the cells under 1 MB (default "
                        f"{cells.CELLS[0].messages})")
    parser.add_argument("--big-messages", type=int, default=None,
                        help=f"a round's 1 MB messages (default {cells.CELLS[-1].messages})")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1 round, 300 messages (1 MB: 30) unless given")
    parser.add_argument("--against", action="append", default=[], metavar="REV",
                        help="also mailflow (SQLite, 1 worker) as of git REV (its src run from"
                        " an export), to compare a change with; repeatable")
    parser.add_argument("--seed", type=int, default=1, help="mailgen's seed")
    parser.add_argument("--haraka-log-level", default="info", help="Haraka's log.ini level")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results",
                        help="folder for the table (markdown and JSON)")
    parser.add_argument("--timeout", type=float, default=600, help="limit for a round")
    parser.add_argument("--message-timeout", type=float, default=60)
    parser.add_argument("--settle-timeout", type=float, default=120)
    parser.add_argument("--keep", action="store_true", help="keep the work folder and logs")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages = args.messages or 300
        args.big_messages = args.big_messages or 30
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.targets = ["sink", *(key for key in args.targets if key != "sink"),
                    *(f"mailflow@{rev}" for rev in args.against)]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    chosen = cells.selected(args.cells, args.messages, args.big_messages)
    command = shlex.join([Path(sys.executable).name, "bench/peers.py", *argv])
    with workdir("mailflow-peers-", args.keep) as work:
        try:
            servers = Servers(work, find_tool("smtp-sink"), max(c.sessions for c in chosen),
                              haraka_log_level=args.haraka_log_level)
        except SetupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_SETUP
        try:
            servers.start_sink()
            for key in args.targets[1:]:
                print(f"starting {key} …", flush=True)
                servers.start(key)
            samples = run_cells(servers, args.targets, chosen, args)
        except SetupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            for target in servers.targets.values():
                for log in target.logs:
                    print(f"--- {log.name}\n{tail_text(log)}", file=sys.stderr)
            return EXIT_SETUP
        finally:
            servers.stop()
        report = peers_report.Report(samples, chosen, servers.targets, args.rounds, command,
                                     CORES, servers.rules)
        text = report.render()
        print()
        print(text)
        written = report.write(args.out)
        print(f"written: {', '.join(str(path) for path in written)}")
    return 0 if all(sample.ok for sample in samples) else EXIT_MISSED


if __name__ == "__main__":
    sys.exit(main())
