#!/usr/bin/env python3
"""A lean SMTP load client: pre-rendered messages over N concurrent sessions.

It shares the machine's cores with the server it measures, so it does as little as
it can per message: raw asyncio streams (on uvloop when installed), the DATA bytes
dot-stuffed once before the clock starts, one reply read per command, one timeout
per message. For each message it keeps the reply code to the final ``.`` and the
latency from the end of DATA to that reply. One message per connection by default
(as Postfix's smtp-source does), or several (``per_connection``).

A follow-up or a copy (``Outgoing.after``) waits for the reply to the message it
refers to, so it reaches the daemon after its parent whatever the concurrency.

    .venv/bin/python bench/load.py FOLDER --port 2525 [--sessions 20]
    (FOLDER as bench/mailgen.py writes it; 127.0.0.1 only)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import HOST, split_evenly

CRLF = b"\r\n"
NO_REPLY = 0  # the code kept for a message whose DATA got no reply (error, timeout)


@dataclass(frozen=True)
class Outgoing:
    """One message, ready for the wire: its commands and its dot-stuffed DATA."""

    mail: bytes  # b"MAIL FROM:<…>[ BODY=8BITMIME]\r\n"
    rcpts: tuple[bytes, ...]  # b"RCPT TO:<…>\r\n" each
    data: bytes  # dot-stuffed, ending with CRLF.CRLF
    after: int | None = None  # the index of a message whose reply must come first


def outgoing(mail_from: str, rcpt_to: Sequence[str], message: bytes, eight_bit: bool = False,
             after: int | None = None) -> Outgoing:
    """CRLF line ends, leading dots doubled, the final dot: the DATA payload as sent."""
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    body = CRLF.join(b"." + line if line.startswith(b".") else line for line in lines)
    option = b" BODY=8BITMIME" if eight_bit else b""
    return Outgoing(b"MAIL FROM:<" + mail_from.encode() + b">" + option + CRLF,
                    tuple(b"RCPT TO:<" + rcpt.encode() + b">" + CRLF for rcpt in rcpt_to),
                    body + b"\r\n.\r\n", after)


@dataclass
class Outcome:
    """What the server answered: a code and a latency (seconds) for each message."""

    codes: list[int]
    latencies: list[float]  # NaN where DATA got no reply
    seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)

    def count(self, first_digit: int) -> int:
        return sum(1 for code in self.codes if code // 100 == first_digit)

    @property
    def no_reply(self) -> int:
        return sum(1 for code in self.codes if code == NO_REPLY)

    def percentile(self, fraction: float) -> float | None:
        """The latency at ``fraction`` (0.5, 0.99) of the replies, nearest rank."""
        values = sorted(v for v in self.latencies if not math.isnan(v))
        if not values:
            return None
        return values[min(len(values) - 1, max(0, math.ceil(fraction * len(values)) - 1))]


class SmtpFailure(Exception):
    """The server answered a command with something else than expected."""


class Load:
    """Sends ``messages`` to ``ports``: message i to port i mod n, each port's share by
    its own sessions (the sessions split evenly over the ports), in order."""

    def __init__(self, messages: Sequence[Outgoing], ports: Sequence[int], sessions: int,
                 per_connection: int = 1, timeout: float = 60.0,
                 total: float | None = None) -> None:
        self.messages = messages
        self.total = total  # seconds for the whole run; None: each message's bound only
        self.ports = list(ports)
        self.sessions = sessions
        self.per_connection = max(1, per_connection)
        self.timeout = timeout
        self.outcome = Outcome([NO_REPLY] * len(messages), [math.nan] * len(messages))
        self.done: dict[int, asyncio.Event] = {}

    async def run(self) -> Outcome:
        self.done = {m.after: asyncio.Event() for m in self.messages if m.after is not None}
        queues = [deque(range(i, len(self.messages), len(self.ports)))
                  for i in range(len(self.ports))]
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.total), asyncio.TaskGroup() as group:
                for port, queue, count in zip(self.ports, queues,
                                              split_evenly(self.sessions, len(self.ports)),
                                              strict=True):
                    for _ in range(max(1, min(count, len(queue))) if queue else 0):
                        group.create_task(self.session(port, queue))
        except TimeoutError:
            self.outcome.errors[f"the whole run timed out after {self.total:.0f}s"] += 1
        self.outcome.seconds = time.perf_counter() - started
        return self.outcome

    async def session(self, port: int, queue: deque[int]) -> None:
        """Connections one after the other, each for up to ``per_connection`` messages,
        until the queue is empty: every message is tried once."""
        while queue:
            index = queue.popleft()
            await self.ready(index)
            batch = [index]
            writer = None
            try:
                async with asyncio.timeout(self.timeout):
                    reader, writer = await asyncio.open_connection(HOST, port)
                    writer.transport.set_write_buffer_limits(high=0)  # drain = all handed over
                    await expect(reader, 220)
                    writer.write(b"EHLO load.bench\r\n")
                    await expect(reader, 250)
                await self.send(reader, writer, index)
                while len(batch) < self.per_connection and queue:
                    index = queue.popleft()
                    batch.append(index)
                    await self.ready(index)
                    async with asyncio.timeout(self.timeout):
                        writer.write(b"RSET\r\n")
                        await expect(reader, 250)
                    await self.send(reader, writer, index)
                with contextlib.suppress(OSError, SmtpFailure, TimeoutError):
                    async with asyncio.timeout(self.timeout):
                        writer.write(b"QUIT\r\n")
                        await expect(reader, 221)
            except (OSError, ValueError, SmtpFailure, TimeoutError, EOFError) as exc:
                self.outcome.errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
            finally:
                for done in batch:
                    if done in self.done:
                        self.done[done].set()
                if writer is not None:
                    writer.close()

    async def ready(self, index: int) -> None:
        after = self.messages[index].after
        if after is not None:
            await self.done[after].wait()

    async def send(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   index: int) -> None:
        """One transaction; its code kept, and its latency if DATA got a reply."""
        message = self.messages[index]
        async with asyncio.timeout(self.timeout):
            writer.write(message.mail)
            await expect(reader, 250)
            for rcpt in message.rcpts:
                writer.write(rcpt)
                await expect(reader, 250)
            writer.write(b"DATA\r\n")
            await expect(reader, 354)
            writer.write(message.data)
            await writer.drain()
            sent = time.perf_counter()
            code = await reply(reader)
            self.outcome.latencies[index] = time.perf_counter() - sent
            self.outcome.codes[index] = code
            if code // 100 != 2:
                self.outcome.errors[f"DATA answered {code}"] += 1
        if index in self.done:
            self.done[index].set()


async def reply(reader: asyncio.StreamReader) -> int:
    """The code of the next reply, its continuation lines read through."""
    while True:
        line = await reader.readuntil(CRLF)
        if line[3:4] != b"-":
            return int(line[:3])


async def expect(reader: asyncio.StreamReader, wanted: int) -> None:
    code = await reply(reader)
    if code != wanted:
        raise SmtpFailure(f"expected {wanted}, got {code}")


def run(messages: Sequence[Outgoing], ports: Sequence[int], sessions: int,
        per_connection: int = 1, timeout: float = 60.0, total: float | None = None) -> Outcome:
    """``Load(…).run()`` on its own event loop: uvloop's when installed."""
    load = Load(messages, ports, sessions, per_connection, timeout, total)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(load.run())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(load.run())


def main(argv: Sequence[str] | None = None) -> int:
    import mailgen

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("folder", type=Path, help="written by bench/mailgen.py")
    parser.add_argument("--port", type=int, action="append", required=True,
                        help=f"an SMTP port on {HOST} (repeat for several servers)")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--per-connection", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a message")
    args = parser.parse_args(argv)
    mails = mailgen.read(args.folder)
    messages = [outgoing(m.label.mail_from, [m.label.rcpt_to], m.data, m.label.eight_bit,
                         m.label.parent) for m in mails]
    outcome = run(messages, args.port, args.sessions, args.per_connection, args.timeout)
    p50, p99 = outcome.percentile(0.5), outcome.percentile(0.99)
    print(f"{len(messages)} messages in {outcome.seconds:.2f}s "
          f"({len(messages) / outcome.seconds:.1f} msg/s): {outcome.count(2)} 2xx, "
          f"{outcome.count(4)} 4xx, {outcome.count(5)} 5xx, {outcome.no_reply} no reply; "
          f"latency p50 {1000 * (p50 or 0):.1f} ms, p99 {1000 * (p99 or 0):.1f} ms")
    for error, count in outcome.errors.most_common(5):
        print(f"  {count} x {error}")
    return 0 if outcome.count(2) == len(messages) else 1


if __name__ == "__main__":
    sys.exit(main())
