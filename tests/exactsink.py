"""A next hop that records the envelope exactly as it came over the wire.

aiosmtpd hands its handler addresses parsed as headers (RFC 2047 words decoded,
needless quotes dropped), so the plain ``Sink`` cannot tell whether mailflow
relayed ``=?UTF-16?B?//492Enc?=@example.org`` or ``👉@example.org``. This one
keeps the text of each accepted MAIL and RCPT command, and whether SMTPUTF8
was asked for.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from conftest import Sink

_PATH = re.compile(r"(?:FROM|TO):<(.*)>((?: +\S+)*) *", re.IGNORECASE)


def path_of(arg: str) -> str:
    """The address in ``FROM:<address> PARAMS`` or ``TO:<address>``, as written."""
    match = _PATH.fullmatch(arg.strip())
    assert match is not None, arg
    return match.group(1)


@dataclass
class ExactReceived:
    mail_from: str  # as on the wire, '' for the null sender
    rcpt_tos: list[str]
    smtputf8: bool
    data: bytes


class _RecordingSMTP(SMTP):
    async def smtp_MAIL(self, arg: str) -> None:
        await super().smtp_MAIL(arg)
        if self.envelope is not None and self.envelope.mail_from:
            self.envelope.wire_mail = arg  # type: ignore[attr-defined]

    async def smtp_RCPT(self, arg: str) -> None:
        before = len(self.envelope.rcpt_tos) if self.envelope is not None else 0
        await super().smtp_RCPT(arg)
        if self.envelope is not None and len(self.envelope.rcpt_tos) > before:
            wire: list[str] = getattr(self.envelope, "wire_rcpts", [])
            wire.append(arg)
            self.envelope.wire_rcpts = wire  # type: ignore[attr-defined]


@dataclass
class _Handler:
    messages: list[ExactReceived] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        mail = getattr(envelope, "wire_mail", "FROM:<>")
        with self.lock:
            self.messages.append(ExactReceived(
                path_of(mail), [path_of(r) for r in getattr(envelope, "wire_rcpts", [])],
                bool(envelope.smtp_utf8), envelope.original_content or b""))
        return "250 2.0.0 Ok"


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _RecordingSMTP(self.handler, **self.SMTP_kwargs)


class ExactSink(Sink):
    """Stands where ``conftest.Sink`` does (its ``port``, ``messages``, ``wait_for``),
    recording wire envelopes."""

    def __init__(self) -> None:
        super().__init__()
        self.handler = _Handler()  # type: ignore[assignment]
        self.exact = _Controller(self.handler, hostname="127.0.0.1", port=self.port,
                                 decode_data=False, enable_SMTPUTF8=True)

    def start(self) -> None:
        self.exact.start()

    def stop(self) -> None:
        self.exact.stop()


@pytest.fixture(name="sink")
def exact_sink() -> Iterator[ExactSink]:
    """The ``sink`` of a module that imports it, so ``daemon_factory`` relays to it."""
    s = ExactSink()
    s.start()
    yield s
    s.stop()
