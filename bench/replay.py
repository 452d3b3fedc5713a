#!/usr/bin/env python3
"""How fast ``mailflow replay`` goes: a generated Maildir of distinct customer mail (50,000
messages by default, bench/mailgen.py), replayed through the shipped rules' whole chain on
a scratch store, timers firing on the way; prints messages per second.

    .venv/bin/python bench/replay.py [--count 50000] [--folder /tmp/mailflow-replay-50k]

The folder is generated once and kept (it takes about 45 s for 50,000 messages); the
replay runs in this process, as ``mailflow replay`` does, and nothing is sent.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mailgen

from mailflow.config import load_settings
from mailflow.logs import configure
from mailflow.replay import replay

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--folder", type=Path, default=None)
    args = parser.parse_args()
    configure("warning")  # as `mailflow replay` runs: a log line per message costs time
    folder = args.folder or Path(f"/tmp/mailflow-replay-{args.count}")
    if not (folder / "labels.jsonl").is_file():
        began = time.perf_counter()
        mailgen.write(mailgen.Generator(seed=1).stream(args.count), folder)
        print(f"generated {args.count} messages in {folder} in"
              f" {time.perf_counter() - began:.0f} s")
    settings = load_settings(None, {"rules": str(REPO / "rules"),
                                    "state_dir": str(folder / "unused-state")})
    done = asyncio.run(replay(settings, [folder], after=2 * 86400))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rate = len(done.rows) / done.seconds
    print(f"replayed {len(done.rows)} messages in {done.seconds:.1f} s: {rate:.0f} msg/s;"
          f" timers fired {sum(done.tally.timers.values())}, mail written"
          f" {sum(done.tally.mail.values())}; peak memory {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
