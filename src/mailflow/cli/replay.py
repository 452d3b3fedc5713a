"""``mailflow replay ARCHIVE… [--sent ARCHIVE] [--output FILE] [--html FILE] [--against RULES]``.

What the daemon would have done with an archive (see :mod:`mailflow.replay`): a
summary, with a progress bar on a terminal and plain lines otherwise; one row per
message in ``--output`` (``.json`` or ``.csv``); the report page of the replayed
period in ``--html``; with ``--against``, the same archive through a second rules
folder and each message whose direction, automatic verdict, route, priority,
acknowledgement or escalation differs, both values side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from mailflow.cli.options import CliError, settings_from
from mailflow.durations import parse_duration
from mailflow.replay import Outcome, differences, replay, write
from mailflow.replay.archive import read
from mailflow.rules import load_rules


def _progress(enabled: bool) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A rich progress bar on a terminal; a line every 1,000 messages otherwise."""
    if enabled:
        from rich.progress import Progress

        bar = Progress(transient=True)
        task = bar.add_task("replaying", total=None)
        bar.start()

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)
        return step, bar.stop

    def line(done: int, total: int) -> None:
        if done % 1000 == 0 or done == total:
            print(f"replayed {done} of {total}", file=sys.stderr, flush=True)
    return line, lambda: None


def summary(outcome: Outcome) -> list[str]:
    """The headline figures of a replay, for a person."""
    rows, tally = outcome.rows, outcome.tally
    rate = len(rows) / outcome.seconds if outcome.seconds else 0.0
    count = Counter
    lines = [f"{len(rows)} messages replayed in {outcome.seconds:.1f} s ({rate:.0f} msg/s)"]

    def said(title: str, counted: Counter[str] | dict[str, int]) -> None:
        items = [f"{k or '-'} {v}" for k, v in sorted(counted.items(), key=lambda kv: -kv[1])]
        lines.append(f"{title + ':':<22} {', '.join(items) or 'none'}")

    said("direction", count(r.direction or "refused" for r in rows))
    said("automatic", count(r.automatic.split(":")[0] for r in rows if r.automatic))
    said("cases", count(r.case_status for r in rows if r.case_status))
    said("priority", count(r.priority for r in rows if r.priority))
    said("route", count(r.route for r in rows if r.route))
    said("acknowledgements", count(r.ack for r in rows if r.ack))
    said("not acknowledged", count(r.ack_why.split(" (")[0] for r in rows
                                   if r.ack == "suppressed"))
    said("escalations", count(r.escalation.split(" ->")[0] for r in rows if r.escalation))
    said("timers fired", tally.timers)
    said("mail written", {**tally.mail})
    said("first responses", count(outcome.deadlines.values()))
    return lines


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    try:
        after = parse_duration(args.after).seconds if args.after else 0.0
    except ValueError as exc:
        raise CliError(f"--after: {exc}", code=2) from None
    archives = [Path(a) for a in args.archives]
    sent = [Path(a) for a in args.sent]
    for path in (*archives, *sent):
        if not path.exists():
            raise CliError(f"no archive at {path}", code=2)
    items = read(archives, load_rules(settings.rules).is_local, sent=sent)
    step, done = _progress(sys.stderr.isatty() and len(items) > 200)
    try:
        outcome = asyncio.run(replay(settings, archives, sent=sent, after=after,
                                     html=args.html is not None, progress=step,
                                     messages=items))
    finally:
        done()
    print("\n".join(summary(outcome)))
    if args.output:
        write(outcome.rows, Path(args.output))
        print(f"rows written to {Path(args.output).absolute()}")
    if args.html and outcome.html is not None:
        Path(args.html).write_text(outcome.html, encoding="utf-8")
        print(f"report written to {Path(args.html).absolute()}")
    if args.against:
        other = settings.model_copy(update={"rules": args.against})
        theirs = asyncio.run(replay(other, archives, sent=sent, after=after, messages=items))
        changed = differences(outcome.rows, theirs.rows)
        print(f"{len(changed)} of {len(items)} messages decided differently with"
              f" {args.against}:")
        for item in changed:
            print(f"  #{item['index']} {item['source']} <{item['message_id']}>")
            for name, (ours, theirs_value) in item["changed"].items():
                print(f"      {name}: {ours or '-'}  ->  {theirs_value or '-'}")
    return 0
