"""One message after DATA: clean, parse once, run the chain, commit, relay, answer.

The order is what makes "250 only once safe" true:

1. the chain decides (nothing is written yet);
2. every change it asked for commits in ONE transaction, the message marked
   ``pending`` and the mail it owes *held*;
3. the next hop is told; only if it accepts is the message marked delivered
   and its mail released to the outbox, and only then does the client hear 250.
   A refusal or a crash leaves held rows that are cancelled (undone), and the
   client, having no 250, sends again.
"""

from __future__ import annotations

import asyncio
import functools
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, formatdate
from typing import TYPE_CHECKING, Any

import structlog

from mailflow.autoreply import LOOP_HEADER
from mailflow.chain import Chain, describe
from mailflow.message import Envelope, Message, parse_message
from mailflow.metrics import Metrics
from mailflow.outbox import STALE_PENDING_SECONDS
from mailflow.relay import DeliveryResult, NextHopClient
from mailflow.stage import MessageContext, OutgoingMail, Verdict, safe_header_value
from mailflow.store import Store, StoreUnavailable, Transaction

if TYPE_CHECKING:
    from mailflow.config import Settings
    from mailflow.rules import RuleSet

log = structlog.get_logger("mailflow.message")

PARSE_IN_THREAD_BYTES = 512 * 1024
_LINE_ENDING = re.compile(rb"\r\n|\r|\n")
_HEADER_END = re.compile(rb"\r\n\r\n")
#: Our own headers, and anything pretending to be: removed unless the client is trusted.
#: The loop marker stays: forging it can only silence our robots, and they must see it.
_INTERNAL_HEADER = re.compile(rb"^X-Mailflow-(?!Loop:)[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*",
                              re.IGNORECASE | re.MULTILINE)


def new_queue_id() -> str:
    """A short id for logs, headers and the store: time-ordered, unguessable."""
    return f"{int(time.time() * 1000):x}{secrets.token_hex(4)}".upper()


def has_bare_newlines(raw: bytes) -> bool:
    """True if any CR or LF is not part of a CRLF pair (three C-speed counts, no regex)."""
    pairs = raw.count(b"\r\n")
    return raw.count(b"\r") != pairs or raw.count(b"\n") != pairs


def normalize_newlines(raw: bytes) -> bytes:
    """Bare CR or LF become CRLF: no smuggled end-of-data can survive downstream."""
    return _LINE_ENDING.sub(b"\r\n", raw) if has_bare_newlines(raw) else raw


def strip_internal_headers(raw: bytes) -> tuple[bytes, int]:
    """Remove ``X-Mailflow-*`` header fields from the header block only."""
    if raw.startswith(b"\r\n"):  # no header block at all: the body is not ours to edit
        return raw, 0
    match = _HEADER_END.search(raw)
    end = match.end() if match else len(raw)
    head, count = _INTERNAL_HEADER.subn(b"", raw[:end])
    return (head + raw[end:], count) if count else (raw, 0)


_SUBJECT = re.compile(rb"^Subject:[ \t]*", re.IGNORECASE | re.MULTILINE)


def tag_subject(raw: bytes, tag: str) -> bytes:
    """Put ``tag`` in front of the Subject (the one rewrite mailflow does, on request)."""
    match = _HEADER_END.search(raw)
    end = match.end() if match else len(raw)
    subject = _SUBJECT.search(raw, 0, end)
    if subject is None:
        return f"Subject: {tag}\r\n".encode("ascii", "replace") + raw
    cut = subject.end()
    return raw[:cut] + tag.encode("ascii", "replace") + b" " + raw[cut:]


@dataclass(frozen=True)
class Outcome:
    """The reply for the client and what the log line says about it."""

    reply: str
    verdict: str


class Pipeline:
    """Turns an accepted DATA into a reply; shared by every SMTP session."""

    def __init__(self, settings: Settings, store: Store, client: NextHopClient,
                 metrics: Metrics, chain_of: Callable[[], Chain], rules_of: Callable[[], RuleSet],
                 on_release: Callable[[], None]) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self.metrics = metrics
        self._chain_of = chain_of
        self._rules_of = rules_of
        self._on_release = on_release
        self._deferred: set[asyncio.Task[None]] = set()  # releases waiting for the store

    # -- preparing ----------------------------------------------------------

    async def prepare(self, raw: bytes, envelope: Envelope,
                      trusted: bool) -> tuple[Message | None, str | None]:
        """Clean and parse; returns the message, or a reply refusing it."""
        smtp = self.settings.smtp
        if has_bare_newlines(raw):
            if smtp.bare_newlines == "reject":
                return None, "550 5.5.2 Message contains bare CR or LF; use CRLF line endings"
            raw = normalize_newlines(raw)
        if not trusted:
            raw, stripped = strip_internal_headers(raw)
            if stripped:
                log.info("internal_headers_removed", count=stripped, peer=envelope.peer)
        if len(raw) > PARSE_IN_THREAD_BYTES:  # keep the event loop responsive
            message = await asyncio.to_thread(parse_message, raw, envelope)
        else:
            message = parse_message(raw, envelope)
        if message.count("Received") > smtp.max_received_headers:
            return None, "554 5.4.6 Too many hops (Received headers): mail loop suspected"
        return message, None

    # -- the whole thing ----------------------------------------------------

    async def process(self, raw: bytes, envelope: Envelope, trusted: bool) -> Outcome:
        started = time.perf_counter()
        queue_id = new_queue_id()
        message, refusal = await self.prepare(raw, envelope, trusted)
        if message is None:
            assert refusal is not None
            self._log(queue_id, envelope, None, "reject", refusal, started)
            return Outcome(refusal, "reject")
        ctx = MessageContext(message=message, queue_id=queue_id,
                             recipients=list(envelope.rcpt_to), store=self.store,
                             trusted=trusted)
        await self._chain_of().run(ctx)
        self._stage_metrics(ctx)
        try:
            # once begun, commit-relay-release runs to its end even if the client
            # vanishes: the store then matches what the next hop has
            outcome = await asyncio.shield(self._settle(ctx))
        except StoreUnavailable as exc:
            self.metrics.store_errors.inc()
            log.error("store_unavailable", queue_id=queue_id, error=str(exc))
            outcome = Outcome("451 4.3.0 Temporary storage failure, try again later", "tempfail")
        self._log(queue_id, envelope, ctx, outcome.verdict, outcome.reply, started)
        return outcome

    async def _settle(self, ctx: MessageContext) -> Outcome:
        verdict = ctx.verdict
        if verdict is Verdict.REJECT:
            return Outcome(ctx.reply or "550 5.7.1 Message refused by policy", "reject")
        if verdict is Verdict.TEMPFAIL:
            return Outcome(ctx.reply or "451 4.3.0 Try again later", "tempfail")
        if verdict in (Verdict.DISCARD, Verdict.QUARANTINE):
            ops = self._accept_ops(ctx, state=verdict.value, held=False)
            if verdict is Verdict.QUARANTINE:
                data = self.assemble(ctx)
                reason = ctx.decisions[-1].reason if ctx.decisions else ""
                ops.append(lambda tx: tx.execute(
                    "INSERT INTO quarantine (queue_id, reason, data, created_at)"
                    " VALUES (?, ?, ?, ?)", (ctx.queue_id, reason, data, time.time())))
            await self.store.write(ops)
            self._on_release()
            return Outcome(f"250 2.0.0 Ok: {ctx.queue_id} {verdict.value}", verdict.value)
        return await self._deliver(ctx)

    async def _deliver(self, ctx: MessageContext) -> Outcome:
        await self.store.write(self._accept_ops(ctx, state="pending", held=True))
        message = ctx.message
        relay_started = time.perf_counter()
        try:
            data = self.assemble(ctx)
            result = await self.client.send(
                message.envelope.mail_from, ctx.recipients, data,
                smtputf8="SMTPUTF8" in (o.upper() for o in message.envelope.mail_options),
                body8bit=not data.isascii())
        except Exception:
            await self._abort(ctx)  # a bug must not leave rows held until the sweep
            raise
        self.metrics.relay_seconds.observe(time.perf_counter() - relay_started)
        self.metrics.relay_results.labels(code=f"{result.code // 100}xx").inc()
        if not result.ok:
            await self._abort(ctx)
            if result.permanent:
                return Outcome(f"{result.code} {result.text}", "rejected-downstream")
            return Outcome(f"451 {_status(result.text, '4.4.0')} Next hop: try again later",
                           "tempfail-downstream")
        await self._release(ctx, data, result)
        return Outcome(f"250 2.0.0 Ok: queued as {ctx.queue_id}", "deliver")

    def _accept_ops(self, ctx: MessageContext, *, state: str,
                    held: bool) -> list[Callable[[Transaction], object]]:
        message = ctx.message
        details: dict[str, Any] = {"decisions": describe(ctx.decisions),
                                   "headers": ctx.added_headers}
        ops: list[Callable[[Transaction], object]] = [lambda tx: tx.record_message(
            ctx.queue_id, message_id=message.message_id,
            mail_from=message.envelope.mail_from, rcpt_to=ctx.recipients, state=state,
            verdict=ctx.verdict.value, received_at=ctx.received_at, details=details)]
        ops.extend(op for op, _ in ctx.writes)
        ops.extend(functools.partial(Transaction.queue_outbox, mail=m, message=ctx.queue_id,
                                     held=held) for m in ctx.outgoing)
        ops.extend(functools.partial(Transaction.cancel_timers, kind=k, key=y)
                   for k, y in ctx.cancelled_timers)
        ops.extend(functools.partial(Transaction.schedule_timer, timer=t, message=ctx.queue_id,
                                     held=held) for t in ctx.timers)
        return ops

    async def _release(self, ctx: MessageContext, data: bytes, result: DeliveryResult) -> None:
        queue_id = ctx.queue_id
        ops: list[Callable[[Transaction], object]] = [
            lambda tx: tx.set_message_state(queue_id, "delivered"),
            lambda tx: tx.release_outbox(queue_id),
            lambda tx: tx.release_timers(queue_id),
        ]
        ops.extend(self._partial_refusal_ops(ctx, data, result))
        for attempt in range(3):  # the next hop has it: try hard not to lose what it owes
            try:
                await self.store.write(ops)
                break
            except StoreUnavailable as exc:
                if attempt == 2:
                    # A 4xx now would make the client send it again: the next hop would
                    # get it twice and the held rows would be swept. It is delivered and
                    # all it owes is committed (held): say 250, release when writes work.
                    log.error("release_deferred", queue_id=queue_id, error=str(exc))
                    task = asyncio.get_running_loop().create_task(
                        self._release_later(queue_id, ops))
                    self._deferred.add(task)
                    task.add_done_callback(self._deferred.discard)
                    return
                await asyncio.sleep(0.2 * (attempt + 1))
        self._on_release()

    async def _release_later(self, queue_id: str,
                             ops: list[Callable[[Transaction], object]]) -> None:
        """Retry a release until the store takes it, well before the sweeper would
        abandon the message as never answered (``STALE_PENDING_SECONDS``)."""
        give_up = time.monotonic() + STALE_PENDING_SECONDS / 2
        delay = 1.0
        while True:
            try:
                await asyncio.sleep(delay)
                await self.store.write(ops)
            except asyncio.CancelledError:  # stopping: recover() will abandon it at start
                log.error("release_lost", queue_id=queue_id, error="daemon stopped")
                raise
            except StoreUnavailable as exc:
                if time.monotonic() > give_up:
                    log.error("release_lost", queue_id=queue_id, error=str(exc))
                    return
                delay = min(delay * 2, 30.0)
                continue
            log.info("release_recorded", queue_id=queue_id)
            self._on_release()
            return

    def _partial_refusal_ops(self, ctx: MessageContext, data: bytes,
                             result: DeliveryResult) -> list[Callable[[Transaction], object]]:
        """Recipients the next hop refused while taking the others: retry or bounce."""
        if not result.refused:
            return []
        temporary = tuple(r for r, (code, _) in result.refused.items() if code < 500)
        permanent = {r: v for r, v in result.refused.items() if v[0] >= 500}
        sender = ctx.message.envelope.mail_from
        mails = []
        if temporary:
            mails.append(OutgoingMail("relay", temporary, data, mail_from=sender))
        if permanent and sender:
            mails.append(OutgoingMail("bounce", (sender,), self.bounce(ctx, permanent)))
        log.warning("next_hop_refused_some", queue_id=ctx.queue_id,
                    refused={r: f"{c} {t}" for r, (c, t) in result.refused.items()})
        return [functools.partial(Transaction.queue_outbox, mail=m, message=ctx.queue_id,
                                  held=False) for m in mails]

    async def _abort(self, ctx: MessageContext) -> None:
        queue_id = ctx.queue_id
        ops: list[Callable[[Transaction], object]] = [
            undo for _, undo in reversed(ctx.writes) if undo is not None]
        ops.append(lambda tx: tx.abandon_message(queue_id))
        try:
            await self.store.write(ops)
        except StoreUnavailable as exc:  # the sweeper cancels the held rows later
            log.warning("abort_not_recorded", queue_id=queue_id, error=str(exc))

    # -- bytes -----------------------------------------------------------------

    def assemble(self, ctx: MessageContext) -> bytes:
        """Our headers prepended to the original bytes: nothing else is re-serialised."""
        envelope = ctx.message.envelope
        host = self.settings.smtp.hostname
        rcpt = envelope.rcpt_to[0] if len(envelope.rcpt_to) == 1 else ""
        received = (f"from {envelope.helo or 'unknown'} ([{envelope.peer}]) by {host} "
                    f"(mailflow) with {'UTF8SMTP' if rcpt and not rcpt.isascii() else 'ESMTP'}"
                    f" id {ctx.queue_id}{f' for <{rcpt}>' if rcpt else ''}; "
                    f"{format_datetime(datetime.now(UTC).astimezone())}")
        lines = [f"Received: {safe_header_value(received, 'Received')}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in ctx.added_headers)
        raw = ctx.message.raw
        if ctx.subject_tag and ctx.subject_tag not in ctx.message.subject:
            raw = tag_subject(raw, ctx.subject_tag)
        return "".join(lines).encode("utf-8", "replace") + raw

    def bounce(self, ctx: MessageContext, refused: dict[str, tuple[int, str]]) -> bytes:
        """A plain delivery-failure notice to the sender, never answered by robots."""
        host = self.settings.smtp.hostname
        lines = "\r\n".join(f"  {r}: {code} {text}" for r, (code, text) in refused.items())
        subject = safe_header_value(f"Undelivered: {ctx.message.subject}"[:200], "Subject")
        return (
            f"From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n"
            f"To: {ctx.message.envelope.mail_from}\r\n"
            f"Subject: {subject}\r\n"
            f"Date: {formatdate(localtime=True)}\r\n"
            f"Message-ID: <{ctx.queue_id}.bounce@{host}>\r\n"
            "Auto-Submitted: auto-replied\r\nX-Auto-Response-Suppress: All\r\n"
            f"Precedence: bulk\r\n{LOOP_HEADER}: {host}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
            "Your message could not be delivered to these recipients:\r\n"
            f"{lines}\r\n"
        ).encode("utf-8", "replace")

    # -- reporting -------------------------------------------------------------

    def _stage_metrics(self, ctx: MessageContext) -> None:
        for d in ctx.decisions:
            self.metrics.stage_seconds.labels(stage=d.stage).observe(d.seconds)
            if d.outcome in ("error", "timeout"):
                self.metrics.stage_failures.labels(stage=d.stage, outcome=d.outcome).inc()

    def _log(self, queue_id: str, envelope: Envelope, ctx: MessageContext | None,
             verdict: str, reply: str, started: float) -> None:
        seconds = time.perf_counter() - started
        self.metrics.messages.labels(verdict=verdict).inc()
        self.metrics.smtp_replies.labels(code=f"{reply[:1]}xx").inc()
        self.metrics.message_seconds.observe(seconds)
        fields: dict[str, Any] = {
            "queue_id": queue_id, "mail_from": envelope.mail_from,
            "rcpt_to": list(envelope.rcpt_to), "verdict": verdict, "reply": reply,
            "ms": round(seconds * 1000, 2)}
        if ctx is not None:
            fields["message_id"] = ctx.message.message_id
            fields["case"] = ctx.attributes.get("case")
            fields["stages"] = {d.stage: round(d.seconds * 1000, 2) for d in ctx.decisions}
            failed = [d.stage for d in ctx.decisions if d.outcome in ("error", "timeout")]
            if failed:
                fields["failed_stages"] = failed
        log.info("message", **fields)


def _status(text: str, default: str) -> str:
    """The enhanced status code at the start of a reply text, if any."""
    head = text.split(" ", 1)[0]
    return head if re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", head) else default


def envelope_from_session(mail_from: str | None, rcpt_to: Sequence[str],
                          mail_options: Sequence[str], peer: str, helo: str) -> Envelope:
    sender = "" if mail_from in (None, "<>") else mail_from  # "<>": aiosmtpd's null sender
    return Envelope(mail_from=sender, rcpt_to=tuple(rcpt_to),
                    mail_options=tuple(mail_options), peer=peer, helo=helo)
