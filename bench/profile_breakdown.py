"""Where mailflow's time goes: py-spy's samples, and the ``message`` log lines, summed up.

py-spy's raw output (``--format raw``: one line a distinct stack, frames root first,
``function (file:line)`` each, then the sample count) is reduced to the parts of the
daemon: each sample goes to the first frame, from the leaf up, of a module that does a
job of its own (SMTP, parsing, a stage, the store, logs, metrics, the relay…); helpers
that work for whoever calls them (the standard library, regexes, JSON, mailflow's
textmatch or templates) are skipped, so their time goes to their caller. Work done for
the outbox or the scheduler is theirs, whatever it calls.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]*)(?::\d+)?\)$")

#: ancestors that own everything below them (mail mailflow sends, timers it fires)
CONTEXTS = (
    ("mailflow/outbox.py", "outbox: sending acks and notices"),
    ("mailflow/scheduler.py", "scheduler: timers"),
    ("mailflow/stats/upkeep.py", "housekeeping (gauges)"),
)
#: modules that work for their caller: skipped when looking for a sample's owner
TRANSPARENT = ("mailflow/textmatch.py", "mailflow/templates.py", "mailflow/conditions.py",
               "mailflow/cases.py", "mailflow/calendars.py", "mailflow/business_hours.py",
               "mailflow/deadlines.py", "mailflow/sla_timers.py", "mailflow/escalation/",
               "mailflow/acks.py", "mailflow/agents.py", "mailflow/stats/", "mailflow/stash.py",
               "mailflow/values.py", "mailflow/clock.py", "mailflow/presence.py",
               "mailflow/events.py", "mailflow/host.py", "mailflow/plugins.py",
               "mailflow/cli/", "mailflow/launch.py",  # every stack's root
               "email/")  # the stdlib's: parsing for mailflow.message, writing for the writer
#: (path fragment, part), the first that matches a frame's file wins
OWNERS = (
    ("mailflow/stages/", None),  # the stage's own name
    ("mailflow/answers/", "stage answers"),  # ranking the library, for the answers stage
    ("mailflow_sentiment/", "stage sentiment"),  # the plugin's stage and its scoring
    ("vaderSentiment", "stage sentiment"),
    ("mailflow/store/", "store (SQL, commits, thread hops)"),
    ("sqlite3/", "store (SQL, commits, thread hops)"),
    ("psycopg", "store (SQL, commits, thread hops)"),
    ("mailflow/logs.py", "logging"),
    ("mailflow/outcome_log.py", "logging"),
    ("structlog/", "logging"),
    ("logging/", "logging"),
    ("mailflow/metrics.py", "metrics"),
    ("prometheus_client/", "metrics"),
    ("mailflow/relay.py", "relay to the next hop (aiosmtplib)"),
    ("aiosmtplib/", "relay to the next hop (aiosmtplib)"),
    ("mailflow/wire.py", "relayed bytes (headers, copies)"),
    ("mailflow/message/writer.py", "writing mail: acks, notices (message.writer, email)"),
    ("mailflow/message/compose.py", "writing mail: acks, notices (message.writer, email)"),
    ("mailflow/message/", "MIME parsing and text (mailflow.message, email)"),
    ("mailflow/intake.py", "MIME parsing and text (mailflow.message, email)"),
    ("mailflow/facts.py", "facts and direction (automatic mail, who writes)"),
    ("mailflow/automatic/", "facts and direction (automatic mail, who writes)"),
    ("mailflow/direction.py", "facts and direction (automatic mail, who writes)"),
    ("mailflow/language.py", "facts and direction (automatic mail, who writes)"),
    ("mailflow/smtp", "SMTP session (aiosmtpd, mailflow.smtp*)"),
    ("aiosmtpd/", "SMTP session (aiosmtpd, mailflow.smtp*)"),
    ("mailflow/", "framework (pipeline, chain, context, reception)"),
)
#: the event loop's own frames: a sample goes there only if nothing above owns it
#: (asyncio's streams work for aiosmtpd's session or aiosmtplib's relay)
LOOP = ("uvloop/", "asyncio/", "selectors.py")
OTHER = "other (interpreter, imports, threads)"


def frames(stack: str) -> list[str]:
    """The files of a raw stack's frames, root first (without the thread or process)."""
    found = []
    for frame in stack.split(";"):
        match = _FRAME.match(frame.strip())
        if match:
            found.append(match.group("file"))
    return found


def owner(files: list[str]) -> str:
    """The part a sample (its frames' files, root first) is charged to."""
    for fragment, part in CONTEXTS:
        if any(fragment in f for f in files):
            return part
    for file in reversed(files):
        if any(t in file for t in TRANSPARENT):
            continue
        for fragment, part in OWNERS:
            if fragment in file:
                if part is None:
                    return "stage " + file.rsplit("/", 1)[-1].removesuffix(".py")
                return part
    if files and any(fragment in files[-1] for fragment in LOOP):
        return "event loop (asyncio, uvloop)"
    return OTHER


def parts(raw: Path) -> tuple[Counter[str], Counter[str]]:
    """Samples per part of the daemon, from py-spy's raw output: the main thread's (the
    event loop), and the other threads' (the store's writer and readers)."""
    main: Counter[str] = Counter()
    others: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            side = others if stack.startswith("Thread._bootstrap") else main
            side[owner(frames(stack))] += int(count)
    return main, others


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user+system) of each thread of ``pid`` (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            raw = Path(f"/proc/{pid}/task/{task}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2:].split()
        found[int(task)] = (int(fields[11]) + int(fields[12])) / ticks
    return found


def modules(raw: Path) -> Counter[str]:
    """Samples per module of the leaf frame (the self time), for the curious."""
    counts: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        files = frames(stack)
        if files and count.isdigit():
            counts[files[-1]] += int(count)
    return counts


def stages(lines: Iterable[str]) -> tuple[int, dict[str, float], float]:
    """From the daemon's JSON log: how many ``message`` lines of inbound mail, each stage's
    mean milliseconds over them, and the mean whole (DATA to reply, as the line says)."""
    total: Counter[str] = Counter()
    count = 0
    whole = 0.0
    for line in lines:
        if '"message"' not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") != "message" or event.get("direction") != "inbound":
            continue
        count += 1
        whole += float(event.get("ms", 0.0))
        for stage, ms in (event.get("stages") or {}).items():
            total[stage] += float(ms)
    if not count:
        return 0, {}, 0.0
    return count, {stage: ms / count for stage, ms in total.items()}, whole / count
