"""How long scoring takes per mail: the evaluation set's 240 messages, each scored on the
customer's text the framework extracts, several rounds after a warm-up (the lexicons
load once per process). Prints the time per mail, per language: mean, median, 95th
percentile and the slowest; the goal is under 2 ms for a typical mail.

    .venv/bin/python plugins/mailflow-sentiment/bench_scoring.py [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "tests"))

from mailflow_sentiment.scoring import score_text, warm_up
from sentiment_eval import as_mail, messages

from mailflow.testing import make_context


def measure(rounds: int) -> dict[str, list[float]]:
    """language -> the best time (seconds) of each message over ``rounds`` rounds."""
    texts = []
    for entry in messages():
        ctx = make_context(as_mail(entry))
        texts.append((entry["language"], ctx.customer_text))
    started = time.perf_counter()
    warm_up()
    print(f"lexicons and cues loaded in {(time.perf_counter() - started) * 1000:.0f} ms"
          " (once per process)")
    best = [float("inf")] * len(texts)
    for _ in range(rounds):
        for i, (language, text) in enumerate(texts):
            start = time.perf_counter()
            score_text(text, language)
            best[i] = min(best[i], time.perf_counter() - start)
    found: dict[str, list[float]] = {}
    for (language, _), seconds in zip(texts, best, strict=True):
        found.setdefault(language, []).append(seconds)
    found["all"] = best
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds (the best one counts)")
    args = parser.parse_args()
    for language, times in measure(args.rounds).items():
        ms = sorted(t * 1000 for t in times)
        print(f"{language:>3}: {len(ms)} mails, per mail mean {statistics.fmean(ms):.3f} ms,"
              f" median {statistics.median(ms):.3f} ms,"
              f" p95 {ms[int(len(ms) * 0.95) - 1]:.3f} ms, slowest {ms[-1]:.3f} ms")


if __name__ == "__main__":
    main()
