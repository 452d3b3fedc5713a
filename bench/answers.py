#!/usr/bin/env python3
"""Ranking speed: a generated library of N answers, the evaluation set's messages ranked.

The library is made from the shipped one: each generated answer takes a shipped
answer's title, keywords, phrasings and body, with words of other answers mixed
in and a number of its own, so the index has N distinct answers of realistic
length and vocabulary (half French, half English, as the shipped library). The
messages are tests/answers/eval.yaml's, each cut to its customer's own text as
the stage does. Timed: ranking only (the index is built once, at load), one
core, after a warm-up; the figures judged are the thread's CPU time (a busy
machine's other processes do not count), the wall clock is printed beside.

    .venv/bin/python bench/answers.py --answers 2500 --rounds 20
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

from ruamel.yaml import YAML

from mailflow.answers.library import Answer, FrontMatter, load_library
from mailflow.answers.rank import Index
from mailflow.message.customer_text import customer_text

REPO = Path(__file__).resolve().parents[1]


def generate(shipped: list[Answer], count: int, seed: int) -> list[Answer]:
    """``count`` answers made from ``shipped`` (one language)."""
    rng = random.Random(seed)
    words = [w for a in shipped for w in a.text().split() if w.isalpha() and len(w) > 3]
    made = []
    for n in range(count):
        base = shipped[n % len(shipped)]
        mixed = " ".join(rng.sample(words, min(40, len(words))))
        meta = FrontMatter.model_validate({
            **base.meta.model_dump(), "id": f"{base.id}-{n}", "code": f"GEN-{n % 10000}",
            "title": f"{base.title} {rng.choice(words)}",
            "keywords": [*base.meta.keywords, rng.choice(words)]})
        made.append(Answer(meta, f"{base.body}\n{mixed}\n", base.template, base.file,
                           base.body_line))
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=2500, help="answers in the library")
    parser.add_argument("--rounds", type=int, default=20, help="passes over the messages")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    library = load_library(REPO / "rules" / "answers")
    messages = YAML(typ="safe").load((REPO / "tests" / "answers" / "eval.yaml")
                                     .read_text(encoding="utf-8"))["messages"]
    indexes = {}
    started = time.perf_counter()
    for language in library.languages:
        shipped = library.validated(language)
        indexes[language] = Index(generate(shipped, args.answers // len(library.languages),
                                           args.seed), language)
    built = time.perf_counter() - started
    texts = [(m["language"], m["subject"], customer_text(m["text"])) for m in messages]
    for language, subject, text in texts:  # warm-up: stemmer caches, numpy's first calls
        indexes[language].rank(subject, text)
    times, walls = [], []
    for _ in range(args.rounds):
        for language, subject, text in texts:
            w0, t0 = time.perf_counter(), time.thread_time()
            indexes[language].rank(subject, text)
            times.append(time.thread_time() - t0)
            walls.append(time.perf_counter() - w0)
    times.sort()
    walls.sort()
    mean = statistics.fmean(times) * 1000
    p99 = times[int(len(times) * 0.99) - 1] * 1000
    print(f"library: {sum(len(i) for i in indexes.values())} answers"
          f" ({', '.join(f'{k} {len(v)}' for k, v in indexes.items())}), indexed in"
          f" {built:.2f} s")
    print(f"ranked: {len(times)} messages ({len(texts)} x {args.rounds})")
    print(f"per message, CPU time of this thread: mean {mean:.3f} ms,"
          f" p50 {times[len(times) // 2] * 1000:.3f} ms, p99 {p99:.3f} ms,"
          f" max {times[-1] * 1000:.3f} ms")
    print(f"per message, wall clock (other processes included): mean"
          f" {statistics.fmean(walls) * 1000:.3f} ms, p99"
          f" {walls[int(len(walls) * 0.99) - 1] * 1000:.3f} ms")
    ok = mean <= 0.3 and p99 <= 2.0
    print("targets (mean <= 0.3 ms, p99 <= 2 ms):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
