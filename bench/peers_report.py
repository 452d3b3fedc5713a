"""The table of ``make bench``: each target's best round in each cell, the ratios, and
issue 29's targets checked; printed, and written as markdown and JSON.

Best of the rounds, figure by figure: the highest msg/s, the lowest CPU per message and
latencies (noise only adds to them), the largest peak memory (a peak is a peak). Added
latency is the target's minus the sink's in the same cell (the load client's and the
kernel's part, which every target pays).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cells import Cell
from procs import REPO

if TYPE_CHECKING:
    from peers import Sample
    from targets import Target


@dataclass(frozen=True)
class Best:
    """A target's figures in one cell, best of its rounds."""

    rate: float
    cpu_ms: float | None
    p50: float | None  # seconds
    p99: float | None
    peak_mib: float
    ok: bool
    rounds: int

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> Best:
        cpus = [s.cpu_ms for s in samples if s.cpu_ms is not None]
        p50s = [s.p50 for s in samples if s.p50 is not None]
        p99s = [s.p99 for s in samples if s.p99 is not None]
        return cls(max(s.rate for s in samples), min(cpus) if cpus else None,
                   min(p50s) if p50s else None, min(p99s) if p99s else None,
                   max(s.peak_mib for s in samples), all(s.ok for s in samples), len(samples))


def ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def num(value: float | None, decimals: int = 1, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{decimals}f}{suffix}"


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


def progress(sample: Sample) -> str:
    """One line a round, as it ends."""
    flag = "" if sample.ok else f"  !! {sample.error or 'incomplete'}"
    return (f"round {sample.round} {sample.target:17} {sample.rate:7.1f} msg/s "
            f"CPU {num(sample.cpu_ms, 2):>6} ms/msg  p50 {num(ms(sample.p50)):>6} ms "
            f"p99 {num(ms(sample.p99)):>6} ms  PSS {sample.peak_mib:6.1f} MiB  "
            f"{sample.accepted}/{sample.messages} 2xx, sink {sample.sink_got}{flag}")


class Report:
    def __init__(self, samples: Sequence[Sample], cells: Sequence[Cell],
                 targets: Mapping[str, Target], rounds: int, command: str, cores: int,
                 rules: Path | None) -> None:
        self.samples = list(samples)
        self.cells = list(cells)
        self.targets = targets
        self.rounds = rounds
        self.command = command
        self.cores = cores
        self.rules = rules
        self.when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        self.best: dict[tuple[str, str], Best] = {}
        for cell in self.cells:
            for key in targets:
                mine = [s for s in self.samples if s.cell == cell.key and s.target == key]
                if mine:
                    self.best[cell.key, key] = Best.of(mine)

    # -- text ------------------------------------------------------------------

    def render(self) -> str:
        lines = [f"# mailflow against its peers ({self.when})", "", *self.header(), ""]
        for cell in self.cells:
            lines += self.cell_table(cell)
        lines += self.checks()
        lines += ["", "Notes:", *self.notes(), "", f"command: `{self.command}`"]
        return "\n".join(lines) + "\n"

    def header(self) -> list[str]:
        chain = ", ".join(self.chain()) or "?"
        return [
            f"- host: {platform.node()}, {self.cores} cores, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}; mailflow {self.commit()}",
            f"- mailflow's chain (rules/chain.yaml, as shipped): {chain}; acknowledgement "
            "limits raised (no ack suppressed, none paced)",
            "- load: bench/load.py, distinct customer mail (bench/mailgen.py: new questions,"
            " follow-ups, copies, urgent, legal, automatic mail), the same to every target;"
            " a round ends when the sink has every message and every acknowledgement",
            f"- best of {self.rounds} round(s) a cell: highest msg/s, lowest CPU and latency,"
            " largest peak memory",
        ]

    def cell_table(self, cell: Cell) -> list[str]:
        mark = " (issue 29's targets apply)" if cell.targeted else " (reported, not targeted)"
        sink = self.best.get((cell.key, "sink"))
        bare = self.best.get((cell.key, "bare"))
        peer = self.best.get((cell.key, "haraka"))
        out = [f"## {cell.title}, {cell.messages} messages a round{mark}", "",
               "| target | msg/s | × bare | × Haraka | CPU ms/msg | CPU × bare | "
               "added p50 ms | added p99 ms | peak PSS MiB |",
               "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for key, target in self.targets.items():
            best = self.best.get((cell.key, key))
            if best is None:
                continue
            if key == "sink":
                p50, p99 = f"({num(ms(best.p50))})", f"({num(ms(best.p99))})"
            else:
                p50 = num(ms(added(best.p50, sink.p50 if sink else None)))
                p99 = num(ms(added(best.p99, sink.p99 if sink else None)))
            name = target.name + ("" if best.ok else " **(incomplete)**")
            to_bare = ratio(best.rate, bare.rate if bare else None)
            to_peer = ratio(best.rate, peer.rate if peer else None)
            cpu_to_bare = ratio(best.cpu_ms, bare.cpu_ms if bare else None)
            out.append(f"| {name} | {best.rate:.1f} | {num(to_bare, 2)} | {num(to_peer, 2)} "
                       f"| {num(best.cpu_ms, 2)} | {num(cpu_to_bare, 2)} | {p50} | {p99} "
                       f"| {best.peak_mib:.0f} |")
        return [*out, ""]

    def checks(self) -> list[str]:
        """Issue 29's targets, cell by cell, as measured in this run."""
        out = ["## Issue 29's targets, in this run", ""]
        for cell in (c for c in self.cells if c.targeted):
            get = self.best.get
            bare, peer = get((cell.key, "bare")), get((cell.key, "haraka"))
            sink = get((cell.key, "sink"))
            one, many = get((cell.key, "mailflow")), get((cell.key, "mailflow-workers"))
            pg = get((cell.key, "mailflow-pg"))
            if one and bare:
                out.append(check(cell, "CPU/msg, 1 worker ≤ 2.0× bare",
                                 ratio(one.cpu_ms, bare.cpu_ms), 2.0, below=True))
            if many and bare:
                out.append(check(cell, "CPU/msg, 1 worker per core ≤ 2.0× bare",
                                 ratio(many.cpu_ms, bare.cpu_ms), 2.0, below=True))
            if many and peer:
                out.append(check(cell, "msg/s, 1 worker per core ≥ 1.0× Haraka",
                                 ratio(many.rate, peer.rate), 1.0, below=False))
            for name, best in (("1 worker", one), ("1 worker per core", many)):
                if best and sink and cell.sessions <= 20:
                    out.append(check(cell, f"added p99, {name} ≤ 25 ms",
                                     ms(added(best.p99, sink.p99)), 25.0, below=True))
                if best and cell.sessions >= 200:
                    out.append(check(cell, f"peak PSS, {name} ≤ 150 MiB", best.peak_mib,
                                     150.0, below=True))
            if pg and one:
                out.append(check(cell, "msg/s, PostgreSQL ≥ 0.8× SQLite (1 worker)",
                                 ratio(pg.rate, one.rate), 0.8, below=False))
        return out

    def notes(self) -> list[str]:
        out = [
            "- msg/s: messages sent / seconds from the first sent until the sink had"
            " everything (mailflow: also every acknowledgement and escalation it wrote)",
            "- CPU ms/msg: user+system CPU of all the target's processes (workers, cluster"
            " nodes; for PostgreSQL its server and backends too) over the round, per message"
            " sent; the load client's and the sink's are not in it",
            "- added p50/p99: end of DATA to the reply at the client, minus the same through"
            " the sink alone in the same cell (the sink's own, in parentheses)",
            "- peak PSS: /proc/PID/smaps_rollup summed over the target's processes, sampled"
            " every 0.2 s during the rounds (shared pages counted once)",
        ]
        for target in self.targets.values():
            out += [f"- {target.name}: {note}" for note in target.notes]
        for sample in self.samples:
            if not sample.ok:
                out.append(f"- {sample.cell} round {sample.round} {sample.target}: "
                           f"{sample.accepted}/{sample.messages} accepted, {sample.error}")
        return out

    def chain(self) -> list[str]:
        if self.rules is None:
            return []
        from ruamel.yaml import YAML

        data = YAML(typ="safe").load((self.rules / "chain.yaml").read_text())
        return [str(stage) for stage in data.get("chain", [])]

    @staticmethod
    def commit() -> str:
        try:
            done = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                                  capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return "?"
        return done.stdout.strip() or "?"

    # -- files -----------------------------------------------------------------

    def write(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / f"peers-{time.strftime('%Y%m%d-%H%M%S')}"
        markdown, data = stem.with_suffix(".md"), stem.with_suffix(".json")
        markdown.write_text(self.render(), encoding="utf-8")
        data.write_text(json.dumps(self.as_json(), indent=1) + "\n", encoding="utf-8")
        return [markdown, data]

    def as_json(self) -> dict[str, Any]:
        return {
            "when": self.when, "command": self.command, "cores": self.cores,
            "host": platform.node(), "commit": self.commit(), "chain": self.chain(),
            "load_average": os.getloadavg(),
            "targets": {key: target.name for key, target in self.targets.items()},
            "cells": [dataclasses.asdict(cell) for cell in self.cells],
            "best": [{"cell": cell, "target": key, **dataclasses.asdict(best)}
                     for (cell, key), best in self.best.items()],
            "samples": [{**dataclasses.asdict(s), "rate": s.rate, "cpu_ms": s.cpu_ms}
                        for s in self.samples],
        }


def added(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else value - base


def check(cell: Cell, what: str, value: float | None, bound: float, below: bool) -> str:
    if value is None:
        return f"- {cell.key}: {what}: not measured"
    met = value <= bound if below else value >= bound
    return f"- {cell.key}: {what}: {value:.2f} — {'met' if met else 'NOT met'}"
