"""One message after DATA: receive it, commit, relay, answer: the live outcome.

Receiving (clean, parse once, the facts, the direction, the chain) is
:mod:`mailflow.reception`'s, the same for every door; the bytes relayed are
:mod:`mailflow.wire`'s. What stays here is the order that makes "250 only once
safe" true:

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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from mailflow import wire
from mailflow.chain import DEFAULT_REPLIES, Chain, describe
from mailflow.clock import SYSTEM_CLOCK, Clock
from mailflow.context import MessageContext
from mailflow.direction import SERVICE_DIRECTIONS
from mailflow.message import Envelope
from mailflow.metrics import Metrics
from mailflow.outcome_log import count_stages, log_outcome
from mailflow.processing_slots import TOO_BUSY, ProcessingSlots
from mailflow.reception import Door, Reception
from mailflow.relay import DeliveryResult, NextHopClient
from mailflow.releases import AfterRelay, WriteOps
from mailflow.store import Store, StoreUnavailable, Transaction
from mailflow.values import OutgoingMail, Verdict

if TYPE_CHECKING:
    from mailflow.config import Settings

log = structlog.get_logger("mailflow.message")

Sent = tuple[list[str], bytes, DeliveryResult]  # one copy: recipients, bytes, the answer


@dataclass(frozen=True)
class Outcome:
    """The reply for the client and what the log line says about it."""

    reply: str
    verdict: str


def _refused_outcome(sent: list[Sent]) -> Outcome:
    """The client's reply when the next hop took no copy at all: a temporary refusal if
    there is one (the client retries, and the next hop may take it then)."""
    result = min((r for _, _, r in sent), key=lambda r: r.permanent)
    if result.permanent:
        return Outcome(f"{result.code} {result.text}", "rejected-downstream")
    status = wire.enhanced_status(result.text, "4.4.0")
    return Outcome(f"451 {status} Next hop: try again later", "tempfail-downstream")


class Pipeline:
    """Turns an accepted DATA into a reply; shared by every SMTP session."""

    def __init__(self, settings: Settings, store: Store, client: NextHopClient,
                 metrics: Metrics, chain_of: Callable[[], Chain],
                 on_release: Callable[[], None], clock: Clock = SYSTEM_CLOCK,
                 shadow: Store | None = None) -> None:
        """``shadow``: shadow mode's store, where the chain reads and writes and what it
        decided is recorded; the message itself is relayed as received."""
        self.settings = settings
        self.store = store
        self.shadow = shadow
        self.client = client
        self.metrics = metrics
        self.clock = clock
        self.reception = Reception(settings.smtp, chain_of, clock)
        self._chain_of = chain_of
        self._on_release = on_release
        self._deferred: set[asyncio.Task[None]] = set()  # writes beside the reply
        self.after_relay = AfterRelay(store, on_release)
        self.slots = ProcessingSlots(settings.smtp.max_processing, settings.chain_timeout)

    # -- the whole thing ----------------------------------------------------

    async def process(self, raw: bytes, envelope: Envelope, trusted: bool, *,
                      submission: bool = False, shadow_refusals: Sequence[str] = ()) -> Outcome:
        started = time.perf_counter()
        async with self.slots.slot() as turn:
            if turn:  # else it waited all of chain_timeout: its client sends it again later
                door = Door(trusted, submission)
                return (await self.handle(raw, envelope, door, shadow_refusals))[0]
        log_outcome(self.metrics, wire.new_queue_id(self.clock), envelope, None, "tempfail",
                    TOO_BUSY, started)
        return Outcome(TOO_BUSY, "tempfail")

    async def handle(self, raw: bytes, envelope: Envelope, door: Door,
                     shadow_refusals: Sequence[str] = (),
                     ) -> tuple[Outcome, MessageContext | None]:
        """The live outcome of one message, and its context (None: refused before the
        chain): what ``mailflow replay`` reports on. In shadow mode, the message is relayed
        as received and the chain's decisions recorded apart (``shadow_refusals``: what
        the plugins' SMTP hooks would have answered)."""
        started = time.perf_counter()
        queue_id = wire.new_queue_id(self.clock)
        received = await self.reception.receive(raw, envelope, door, self.shadow or self.store,
                                                queue_id=queue_id)
        ctx = received.ctx
        if ctx is None:
            refusal = received.refusal or "554 5.6.0 Message refused"
            log_outcome(self.metrics, queue_id, envelope, None, "reject", refusal, started)
            return Outcome(refusal, "reject"), None
        count_stages(self.metrics, ctx)
        self.metrics.directions.labels(direction=ctx.direction.value).inc()
        try:
            # once begun, commit-relay-release runs to its end even if the client
            # vanishes: the store then matches what the next hop has
            settle = (self._shadowed(ctx, shadow_refusals) if self.shadow is not None
                      else self._settle(ctx) if ctx.direction in SERVICE_DIRECTIONS
                      else self._pass(ctx))
            outcome = await asyncio.shield(settle)
        except StoreUnavailable as exc:
            self.metrics.store_errors.inc()
            log.error("store_unavailable", queue_id=queue_id, error=str(exc))
            outcome = Outcome("451 4.3.0 Temporary storage failure, try again later", "tempfail")
        log_outcome(self.metrics, queue_id, envelope, ctx, outcome.verdict, outcome.reply,
                    started)
        return outcome, ctx

    async def _settle(self, ctx: MessageContext) -> Outcome:
        """Carry out the chain's verdict: refuse, keep without relaying, or deliver."""
        if (verdict := ctx.verdict) in (Verdict.REJECT, Verdict.TEMPFAIL):
            return Outcome(ctx.reply or DEFAULT_REPLIES[verdict], verdict.value)
        if verdict in (Verdict.DISCARD, Verdict.QUARANTINE):
            return await self._keep(ctx, verdict)
        return await self._deliver(ctx)

    async def _keep(self, ctx: MessageContext, verdict: Verdict) -> Outcome:
        """Discard or quarantine: committed at once, nothing goes to the next hop."""
        ops = self._accept_ops(ctx, state=verdict.value, held=False)
        if verdict is Verdict.QUARANTINE:
            data = self.assemble(ctx)
            reason = ctx.decisions[-1].reason if ctx.decisions else ""
            created_at = self.clock.now()
            ops.append(lambda tx: tx.execute(
                "INSERT INTO quarantine (queue_id, reason, data, created_at)"
                " VALUES (?, ?, ?, ?)", (ctx.queue_id, reason, data, created_at)))
        await self.store.write(ops)
        self._on_release()
        return Outcome(f"250 2.0.0 Ok: {ctx.queue_id} {verdict.value}", verdict.value)

    # -- not the service's mail -------------------------------------------------

    async def _pass(self, ctx: MessageContext) -> Outcome:
        """Relayed as received to the recipients as received; nothing is stored but
        what the next hop refused of it (to retry, or to report to the sender)."""
        groups = wire.passed_groups(ctx.message.raw, list(ctx.message.envelope.rcpt_to),
                                    self._chain_of().scope.is_inside)
        sent = await self._send_each(ctx, groups)
        if not any(result.ok for _, _, result in sent):
            return _refused_outcome(sent)
        refusals = self._refusal_ops(ctx, sent)
        effects = [op for op, _ in ctx.writes]  # the stages' (statistics): no address
        if refusals:
            await self.after_relay.write(ctx.queue_id, [*refusals, *effects])
        elif effects:
            self._write_beside(ctx.queue_id, effects)
        return Outcome(f"250 2.0.0 Ok: queued as {ctx.queue_id}", "deliver")

    async def _shadowed(self, ctx: MessageContext, refusals: Sequence[str]) -> Outcome:
        """Shadow mode: the next hop gets the message as passthrough relays it (the bytes
        as received, the recipients as received, none of our headers), and what the chain
        decided (its verdict, mail, timers, writes) is committed to the shadow store, where
        the mail is captured, not sent. Nothing of it changes what the client hears."""
        groups = wire.passed_groups(ctx.message.raw, list(ctx.message.envelope.rcpt_to),
                                    self._chain_of().scope.is_inside)
        sent = await self._send_each(ctx, groups)
        if not any(result.ok for _, _, result in sent):
            return _refused_outcome(sent)
        retries = self._refusal_ops(ctx, sent)  # the live store's: really retried
        if retries:
            await self.after_relay.write(ctx.queue_id, retries)
        would = ctx.reply or DEFAULT_REPLIES.get(ctx.verdict, "250")
        # refused during the SMTP dialogue, live would have had nothing more of it
        ops = self._accept_ops(ctx, state="shadow-refused" if refusals else "shadow",
                               held=False, effects=not refusals,
                               extra={"would": {"verdict": ctx.verdict.value, "reply": would},
                                      "smtp_refusals": list(refusals)})
        assert self.shadow is not None
        try:
            await self.shadow.write(ops)
        except StoreUnavailable as exc:  # the mail is delivered; the record is not worth a 4xx
            log.warning("shadow_not_recorded", queue_id=ctx.queue_id, error=str(exc))
        return Outcome(f"250 2.0.0 Ok: queued as {ctx.queue_id}", "deliver")

    def _write_beside(self, queue_id: str, ops: WriteOps) -> None:
        """The chain's writes about passed mail (counts), not holding up the reply."""
        async def write() -> None:
            try:
                await self.store.write(ops)
            except StoreUnavailable as exc:
                log.warning("passed_effects_lost", queue_id=queue_id, error=str(exc))

        task = asyncio.get_running_loop().create_task(write())
        self._deferred.add(task)
        task.add_done_callback(self._deferred.discard)

    # -- commit, relay, release -----------------------------------------------

    async def _deliver(self, ctx: MessageContext) -> Outcome:
        """Commit held, tell the next hop, then release or undo."""
        await self.store.write(self._accept_ops(ctx, state="pending", held=True))
        sent = await self._relay(ctx)
        if not any(result.ok for _, _, result in sent):
            if any(result.unknown for _, _, result in sent):
                return await self._unknown(ctx)
            await self._abort(ctx)
            return _refused_outcome(sent)
        await self._release(ctx, sent)
        return Outcome(f"250 2.0.0 Ok: queued as {ctx.queue_id}", "deliver")

    async def _unknown(self, ctx: MessageContext) -> Outcome:
        """The next hop vanished after the data: it may have the message. Nothing is sent
        again now; the case, its assignee and its acknowledgement stand (the message is
        recorded ``unknown``), and the client's retry, after this 4xx, is delivered as a
        marked copy in the same case (the ``number`` stage's ``retry``)."""
        queue_id = ctx.queue_id
        log.warning("next_hop_outcome_unknown", queue_id=queue_id,
                    case=ctx.case.number if ctx.case is not None else None)
        await self.after_relay.write(queue_id, [
            lambda tx: tx.set_message_state(queue_id, "unknown"),
            lambda tx: tx.release_outbox(queue_id),
            lambda tx: tx.release_timers(queue_id)])
        return Outcome("451 4.4.2 Next hop: outcome unknown, try again later",
                       "tempfail-downstream")

    async def _relay(self, ctx: MessageContext) -> list[Sent]:
        """Each copy (the company's with our headers, the others' without) and the next
        hop's answer to it."""
        try:
            groups = wire.relayed_groups(ctx, self.settings.smtp.hostname,
                                         self._chain_of().scope.is_inside)
            return await self._send_each(ctx, groups)
        except Exception:
            await self._abort(ctx)  # a bug must not leave rows held until the sweep
            raise

    async def _send_each(self, ctx: MessageContext,
                         groups: list[tuple[list[str], bytes]]) -> list[Sent]:
        """Each copy in its own transaction to the next hop, with its answer."""
        return [(rcpts, data, await self._send(ctx, rcpts, data)) for rcpts, data in groups]

    async def _send(self, ctx: MessageContext, recipients: list[str],
                    data: bytes) -> DeliveryResult:
        envelope = ctx.message.envelope
        started = time.perf_counter()
        result = await self.client.send(
            envelope.mail_from, recipients, data,
            smtputf8="SMTPUTF8" in (o.upper() for o in envelope.mail_options),
            body8bit=not data.isascii())
        self.metrics.relay_seconds.observe(time.perf_counter() - started)
        self.metrics.relay_results.labels(code=f"{result.code // 100}xx").inc()
        return result

    def _accept_ops(self, ctx: MessageContext, *, state: str, held: bool,
                    extra: dict[str, Any] | None = None, effects: bool = True) -> WriteOps:
        """The message's record and (``effects``) everything the chain asked for, in one
        transaction."""
        message = ctx.message
        details: dict[str, Any] = {"decisions": describe(ctx.decisions),
                                   "headers": ctx.added_headers, **(extra or {})}
        ops: WriteOps = [lambda tx: tx.record_message(
            ctx.queue_id, message_id=message.message_id,
            mail_from=message.envelope.mail_from, rcpt_to=ctx.recipients, state=state,
            verdict=ctx.verdict.value, received_at=ctx.received_at, details=details)]
        if effects:
            ops.extend(ctx.commit_ops(message=ctx.queue_id, held=held))
        return ops

    async def _release(self, ctx: MessageContext, sent: list[Sent]) -> None:
        """The next hop has it: mark it delivered and let what it owes go; what it
        refused (a whole copy, or some recipients) goes to the outbox or back as a DSN."""
        queue_id = ctx.queue_id
        ops: WriteOps = [
            lambda tx: tx.set_message_state(queue_id, "delivered"),
            lambda tx: tx.release_outbox(queue_id),
            lambda tx: tx.release_timers(queue_id),
        ]
        ops.extend(self._refusal_ops(ctx, sent))
        await self.after_relay.write(queue_id, ops, batched=True)

    def _refusal_ops(self, ctx: MessageContext, sent: list[Sent]) -> WriteOps:
        """Recipients the next hop refused while taking others (a whole copy, or some of
        its recipients): retried, each with the bytes of its copy, or reported to the sender."""
        refusals = [(data, result.refused if result.ok
                     else dict.fromkeys(rcpts, (result.code, result.text)), result.unknown)
                    for rcpts, data, result in sent]
        sender = ctx.message.envelope.mail_from
        mails = []
        permanent: dict[str, tuple[int, str]] = {}
        for data, refused, unknown in refusals:
            temporary = tuple(r for r, (code, _) in refused.items() if code < 500)
            if temporary:
                again = self._marked_again(ctx, temporary, data) if unknown else data
                mails.append(OutgoingMail("relay", temporary, again, mail_from=sender))
            permanent.update({r: v for r, v in refused.items() if v[0] >= 500})
        if permanent and sender:
            mails.append(OutgoingMail("bounce", (sender,), self.bounce(ctx, permanent)))
        refused_all = {r: f"{c} {t}" for _, refused, _ in refusals
                       for r, (c, t) in refused.items()}
        if refused_all:
            log.warning("next_hop_refused_some", queue_id=ctx.queue_id,
                        refused=refused_all if ctx.direction in SERVICE_DIRECTIONS
                        else len(refused_all))
        return [functools.partial(Transaction.queue_outbox, mail=m, message=ctx.queue_id,
                                  held=False) for m in mails]

    def _marked_again(self, ctx: MessageContext, recipients: tuple[str, ...],
                      data: bytes) -> bytes:
        """A copy whose first sending may have arrived (the next hop vanished after its
        data), retried from the outbox: the company's copy says so, as a client's retry
        would (``X-Mailflow-Duplicate``); a copy for outside recipients carries nothing."""
        inside = self._chain_of().scope.is_inside
        if ctx.case is None or not all(inside(r) for r in recipients):
            return data
        head = data.partition(b"\r\n\r\n")[0].lower()
        if head.startswith(b"x-mailflow-duplicate:") or b"\nx-mailflow-duplicate:" in head:
            return data
        return f"X-Mailflow-Duplicate: {ctx.case.number}\r\n".encode() + data

    async def _abort(self, ctx: MessageContext) -> None:
        """Undo what the message committed: its client, having no 250, sends it again."""
        queue_id = ctx.queue_id
        ops: WriteOps = [undo for _, undo in reversed(ctx.writes) if undo is not None]
        ops.append(lambda tx: tx.abandon_message(queue_id))
        try:
            await self.store.write(ops)
        except StoreUnavailable as exc:  # the sweeper cancels the held rows later
            log.warning("abort_not_recorded", queue_id=queue_id, error=str(exc))

    # -- bytes -----------------------------------------------------------------

    def assemble(self, ctx: MessageContext) -> bytes:
        """The bytes the next hop gets (see :func:`mailflow.wire.relayed_bytes`)."""
        return wire.relayed_bytes(ctx, self.settings.smtp.hostname)

    def bounce(self, ctx: MessageContext, refused: dict[str, tuple[int, str]]) -> bytes:
        """The notice to the sender for recipients refused for good."""
        return wire.bounce(ctx, refused, self.settings.smtp.hostname)
