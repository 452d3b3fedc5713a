"""Cost of the automatic-mail detector per message (it runs once per message, on the
hot path), over the real messages of ../shared and generated customer mail.

Parses every message of ../shared/corpus, realmail and realmail2, and 2,000 messages of
``mailgen.py`` (customers' 2 KB mail, with its share of robots), once (not timed), then
times ``AutomaticDetector.judge`` on each, best of ``--runs`` passes. Prints the mean,
p50 and p99 per message for each set, the slowest message, and hostile inputs.

    .venv/bin/python bench/automatic.py [--runs 5] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mailflow.automatic import SHIPPED
from mailflow.message import Envelope, Message, parse_message

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import mailgen  # noqa: E402  (bench/ is no package)

ENVELOPE = Envelope(mail_from="someone@client.test", rcpt_to=("sav@example.com",))
HOSTILE = {
    "a 200 KB Subject": b"Subject: " + b"Undeliverable " * 15_000 + b"\r\n\r\nx",
    "1 MB of a bounce's sentences": b"Subject: x\r\nFrom: a@b.test\r\n\r\n"
    + b"This is the mail system at host x. Unsubscribe.\r\n" * 20_000,
    "5,000 headers": b"".join(b"X-H%d: v\r\n" % i for i in range(5_000)) + b"\r\nx",
}


def real(shared: Path) -> list[tuple[str, Message]]:
    out = []
    for folder in ("corpus", "realmail", "realmail2"):
        for path in sorted((shared / folder).glob("*")):
            if path.is_file() and path.suffix not in (".json", ".yaml", ".md"):
                out.append((f"{folder}/{path.name}", parse_message(path.read_bytes(), ENVELOPE)))
    return out


def generated(count: int) -> list[tuple[str, Message]]:
    mails = mailgen.Generator(seed=7, size=2048).generate(count)
    return [(f"mailgen/{m.label.kind}/{i}", parse_message(
        m.data, Envelope(m.label.mail_from, (m.label.rcpt_to,)))) for i, m in enumerate(mails)]


def timed(message: Message, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        SHIPPED.judge(message)
        best = min(best, time.perf_counter() - started)
    return best * 1e6


def show(label: str, messages: list[tuple[str, Message]], runs: int) -> None:
    times = sorted((timed(message, runs), name) for name, message in messages)
    us = [t for t, _ in times]
    robots = sum(SHIPPED.judge(message) is not None for _, message in messages)
    print(f"{label}: {len(messages)} messages ({robots} automatic), best of {runs} runs: "
          f"mean {sum(us) / len(us):.1f} µs, p50 {us[len(us) // 2]:.1f} µs, "
          f"p99 {us[int(len(us) * 0.99)]:.1f} µs; slowest {times[-1][0]:.0f} µs "
          f"({times[-1][1]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    args = parser.parse_args()
    messages = real(args.shared)
    if not messages:
        raise SystemExit(f"no messages under {args.shared}")
    show("real mail (../shared)", messages, args.runs)
    show("generated customer mail (mailgen, 2 KB)", generated(2000), args.runs)
    for label, raw in HOSTILE.items():
        print(f"hostile, {label}: {timed(parse_message(raw, ENVELOPE), 1) / 1000:.2f} ms")


if __name__ == "__main__":
    main()
