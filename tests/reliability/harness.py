"""Shared pieces of the reliability scenarios: rules, a faulty next hop, checks."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.smtp import SMTP as AioSMTP
from aiosmtpd.smtp import Envelope, Session
from loadgen import Copy, Figures, Mail, copies

import conftest
from conftest import FULL_CHAIN, Received, Sink, SinkHandler


def full_chain_rules(tmp_path: Path, extra_chain: str | None = None) -> Path:
    """The shipped rules with the full chain, and acknowledgement limits a load can't reach."""
    limits = {"per_case": 1, "per_address_per_day": 5, "global_per_minute": 1_000_000,
              "global_per_hour": 1_000_000}
    return conftest.full_chain_rules(tmp_path / "rules-full", extra_chain or FULL_CHAIN,
                                     acknowledge={"limits": limits})


@dataclass
class FaultySinkHandler(SinkHandler):
    """The next hop, with a fault the test switches on and off.

    ``refuse``: 451 after the data; ``slow``: answer only after ``slow_seconds``
    (longer than mailflow's relay timeout, so mailflow gives up and drops the
    connection first; like a real MTA, the message is then not taken: aiosmtpd
    cancels this handler when the connection is lost). ``arrivals`` holds the
    time (``time.monotonic()``) each message was taken, in step with ``messages``.
    """

    mode: str = "ok"
    slow_seconds: float = 6.0
    faulted: int = 0
    arrivals: list[float] = field(default_factory=list)
    #: called as each message is taken, before the 250; forgotten once it returns True
    on_data: Callable[[Envelope], bool] | None = None

    async def handle_DATA(self, server: AioSMTP, session: Session, envelope: Envelope) -> str:
        if self.on_data is not None and self.on_data(envelope):
            self.on_data = None
        if self.mode == "refuse":
            self.faulted += 1
            return "451 4.3.0 Busy, try again later (fault injection)"
        if self.mode == "slow":
            self.faulted += 1
            await asyncio.sleep(self.slow_seconds)
        with self.lock:  # taken and answered with no await in between
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                          envelope.original_content or b""))
            self.arrivals.append(time.monotonic())
        return "250 2.0.0 Ok"


def faulty_sink(sink: Sink) -> FaultySinkHandler:
    """Swap the sink's handler for a faulty one (same port)."""
    sink.stop()
    handler = FaultySinkHandler()
    sink.handler = handler
    sink.start()
    return handler


def acks_by_original(found: list[Copy]) -> dict[str, list[Copy]]:
    """Acknowledgements at the next hop, by the Message-ID they answer."""
    acks: dict[str, list[Copy]] = {}
    for c in found:
        if c.is_ack:
            original = c.headers.get("in-reply-to", "").strip("<>")
            acks.setdefault(original, []).append(c)
    return acks


def assert_no_loss(figures: Figures, mails: list[Mail], *, all_delivered: bool = True) -> None:
    assert figures.corrupted == 0, figures
    assert figures.lost == 0, figures
    assert figures.duplicated == 0, figures
    assert figures.unacknowledged_but_delivered == 0, figures
    assert figures.final_5xx == 0, [m.attempts for m in mails if m.outcome == "5xx"][:3]
    if all_delivered:
        stuck = [(m.message_id, m.attempts[-3:]) for m in mails if not m.accepted]
        assert not stuck, stuck[:3]


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())




def healthz(port: int, timeout: float = 3.0) -> int:
    """The status of GET /healthz (0 when the endpoint does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


class HealthPoller:
    """Polls /healthz every ``interval`` seconds in a thread: [(time.monotonic(), status)]."""

    def __init__(self, port: int, interval: float = 0.2) -> None:
        self.port = port
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), healthz(self.port)))
            self._stop.wait(self.interval)

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def between(self, start: float, end: float) -> list[int]:
        return [code for t, code in list(self.samples) if start <= t <= end]


def wait_for_acks(sink: Sink, mails: list[Mail], timeout: float) -> bool:
    """Wait until every message of ``mails`` has an acknowledgement at the next hop."""
    def acked() -> bool:
        acks = acks_by_original(copies(sink.messages))
        return all(m.message_id in acks for m in mails)
    return wait_until(acked, timeout, step=0.25)
