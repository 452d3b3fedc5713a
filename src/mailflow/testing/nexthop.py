"""A real next hop for tests: an aiosmtpd server on a free loopback port that keeps what it
gets, standing in for the company's mail server (or Postfix behind mailflow).

Its answers are the test's to choose: ``250`` (the default), a 4xx or a 5xx to DATA
or to one recipient, or a connection dropped after the data, as a next hop that
vanishes would. Nothing here talks beyond 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as AioSMTP
from aiosmtpd.smtp import Envelope, Session

#: ports a test picks from: below Linux's ephemeral range (32768-60999), where the
#: kernel takes the source ports of outgoing connections, so a port found free stays free
#: until the server binds it; one slice per parallel test worker (pytest-xdist's gwN)
PORTS_LOW, PORTS_HIGH = 20000, 32000


def free_port() -> int:
    """A loopback port nothing listens on, from this test worker's own slice."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    slices = 8
    index = int(worker) % slices if worker.isdigit() else 0
    size = (PORTS_HIGH - PORTS_LOW) // slices
    low = PORTS_LOW + index * size
    for _ in range(200):
        port = random.randint(low, low + size - 1)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{low + size - 1}")


def wait_for_port(port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None
                  ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open within {timeout}s")


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class SinkHandler:
    """A next hop whose answer the test chooses: 250, a 4xx or a 5xx."""

    messages: list[Received] = field(default_factory=list)
    data_reply: str = "250 2.0.0 Ok"
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: this many messages are taken, then the connection dropped before the answer
    vanish_after_data: int = 0

    async def handle_RCPT(self, server: AioSMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: AioSMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply.startswith("250"):
            with self.lock:
                self.messages.append(Received(envelope.mail_from or "", list(envelope.rcpt_tos),
                                              envelope.original_content or b""))
        if self.vanish_after_data > 0:  # it has the message, but will never say so
            self.vanish_after_data -= 1
            assert server.transport is not None
            server.transport.abort()  # type: ignore[attr-defined]
            await asyncio.sleep(3600)  # cancelled with the session
        return self.data_reply


class _LongLineSMTP(AioSMTP):
    line_length_limit = 1 << 20


class _LongLineController(Controller):
    def factory(self) -> AioSMTP:
        return _LongLineSMTP(self.handler, **self.SMTP_kwargs)


class Sink:
    """An aiosmtpd server on a free loopback port, standing in for the company mail server.

    ``long_lines``: take lines longer than RFC 5321's 1,000 octets, as Postfix and
    Exchange do (aiosmtpd alone answers 500 past 1,001).
    """

    def __init__(self, long_lines: bool = False) -> None:
        self.port = free_port()
        self.handler = SinkHandler()
        self.long_lines = long_lines
        self.controller: Controller | None = None

    def start(self) -> None:
        controller = _LongLineController if self.long_lines else Controller
        self.controller = controller(self.handler, hostname="127.0.0.1", port=self.port,
                                     decode_data=False, enable_SMTPUTF8=True,
                                     data_size_limit=None)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def reset(self) -> None:
        """Back to a fresh sink on the same port: nothing received, answers 250, running."""
        if self.long_lines:
            self.stop()
            self.long_lines = False
        self.handler = SinkHandler()
        self.stop()
        self.start()

    @property
    def messages(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.messages)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.messages) >= count:
                return self.messages
            time.sleep(0.05)
        raise AssertionError(f"expected {count} message(s) at the next hop, "
                             f"got {len(self.messages)}")




#: the name plugin authors meet it by: the capturing next hop
NextHop = Sink
