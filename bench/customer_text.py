"""Cost of `customer_text` per message, over the real messages of ../shared.

Parses every message of ../shared/corpus, realmail and realmail2 once (not timed),
then times `split_customer_text` on each body, best of ``--runs`` passes. Prints the
mean and p95 per message, the figure for bodies of 2-4 KB (a typical mail), the
slowest message, and a few hostile inputs.

    .venv/bin/python bench/customer_text.py [--runs 5] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mailflow.message import Envelope, parse_message
from mailflow.message.customer_text import split_customer_text

REPO = Path(__file__).resolve().parents[1]
HOSTILE = {
    "50,000 '>' lines": "> a\n" * 50_000,
    "a 1 MB line": "a" * 1_000_000,
    "20 KB line 'On x x x…'": "On " + "x " * 10_000,
    "3,000 lines 'On a b c…'": "On a b c d e f g\n" * 3_000,
    "'From: a\\nSent: b' x 5,000": "From: a\nSent: b\n" * 5_000,
    "100 KB of blank lines": "\n" * 100_000,
}


def bodies(shared: Path) -> list[tuple[str, str]]:
    out = []
    envelope = Envelope(mail_from="", rcpt_to=())
    for folder in ("corpus", "realmail", "realmail2"):
        for path in sorted((shared / folder).glob("*")):
            if path.is_file() and path.suffix not in (".json", ".yaml", ".md"):
                out.append((f"{folder}/{path.name}",
                            parse_message(path.read_bytes(), envelope).text))
    return out


def timed(text: str, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        split_customer_text(text)
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    args = parser.parse_args()
    messages = bodies(args.shared)
    if not messages:
        raise SystemExit(f"no messages under {args.shared}")
    times = sorted((timed(text, args.runs), len(text), name) for name, text in messages)
    ms = [t for t, _, _ in times]
    typical = [t for t, size, _ in times if 2048 <= size <= 4096]
    cut = sum(1 for _, text in messages if split_customer_text(text).cuts)
    print(f"{len(messages)} messages ({cut} with something cut), best of {args.runs} runs")
    print(f"per message: mean {sum(ms) / len(ms):.3f} ms, p50 {ms[len(ms) // 2]:.3f} ms, "
          f"p95 {ms[int(len(ms) * 0.95)]:.3f} ms")
    if typical:
        print(f"bodies of 2-4 KB ({len(typical)}): mean {sum(typical) / len(typical):.3f} ms, "
              f"max {max(typical):.3f} ms")
    slowest = times[-1]
    print(f"slowest: {slowest[0]:.2f} ms ({slowest[2]}, {slowest[1]:,} characters)")
    for label, text in HOSTILE.items():
        print(f"hostile, {label}: {timed(text, 1):.1f} ms")


if __name__ == "__main__":
    main()
