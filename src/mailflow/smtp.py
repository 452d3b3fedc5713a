"""The listening side: aiosmtpd, tightened for a server facing the internet.

Adds to aiosmtpd what a mail administrator expects of an MTA: a cap on
sessions (in all and per client), long lines accepted up to a configured
limit, no relaying for strangers, addresses that cannot smuggle commands,
plugin hooks at each SMTP stage, and a 4xx (never a 5xx or a silent drop)
when anything inside goes wrong.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, AnyStr

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException, syntax

from mailflow import xforward
from mailflow.intake import relay_refusal
from mailflow.message import Envelope as MailEnvelope
from mailflow.plugins import call_each
from mailflow.relay import check_address
from mailflow.session import SessionInfo, SmtpReply
from mailflow.smtp_paths import parse_path
from mailflow.smtp_sessions import LAST_WORD, SHUTTING_DOWN, SessionLimits

if TYPE_CHECKING:
    import pluggy

    from mailflow.config import Settings
    from mailflow.metrics import Metrics
    from mailflow.pipeline import Outcome, Pipeline
    from mailflow.rules import RuleSet

log = structlog.get_logger("mailflow.smtp")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
HOOK_TIMEOUT = 10.0  # seconds an SMTP-stage hook may take before the command is tempfailed
TIMEOUT_GRACE = 1.0  # seconds a session closed for idleness has to go before it is aborted
#: what aiosmtpd 1.4.6 answers to a message over the limit, declared (SIZE=) or sent
_TOO_BIG = frozenset({"552 Error: message size exceeds fixed maximum message size",
                      "552 Error: Too much mail data"})


def unsendable(address: str) -> bool:
    """True for an address the relay could not put on the next hop's command line as it is
    (control characters, bytes that are not UTF-8, what aiosmtplib refuses or rewrites):
    refused at once with a 5xx, rather than accepted then tempfailed after DATA for ever."""
    if _CONTROL.search(address):
        return True
    try:
        check_address(address)
    except ValueError:
        return True
    return False


def _as_text(name: str) -> str:
    """A HELO name with bytes that were not UTF-8 (lone surrogates) made U+FFFD."""
    return name if name.isascii() else name.encode("utf-8", "surrogateescape").decode(
        "utf-8", "replace")


def envelope_from_session(mail_from: str | None, rcpt_to: Sequence[str],
                          mail_options: Sequence[str], peer: str, helo: str) -> MailEnvelope:
    """The pipeline's envelope from aiosmtpd's (whose null sender is spelled "<>")."""
    sender = "" if mail_from in (None, "<>") else mail_from
    return MailEnvelope(mail_from=sender, rcpt_to=tuple(rcpt_to),
                        mail_options=tuple(mail_options), peer=peer, helo=helo)


class MailflowSMTP(SMTP):
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

    async def smtp_DATA(self, arg: str) -> None:
        try:
            await super().smtp_DATA(arg)
        finally:
            self._processing = False
        if self._closing:
            self._last_word()

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


class Handler:
    """aiosmtpd handler: plugin hooks at each stage, the pipeline after DATA."""

    def __init__(self, settings: Settings, pm_of: Callable[[], pluggy.PluginManager],
                 rules_of: Callable[[], RuleSet], pipeline: Pipeline, metrics: Metrics,
                 options_of: Callable[[], Mapping[str, object]] = dict,
                 host: object = None) -> None:
        self.settings = settings
        self._pm_of = pm_of
        self._options_of = options_of  # plugin name -> its validated rules section
        self._host = host
        self._rules_of = rules_of
        self.pipeline = pipeline
        self.metrics = metrics
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self._networks = settings.networks  # parsed once, not per session

    # -- helpers --------------------------------------------------------------

    def info(self, session: Session) -> SessionInfo:
        """The plugin-facing view of a session, kept on aiosmtpd's own Session."""
        info: SessionInfo | None = getattr(session, "mailflow", None)
        if info is None:
            peer = session.peer if isinstance(session.peer, tuple) else ("", 0)
            address = str(peer[0])
            trusted = SessionInfo.in_networks(address, self._networks)
            info = SessionInfo(peer=address, port=int(peer[1]) if len(peer) > 1 else 0,
                               trusted=trusted, relay_trusted=trusted, via=address,
                               submission=getattr(session, "mailflow_submission", False))
            session.mailflow = info  # type: ignore[attr-defined]
        info.tls = session.ssl is not None
        return info

    async def _greet(self, info: SessionInfo, hostname: str) -> str | None:
        """Connect and HELO hooks; aiosmtpd has no connect hook, and HELO comes first."""
        if info.refusal is None and not info.greeted:
            info.refusal = await self._ask("mailflow_connect", session=info)
            info.greeted = True
            if info.refusal:
                self.metrics.rejections.labels(reason="connect").inc()
        if info.refusal:
            return info.refusal
        refusal = await self._ask("mailflow_helo", session=info, hostname=hostname)
        return self._refused("helo", refusal) if refusal else None

    async def _ask(self, hook: str, **kwargs: Any) -> str | None:
        """Ask the plugins; a hook that hangs or raises tempfails the command."""
        try:
            async with asyncio.timeout(HOOK_TIMEOUT):
                results = await call_each(self._pm_of(), hook, self._options_of(), self._host,
                                          **kwargs)
        except TimeoutError:
            log.error("hook_timeout", hook=hook, seconds=HOOK_TIMEOUT)
            return "451 4.3.0 Temporary failure, try again later"
        except Exception:
            log.exception("hook_failed", hook=hook)
            return "451 4.3.0 Temporary failure, try again later"
        for result in results:
            if isinstance(result, SmtpReply):
                return str(result)
            if result is not None:
                log.warning("hook_bad_result", hook=hook, result=repr(result)[:100])
        return None

    def xforward(self, session: Session, envelope: Envelope, arg: str) -> str:
        """The reply to XFORWARD: taken from trusted networks only, between transactions."""
        info = self.info(session)
        if not info.relay_trusted:
            log.warning("xforward_refused", peer=info.via, reason="not a trusted network")
            return self._refused("xforward", xforward.NOT_TRUSTED_REPLY)
        if envelope.mail_from is not None:
            return xforward.IN_TRANSACTION_REPLY
        try:
            told = xforward.parse(arg, info.forwarded)
        except xforward.XforwardError as exc:
            log.warning("xforward_refused", peer=info.via, reason=str(exc))  # not the value
            return self._refused("xforward", str(exc))
        info.forward(told, self._networks)
        return "250 2.0.0 Ok"

    def _refused(self, reason: str, reply: str) -> str:
        self.metrics.rejections.labels(reason=reason).inc()
        return reply

    # -- aiosmtpd hooks --------------------------------------------------------

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        info = self.info(session)
        hostname = _as_text(hostname)  # it goes into the Received header
        refusal = await self._greet(info, hostname)
        if refusal:
            return [refusal]
        session.host_name = hostname
        info.helo = info.via_helo = hostname
        if info.relay_trusted:  # the MTA in front may tell us who its client was
            responses.insert(len(responses) - 1, f"250-{xforward.EHLO_KEYWORD}")
        return responses

    async def handle_HELO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str) -> str:
        info = self.info(session)
        hostname = _as_text(hostname)  # it goes into the Received header
        refusal = await self._greet(info, hostname)
        if refusal:
            return refusal
        session.host_name = hostname
        info.helo = info.via_helo = hostname
        return f"250 {server.hostname}"

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        info = self.info(session)
        # aiosmtpd (via email's parser) spells the null sender "<>": hooks and the
        # pipeline see "", aiosmtpd's envelope keeps "<>" (it needs a truthy sender)
        if address == "<>":
            address = ""
        if address and unsendable(address):
            return self._refused("bad_address", "501 5.1.7 Bad sender address syntax")
        refusal = await self._ask("mailflow_mail_from", session=info, address=address)
        if refusal:
            return self._refused("mail_from", refusal)
        info.mail_from = address
        info.rcpt_to = []
        envelope.mail_from = address or "<>"
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        info = self.info(session)
        if unsendable(address):
            return self._refused("bad_address", "501 5.1.3 Bad recipient address syntax")
        if len(envelope.rcpt_tos) >= self.settings.smtp.max_recipients:
            return self._refused("too_many_recipients", "452 4.5.3 Too many recipients")
        # relay control is the connecting client's: behind Postfix, Postfix already
        # checked the recipients, and mailflow must not refuse what it accepted
        refusal = relay_refusal(address, self._rules_of(), info.relay_trusted)
        if refusal:
            log.info("relay_denied", peer=info.peer, rcpt=address, mail_from=info.mail_from)
            return self._refused("relay_denied", refusal)
        refusal = await self._ask("mailflow_rcpt_to", session=info, address=address)
        if refusal:
            return self._refused("rcpt_to", refusal)
        info.rcpt_to.append(address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.info(session).end_transaction()
        return "250 2.0.0 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        info = self.info(session)
        mail_env = envelope_from_session(envelope.mail_from, envelope.rcpt_tos,
                                         envelope.mail_options, info.peer, info.helo)
        raw = envelope.original_content or b""
        try:
            return await self._guarded(self.pipeline.process(raw, mail_env, info.trusted,
                                                             submission=info.submission))
        finally:
            info.end_transaction()

    async def _guarded(self, work: Awaitable[Outcome]) -> str:
        """Count the message in flight and turn any failure into a 4xx."""
        self.in_flight += 1
        self.idle.clear()
        try:
            outcome = await work
            return outcome.reply
        except Exception:
            log.exception("message_failed")
            return "451 4.3.0 Internal error, try again later"
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.idle.set()

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):  # the client's failed handshake, not ours
            log.warning("tls_handshake_failed", error=repr(error.__cause__ or error))
            return "421 4.7.0 TLS handshake failed"  # aiosmtpd closes without sending it
        log.error("smtp_session_error", error=repr(error), exc_info=error)
        return "451 4.3.0 Internal error, try again later"
