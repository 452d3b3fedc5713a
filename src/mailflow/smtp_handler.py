"""The SMTP commands' side of mailflow: plugin hooks at each stage, the pipeline after DATA.

aiosmtpd awaits ``handle_EHLO`` … ``handle_DATA`` of this duck-typed handler
(:mod:`mailflow.smtp` is the protocol side): no relaying for strangers, no
address that could smuggle a command, each plugin's hook with its own rules
section, and after DATA the pipeline, under a guard that answers a 4xx, never
a 250, when anything inside goes wrong.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException

from mailflow import xforward
from mailflow.intake import relay_refusal
from mailflow.message import Envelope as MailEnvelope
from mailflow.plugins import call_each
from mailflow.relay import check_address
from mailflow.session import SessionInfo, SmtpReply
from mailflow.smtp import ListsItsHooks

if TYPE_CHECKING:
    import pluggy

    from mailflow.config import Settings
    from mailflow.metrics import Metrics
    from mailflow.pipeline import Outcome, Pipeline
    from mailflow.rules import RuleSet

log = structlog.get_logger("mailflow.smtp")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
HOOK_TIMEOUT = 10.0  # seconds an SMTP-stage hook may take before the command is tempfailed


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


class Handler(ListsItsHooks):
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
        """Ask the plugins; a hook that hangs or raises tempfails the command. A hook no
        plugin implements (the shipped stages implement none) costs nothing: no timer."""
        try:
            pm = self._pm_of()
            if not getattr(pm.hook, hook).get_hookimpls():
                return None
            async with asyncio.timeout(HOOK_TIMEOUT):
                results = await call_each(pm, hook, self._options_of(), self._host, **kwargs)
        except TimeoutError:
            log.error("hook_timeout", hook=hook, seconds=HOOK_TIMEOUT)
            return "451 4.3.0 Temporary failure, try again later"
        except Exception:
            log.exception("hook_failed", hook=hook)
            return "451 4.3.0 Temporary failure, try again later"
        for result in results:
            if isinstance(result, SmtpReply):
                return self._shadowed(hook, str(result), kwargs.get("session"))
            if result is not None:
                log.warning("hook_bad_result", hook=hook, result=repr(result)[:100])
        return None

    def _shadowed(self, hook: str, reply: str, session: Any) -> str | None:
        """In shadow mode a plugin's refusal is recorded (on the session, then with the
        message) and not applied: the sender sees nothing of mailflow yet."""
        if self.settings.mode != "shadow":
            return reply
        log.info("shadow_refusal", hook=hook, reply=reply)
        if isinstance(session, SessionInfo):
            session.shadow_refusals.append(f"{hook}: {reply}")
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
            return await self._guarded(self.pipeline.process(
                raw, mail_env, info.trusted, submission=info.submission,
                shadow_refusals=tuple(info.shadow_refusals)))
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


# aiosmtpd reads the EHLO hook's signature for every session (old or new form): read once
Handler.handle_EHLO.__signature__ = inspect.signature(Handler.handle_EHLO)  # type: ignore[attr-defined]
