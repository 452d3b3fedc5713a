#!/usr/bin/env python3
"""Where a message's time goes in mailflow, under distinct customer mail.

One ``mailflow serve`` (one worker, the shipped chain, acknowledgement limits raised) in
front of smtp-sink gets a first round of distinct mail (bench/mailgen.py) unprofiled,
for its CPU per message, then a second round under py-spy (``py-spy record --gil --format
raw``: the samples of the threads holding the GIL, that is running Python; attached once
the daemon is ready, stopped once the sink has everything), each thread's CPU read from
/proc meanwhile. It prints:

- each stage's mean milliseconds, from the daemon's ``message`` log lines (wall time
  inside the chain, awaits of the store included);
- the daemon's CPU per message by thread (the event loop's; the store's writer and
  readers), scaled to the unprofiled round's, and shared out by part (SMTP session, MIME
  parsing, each stage, store, logging, metrics, relay, outbox…: profile_breakdown.py)
  in proportion to the thread's GIL samples;
- the modules with the most self time.

    .venv/bin/pip install py-spy   # make bench-profile does it
    .venv/bin/python bench/profiling.py [--messages 1500] [--sessions 20] [--keep]

py-spy needs ptrace (root, or CAP_SYS_PTRACE). ``--keep`` keeps the raw profile (for
flamegraph.pl or speedscope) and the logs.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import cells
import profile_breakdown
from peers import measure
from peers_report import ms, num
from procs import REPO, SetupError, find_tool, spawn, tail_text
from targets import Servers


def py_spy() -> str:
    found = shutil.which("py-spy", path=str(REPO / ".venv" / "bin")) or shutil.which("py-spy")
    if found is None:
        raise SetupError("py-spy is missing: .venv/bin/pip install py-spy (make bench-profile)")
    return found


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=1500, help="a round's messages")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=10 * cells.KB)
    parser.add_argument("--rate", type=int, default=250, help="py-spy's samples a second")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--top", type=int, default=15, help="modules listed by self time")
    parser.add_argument("--keep", action="store_true", help="keep the profile and the logs")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--message-timeout", type=float, default=60)
    parser.add_argument("--settle-timeout", type=float, default=120)
    return parser.parse_args(argv)


def report(raw: Path, log: Path, cpu_ms: float | None, threads: tuple[float, float],
           top: int) -> str:
    """The stages' wall time from the log, then the CPU by part: each thread's CPU per
    message (``threads``: the main thread's and the others', profiled round), scaled to
    the unprofiled ``cpu_ms``, shared out by the samples that held the GIL."""
    main, others = profile_breakdown.parts(raw)
    count, stage_ms, whole = profile_breakdown.stages(
        log.read_text(errors="replace").splitlines())
    lines = [f"stages, from the log ({count} inbound messages of both rounds; mean wall ms"
             " inside the chain, awaits of the store included):"]
    for stage, value in sorted(stage_ms.items(), key=lambda item: -item[1]):
        lines.append(f"  {stage:14} {value:7.2f} ms")
    lines.append(f"  {'whole message':14} {whole:7.2f} ms (DATA to reply, as logged)")
    scale = (cpu_ms / sum(threads)) if cpu_ms and sum(threads) else 1.0
    lines += ["", f"CPU per message, unprofiled: {num(cpu_ms, 2)} ms; profiled: main thread"
              f" {threads[0]:.2f} ms, other threads {threads[1]:.2f} ms (scaled by"
              f" {scale:.2f} below)"]
    for title, counts, thread_ms in (
            ("main thread (event loop: SMTP, parsing, chain, relay, logs, metrics)", main,
             threads[0]),
            ("other threads (the store's writer and readers: SQL, commits, fsync; C code"
             " that released the GIL is not sampled, its CPU is in the total)", others,
             threads[1])):
        total = sum(counts.values()) or 1
        lines += ["", f"{title}: {thread_ms * scale:.2f} ms/msg, {total} GIL samples"]
        for part, samples in counts.most_common():
            share = samples / total
            lines.append(f"  {part:58} {100 * share:5.1f} %  {share * thread_ms * scale:6.2f} ms")
    everything = sum(main.values()) + sum(others.values()) or 1
    lines += ["", f"modules with the most self time (of {everything} GIL samples):"]
    for module, samples in profile_breakdown.modules(raw).most_common(top):
        lines.append(f"  {module:58} {100 * samples / everything:5.1f} %")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    work = Path(tempfile.mkdtemp(prefix="mailflow-profile-"))
    cell = cells.Cell("profile", args.size, args.sessions, 1, args.messages, False)
    servers = Servers(work, find_tool("smtp-sink"), args.sessions)
    spy: subprocess.Popen[bytes] | None = None
    try:
        sampler = py_spy()
        rounds = cells.traffic(cell, 2, args.seed)
        servers.start_sink()
        target = servers.start("mailflow")
        plain = measure(servers, target, cell, rounds[0], 1, args)
        print(f"unprofiled: {plain.rate:.1f} msg/s, CPU {num(plain.cpu_ms, 2)} ms/msg,"
              f" p50 {num(ms(plain.p50))} ms, p99 {num(ms(plain.p99))} ms", flush=True)
        raw = work / "profile.txt"
        spy = spawn([sampler, "record", "--gil", "--format", "raw", "--rate", str(args.rate),
                     "--output", str(raw), "--pid", str(target.procs[0].pid)],
                    work / "py-spy.log")
        pid = target.procs[0].pid
        before = profile_breakdown.thread_cpu(pid)
        profiled = measure(servers, target, cell, rounds[1], 2, args)
        after = profile_breakdown.thread_cpu(pid)
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)
        print(f"profiled:   {profiled.rate:.1f} msg/s, CPU {num(profiled.cpu_ms, 2)} ms/msg"
              " (py-spy's pauses included)", flush=True)
        if not raw.is_file():
            raise SetupError("py-spy wrote no profile:\n" + tail_text(work / "py-spy.log"))
        spent = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
        per = 1000 / profiled.messages
        threads = (spent.get(pid, 0.0) * per,
                   sum(v for tid, v in spent.items() if tid != pid) * per)
        print("CPU ms/msg by thread (profiled): " + ", ".join(
            f"{'main' if tid == pid else tid} {v * per:.2f}"
            for tid, v in sorted(spent.items(), key=lambda item: -item[1]) if v > 0))
        print()
        print(report(raw, target.logs[0], plain.cpu_ms, threads, args.top))
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        servers.stop()
        if args.keep:
            print(f"\nkept: {work} (profile.txt: py-spy raw; mailflow.log)")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
