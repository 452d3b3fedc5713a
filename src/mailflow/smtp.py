"""The listening side: aiosmtpd, tightened for a server facing the internet.

Adds to aiosmtpd what a mail administrator expects of an MTA: a cap on
sessions (in all and per client), long lines accepted up to a configured
limit, enhanced status codes, XFORWARD, a 421 for each session a shutdown
cuts. What each command does (relay control, plugin hooks, the pipeline after
DATA, a 4xx rather than a 5xx or a silent drop when anything inside goes
wrong) is :mod:`mailflow.smtp_handler`'s.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Any, AnyStr

import structlog
from aiosmtpd.smtp import MISSING, SMTP, Session, syntax

from mailflow.smtp_data import read_data
from mailflow.smtp_paths import parse_path
from mailflow.smtp_sessions import LAST_WORD, SHUTTING_DOWN, SessionLimits

if TYPE_CHECKING:
    from mailflow.config import Settings
    from mailflow.smtp_handler import Handler

log = structlog.get_logger("mailflow.smtp")

TIMEOUT_GRACE = 1.0  # seconds a session closed for idleness has to go before it is aborted
#: what aiosmtpd 1.4.6 answers to a message over the limit, declared (SIZE=) or sent
_TOO_BIG = frozenset({"552 Error: message size exceeds fixed maximum message size",
                      "552 Error: Too much mail data"})
#: the attributes aiosmtpd's constructor looks for on the protocol and on its handler
LOOKED_UP = ("smtp_", "auth_", "handle_")


_NAMES: dict[type, list[str]] = {}


def looked_up_names(cls: type) -> list[str]:
    """The names of ``cls``'s commands, AUTH mechanisms and hooks, listed once."""
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = [name for name in dir(cls) if name.startswith(LOOKED_UP)]
    return names


class ListsItsHooks:
    """What aiosmtpd lists for each new session, listed once per class.

    aiosmtpd's constructor finds commands, AUTH mechanisms and hooks by reading every
    attribute of the protocol and of the handler (``inspect.getmembers``, ``dir``): about
    0.3 ms a session, 3 % of a message's CPU. They are methods of the class, so ``dir``
    here gives only them (the tests compare with the full listing)."""

    def __dir__(self) -> list[str]:
        return looked_up_names(type(self))


class MailflowSMTP(ListsItsHooks, SMTP):
    """aiosmtpd's protocol with session caps, a configurable line length, enhanced status
    codes where aiosmtpd gives none, and a 421 for each session cut by a shutdown."""

    def __init__(self, handler: Handler, settings: Settings, limits: SessionLimits,
                 tls_context: ssl.SSLContext | None, submission: bool = False) -> None:
        self.submission = submission  # read by _create_session, called by SMTP.__init__
        smtp = settings.smtp
        # read by SMTP.__init__ to size its StreamReader: lines up to this length pass
        self.line_length_limit = smtp.max_line_length
        super().__init__(
            handler,
            data_size_limit=smtp.max_message_size,
            enable_SMTPUTF8=smtp.smtputf8,
            decode_data=False,
            hostname=smtp.hostname,
            ident="mailflow ESMTP",
            timeout=smtp.idle_timeout,
            tls_context=tls_context,
            require_starttls=smtp.require_tls and tls_context is not None,
            auth_require_tls=True,
        )
        self._limits = limits
        self._admitted: str | None = None
        self._processing = False  # the client's DATA has ended: the message is ours
        self._closing = False  # shutting down: close once the message's reply is sent
        #: RFC 1870 wants the limit in the reply; RFC 3463 5.3.4 "message too big"
        self._too_big = (f"552 5.3.4 Message size exceeds fixed limit"
                         f" ({smtp.max_message_size} bytes)")

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """Envelope addresses byte for byte (aiosmtpd would decode them as headers)."""
        return parse_path(arg, self.local_part_limit)

    def _create_session(self) -> Session:
        session = super()._create_session()
        session.mailflow_submission = self.submission  # type: ignore[attr-defined]
        return session

    async def push(self, status: AnyStr) -> None:
        if status in _TOO_BIG:
            log.info("message_too_big", peer=self._admitted, limit=self.data_size_limit)
            await super().push(self._too_big)
        else:
            await super().push(status)

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        if command == "DATA":  # the final dot was read: a shutdown now waits for the reply
            self._processing = True
        return await super()._call_handler_hook(command, *args)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        try:
            await self._data(arg)
        finally:
            self._processing = False
        if self._closing:
            self._last_word()

    async def _data(self, arg: str) -> None:
        """aiosmtpd's DATA, the message read by :func:`mailflow.smtp_data.read_data`."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            data = await read_data(self._reader, self.data_size_limit, self.line_length_limit)
        except asyncio.CancelledError:
            log.info("session_lost", peer=self._admitted, during="DATA")
            self._writer.close()
            raise
        except asyncio.IncompleteReadError:  # the client closed mid-message
            self._writer.close()
            return
        if data.refusal is not None:
            await self.push(data.refusal)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        self.envelope.content = self.envelope.original_content = data.content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    # -- shutdown ----------------------------------------------------------------

    def shut_down(self, now: bool = False) -> None:
        """The daemon stops: 421 and close, unless the message is being processed
        (and not ``now``): then after its reply."""
        if self._processing and not now:
            self._closing = True
        else:
            self._goodbye()

    def _last_word(self) -> None:
        """After the reply to a message finished while stopping: QUIT gets its 221,
        anything else 421, and silence 421 after LAST_WORD seconds."""
        self._smtp_methods = {name: method if name == "QUIT" else self._refuse
                              for name, method in self._smtp_methods.items()}
        self.loop.call_later(LAST_WORD, self._goodbye)

    async def _refuse(self, _arg: str | None) -> None:
        self._goodbye()

    def _goodbye(self) -> None:
        transport = self.transport
        if self._admitted is None or transport is None or transport.is_closing():
            return
        log.info("session_closed", peer=self._admitted, reason="shutting down")
        self._writer.write(SHUTTING_DOWN.encode() + b"\r\n")
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()  # half-read DATA is dropped, never processed
        transport.close()

    @syntax("XFORWARD attribute=value ...")
    async def smtp_XFORWARD(self, arg: str) -> None:
        """Postfix telling who its client was (see :mod:`mailflow.xforward`)."""
        assert self.session is not None and self.envelope is not None
        handler: Handler = self.event_handler
        await self.push(handler.xforward(self.session, self.envelope, arg))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._admitted is None and getattr(self, "_original_transport", None) is None:
            peer = transport.get_extra_info("peername")
            client = str(peer[0]) if peer else "?"
            refusal = self._limits.admit(client)
            if refusal is not None:
                log.warning("session_refused", peer=client, reply=refusal)
                transport.write(refusal.encode() + b"\r\n")  # type: ignore[attr-defined]
                transport.close()
                return
            self._admitted = client
            self._limits.sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._admitted is None:
            return  # refused at connect: aiosmtpd never started this session
        self._limits.release(self._admitted)
        self._limits.sessions.discard(self)
        self._admitted = None
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self._admitted is None:
            return None
        super().eof_received()  # cancels aiosmtpd's session coroutine: the session is over
        # so close the transport (False), or nothing ever does: with uvloop, a client
        # gone before its greeting (a TCP health check) kept its session slot forever
        return False

    def _timeout_cb(self) -> None:
        super()._timeout_cb()  # type: ignore[no-untyped-call]  # a polite close: it waits until our pending replies are sent
        # ...for ever if the client never reads them, and a client stalled in the TLS
        # handshake never gets connection_lost at all: both kept their session slot
        self.loop.call_later(TIMEOUT_GRACE, self._force_close)

    def _force_close(self) -> None:
        if self._admitted is None:
            return  # the polite close did it
        log.info("session_aborted", peer=self._admitted, reason="idle timeout")
        for transport in (self._original_transport, self.transport):
            if transport is not None:
                transport.abort()  # type: ignore[attr-defined]
        self.loop.call_soon(self._lost_anyway)

    def _lost_anyway(self) -> None:
        if self._admitted is not None:  # aborted mid-handshake: nobody else will tell us
            self.connection_lost(None)
