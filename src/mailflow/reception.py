"""The one way in: every message is received the same way, whatever door it came by.

An SMTP listener (:mod:`mailflow.pipeline`), ``mailflow try``, and replay and
shadow mode next, call :meth:`Reception.receive`: clean and parse once
(:mod:`mailflow.intake`), the facts computed once (automatic or not, by the
rules' one detector, with its reason; :mod:`mailflow.facts`), the reply-address
tokens confirmed by the store (through the stage that owns them), the
direction, the context, the chain. The outcome is the caller's: live commits,
relays and releases; dry reports and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from mailflow import direction, intake
from mailflow.chain import Chain
from mailflow.clock import SYSTEM_CLOCK, Clock
from mailflow.config import SmtpSettings
from mailflow.context import MessageContext, StageStore
from mailflow.facts import MessageFacts
from mailflow.message import Envelope, Message
from mailflow.services import REPLY_TOKENS, Token


@dataclass(frozen=True)
class Door:
    """Where a message came in: from a trusted network (the original client's, as
    XFORWARD tells), and through the submission listener (agents' mail)."""

    trusted: bool
    submission: bool = False


@dataclass(frozen=True)
class Received:
    """What the reception made of a message: refused before the chain (``refusal``), or
    its context after the chain."""

    prepared: intake.Prepared
    ctx: MessageContext | None

    @property
    def refusal(self) -> str | None:
        return self.prepared.refusal


class Reception:
    """Receives messages for one daemon (or one dry run): ``chain_of`` gives the chain
    now in force (a reload swaps it whole)."""

    def __init__(self, smtp: SmtpSettings, chain_of: Callable[[], Chain],
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.smtp = smtp
        self.chain_of = chain_of
        self.clock = clock

    async def receive(self, raw: bytes, envelope: Envelope, door: Door, store: StageStore, *,
                      queue_id: str, dry_run: bool = False) -> Received:
        """:meth:`prepare` ``raw``, then :meth:`judge` it unless refused."""
        prepared = await self.prepare(raw, envelope, door)
        if prepared.refusal is not None or prepared.message is None:
            return Received(prepared, None)
        ctx = await self.judge(prepared.message, door, store, queue_id=queue_id,
                               dry_run=dry_run)
        return Received(prepared, ctx)

    async def prepare(self, raw: bytes, envelope: Envelope, door: Door) -> intake.Prepared:
        """Clean, parse once and check (the bare-newline policy, forged headers, hops)."""
        return await intake.prepare(raw, envelope, self.smtp, trusted=door.trusted)

    async def judge(self, message: Message, door: Door, store: StageStore, *,
                    queue_id: str, dry_run: bool = False) -> MessageContext:
        """The facts, the direction and the chain's decisions for a parsed message."""
        chain = self.chain_of()
        facts = MessageFacts(message, chain.automatic)
        valid = await self._valid_tokens(chain, message, store)
        judged = direction.decide(message, chain.scope,
                                  direction.Source(door.trusted, door.submission), valid,
                                  facts=facts)
        ctx = MessageContext(message=message, queue_id=queue_id,
                             recipients=list(message.envelope.rcpt_to), store=store,
                             trusted=door.trusted, dry_run=dry_run, clock=self.clock,
                             direction=judged.direction, direction_reason=judged.reason,
                             author=judged.agent, agent_label=chain.scope.agent_label(
                                 judged.agent), team=judged.team, mailbox=judged.mailbox,
                             facts=facts,
                             scale=chain.scale, events=chain.events)
        await chain.process(ctx)
        return ctx

    async def _valid_tokens(self, chain: Chain, message: Message,
                            store: StageStore) -> Collection[Token]:
        """The reply-address tokens the store confirms (an expert's answer), asked of the
        stage that provides the check, before the direction: ``decide`` stays pure."""
        verifier = chain.services.get(REPLY_TOKENS)
        if verifier is None or not direction.reply_tokens(message, chain.scope):
            return ()
        return await verifier.verified(message, store, self.clock.now())
