#!/usr/bin/env python3
"""What a message costs mailflow in instructions, not seconds: a figure that holds still.

Time on a shared 2-core machine drifts by a quarter from one round to the next, more
than most changes to the hot path. Instructions do not: valgrind's cachegrind counts the
instructions one process runs (its threads included, the kernel's work for its system
calls not), and the same mail through the same code counts the same to a fraction of a
percent. A child process feeds distinct customer mail (bench/mailgen.py, 10 KB, the
shipped rules, acknowledgement limits raised) through mailflow's own path without the
network: the reception, the chain, the store's commit on SQLite, the mail it writes
(``mailflow.replay``'s engine, as ``mailflow replay`` runs it). It runs twice, with 0 and
with N messages; the difference over N is the cost of a message, start-up left out.

Not counted: the SMTP sessions in and out and the outbox's sending (the network's
part); ``make bench`` measures those in time.

    .venv/bin/python bench/instructions.py [--messages 200] [--against REV ...]

valgrind is a Debian package (``apt-get install valgrind``). A run of 200 messages
takes a few minutes (cachegrind runs code about 30 times slower).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import REPO, SetupError

_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


async def _feed(messages: int, work: Path, seed: int) -> None:
    """``messages`` distinct customer mails through the replay engine, nothing printed."""
    import mailgen
    from runs import raised_rules

    from mailflow.config import load_settings
    from mailflow.logs import configure
    from mailflow.replay.archive import Archived, envelope_of
    from mailflow.replay.engine import Replay
    from mailflow.rules import load_rules

    configure("warning")
    rules = raised_rules(work)
    settings = load_settings(None, {"rules": str(rules), "state_dir": str(work / "state")})
    is_local = load_rules(settings.rules).is_local
    items = []
    for mail in mailgen.Generator(seed, 10240).generate(max(messages, 1)):
        envelope, at = envelope_of(mail.data, is_local)
        assert at is not None
        raw = mail.data
        items.append(Archived(mail.label.message_id, lambda raw=raw: raw, envelope, at))
    async with Replay(settings, work / "replay", items[0].at) as run:
        for index, item in enumerate(items[:messages]):
            await run.feed(item, index)


def count(messages: int, seed: int, source: Path | None) -> int:
    """The instructions of one child feeding ``messages`` messages."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SetupError("valgrind is missing: apt-get install valgrind")
    env = dict(os.environ, PYTHONHASHSEED="0")
    if source is not None:
        env["PYTHONPATH"] = str(source)
    with tempfile.TemporaryDirectory(prefix="mailflow-instructions-") as work:
        done = subprocess.run(
            [valgrind, "--tool=cachegrind", "--cache-sim=no",
             f"--cachegrind-out-file={work}/cachegrind.out", sys.executable, __file__,
             "--child", str(messages), "--seed", str(seed), "--work", work],
            capture_output=True, text=True, env=env, cwd=REPO, check=False, timeout=3600)
    refs = refs_of(done.stderr)
    if done.returncode != 0 or refs is None:
        raise SetupError(f"the child failed ({done.returncode}): {done.stderr[-2000:]}")
    return refs


def refs_of(report: str) -> int | None:
    """The instructions cachegrind's summary gives (``I refs: 1,234``), if there."""
    found = _REFS.search(report)
    return int(found.group(1).replace(",", "")) if found else None


def export(revision: str, into: Path) -> Path:
    """mailflow's ``src`` as of git ``revision``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "src"],
                             capture_output=True, check=True, timeout=60)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True, timeout=60)
    return into / "src"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--against", action="append", default=[], metavar="REV",
                        help="also mailflow as of git REV (its src from an export)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        asyncio.run(_feed(args.child, args.work, args.seed))
        return 0
    with tempfile.TemporaryDirectory(prefix="mailflow-sources-") as sources:
        targets: list[tuple[str, Path | None]] = [("working tree", None)]
        for revision in args.against:
            folder = Path(sources) / revision.replace("/", "_")
            folder.mkdir()
            targets.append((revision, export(revision, folder)))
        for name, source in targets:
            start, full = count(0, args.seed, source), count(args.messages, args.seed, source)
            print(f"{name}: {(full - start) / args.messages / 1e6:.3f} M instructions a message"
                  f" ({args.messages} messages; start-up {start / 1e6:.0f} M)", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SetupError as exc:
        print(f"instructions: {exc}", file=sys.stderr)
        sys.exit(2)
