#!/usr/bin/env python3
"""``make bench-store``: is mailflow's cost per message flat with the size of its store?

One SQLite store per size (``--sizes``, default 1,000 and 1,000,000 cases) is seeded by
store_seed.py with what real cases carry (the seeding is timed and reported), then one
``mailflow serve`` (one worker, the shipped chain, acknowledgement limits raised) runs on
each, all in front of one smtp-sink. The daemons take turns, round after round, each
round fed the same new distinct customer mail (bench/mailgen.py, 10 KB, 20 sessions, one message
a connection) by bench/load.py; the table keeps each store's best round and shows how
the cost grows from the smallest store.

    .venv/bin/python bench/store_size.py                     # 1,000 vs 1,000,000 cases
    .venv/bin/python bench/store_size.py --sizes 1000,100000 --rounds 2 --messages 500

The seeded stores are big (about 9 KB a case: 1,000,000 cases are some 9 GB) and are
made in a temporary folder (``--workdir``), removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import cells
import store_seed
import store_template
from peers import Sample, measure
from peers_report import Best, ms, num
from procs import SetupError, find_tool, tail_text
from targets import Servers


def sizes(value: str) -> list[int]:
    try:
        found = [int(part.replace("_", "")) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: numbers of cases, comma-separated") from None
    if not found or min(found) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: at least one size, each >= 1")
    return found


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=sizes, default=[1000, 1_000_000],
                        help="stored cases of each store, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=1000, help="a round's messages")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--seed", type=int, default=5, help="mailgen's seed of the load")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the stores go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the stores and logs")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--message-timeout", type=float, default=60)
    parser.add_argument("--settle-timeout", type=float, default=120)
    return parser.parse_args(argv)


def render(sizes_run: Sequence[int], seeded: dict[int, store_seed.Seeded],
           samples: Sequence[Sample], cell: cells.Cell, command: str) -> str:
    lines = [f"# mailflow's cost with the size of its store ({time.strftime('%Y-%m-%d %H:%M')})",
             "", f"- load: {cell.title}, {cell.messages} distinct messages a round;"
             " mailflow SQLite, one worker, the shipped chain, ack limits raised",
             "- best of the rounds: highest msg/s, lowest CPU and latency", "",
             "| stored cases | rows | store MiB | seeded in s | msg/s | CPU ms/msg "
             "| CPU vs smallest | p50 ms | p99 ms | peak PSS MiB |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    base = None
    for size in sizes_run:
        mine = [s for s in samples if s.target == key(size)]
        if not mine:
            continue
        best, seed = Best.of(mine), seeded[size]
        base = base if base is not None else best.cpu_ms
        growth = (None if best.cpu_ms is None or not base
                  else 100 * (best.cpu_ms - base) / base)
        lines.append(f"| {seed.cases:,} | {seed.rows:,} | {seed.size / 2**20:,.0f} "
                     f"| {seed.seconds:.0f} | {best.rate:.1f} | {num(best.cpu_ms, 2)} "
                     f"| {num(growth, 1, ' %')} | {num(ms(best.p50))} | {num(ms(best.p99))} "
                     f"| {best.peak_mib:.0f} |")
    lines += ["", f"command: `{command}`"]
    return "\n".join(lines) + "\n"


def key(size: int) -> str:
    return f"mailflow-{size}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    cell = cells.Cell("store", 10 * cells.KB, args.sessions, 1, args.messages, False)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mailflow-store-size-"))
    work.mkdir(parents=True, exist_ok=True)
    template = store_template.build()
    seeded: dict[int, store_seed.Seeded] = {}
    for size in args.sizes:
        path = work / f"cases-{size}" / "mailflow.sqlite3"
        print(f"seeding {size:,} cases into {path} …", flush=True)
        seeded[size] = store_seed.seed(path, size, template,
                                       progress=lambda line: print("  " + line, flush=True))
        done = seeded[size]
        print(f"  {done.cases:,} cases, {done.rows:,} rows, {done.size / 2**20:,.0f} MiB in"
              f" {done.seconds:.0f}s", flush=True)
    servers = Servers(work, find_tool("smtp-sink"), args.sessions)
    samples: list[Sample] = []
    try:
        servers.start_sink()
        for size in args.sizes:
            servers.start(key(size), state=work / f"cases-{size}")
        rounds = cells.traffic(cell, args.rounds, args.seed)  # each store gets the same mail
        keys = [key(size) for size in args.sizes]
        for index, rnd in enumerate(rounds):
            order = [*keys[index % len(keys):], *keys[:index % len(keys)]]
            for name in order:
                sample = measure(servers, servers.targets[name], cell, rnd, index + 1, args)
                samples.append(sample)
                print(f"  round {index + 1} {name}: {sample.rate:.1f} msg/s,"
                      f" CPU {num(sample.cpu_ms, 2)} ms/msg, p99 {num(ms(sample.p99))} ms"
                      f"{'' if sample.ok else '  !! ' + sample.error}", flush=True)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        for target in servers.targets.values():
            for log in target.logs:
                print(f"--- {log.name}\n{tail_text(log)}", file=sys.stderr)
        return 3
    finally:
        servers.stop()
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    command = " ".join(["python", "bench/store_size.py", *argv])
    print()
    print(render(args.sizes, seeded, samples, cell, command))
    return 0 if all(s.ok for s in samples) else 1


if __name__ == "__main__":
    sys.exit(main())
