"""Helpers for plugin authors' tests: a context from an ``.eml``, one stage, what it asked for.

A stage is tested the way the daemon runs it: options validated by its own
model, run under its timeout and failure policy, against a real (temporary)
SQLite store when it needs one. Nothing is sent and nothing is committed:
read the context afterwards (``ctx.added_headers``, ``ctx.outgoing``,
``ctx.timers``, ``ctx.verdict``, ``ctx.stash``, the decision's notes)::

    from mailflow.testing import make_context, make_stage, run_stage

    async def test_vip_is_marked() -> None:
        stage = make_stage(VipStage, {"senders": ["ceo@big.example"]})
        ctx = make_context(Path("tests/messages/ceo.eml"))
        decision = await run_stage(stage, ctx)
        assert ctx.header("X-Mailflow-VIP") == "yes"
        assert decision.notes == {"vip": "ceo@big.example"}

``commit(store, ctx)`` applies what the stage asked the store for, as the
daemon does once a message is accepted.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from mailflow.chain import Chain
from mailflow.clock import SYSTEM_CLOCK, Clock
from mailflow.config import Settings, validate
from mailflow.context import CaseInfo, Decision, MessageContext, Triage
from mailflow.message import Envelope, Message, parse_message
from mailflow.metrics import MetricFactory
from mailflow.plugins import builtin_schemas
from mailflow.rules import RuleSet
from mailflow.stage import Stage, StageEnv, StageOptions
from mailflow.store import Store, open_store
from mailflow.store.schema import Schema
from mailflow.values import Direction

StageT = TypeVar("StageT", bound=Stage[Any])

__all__ = ["commit", "load_message", "make_context", "make_rules", "make_stage", "run_stage",
           "temporary_store"]


def load_message(source: bytes | str | Path, *, mail_from: str | None = None,
                 rcpt_to: Sequence[str] | None = None, peer: str = "127.0.0.1") -> Message:
    """Parse an ``.eml`` file (a path) or raw bytes; the envelope defaults to From and To/Cc."""
    raw = Path(source).read_bytes() if isinstance(source, str | Path) else source
    headers_only = parse_message(raw, Envelope(mail_from="", rcpt_to=()))
    if mail_from is None:
        senders = headers_only.addresses("From")
        mail_from = senders[0] if senders else ""
    if rcpt_to is None:
        rcpt_to = [*headers_only.addresses("To"), *headers_only.addresses("Cc")]
    return replace(headers_only, envelope=Envelope(mail_from=mail_from, rcpt_to=tuple(rcpt_to),
                                                   peer=peer))


def make_context(source: bytes | str | Path | Message, *, mail_from: str | None = None,
                 rcpt_to: Sequence[str] | None = None, store: Store | None = None,
                 clock: Clock = SYSTEM_CLOCK, direction: Direction = Direction.INBOUND,
                 case: CaseInfo | None = None, triage: Triage | None = None,
                 trusted: bool = False, dry_run: bool = False,
                 queue_id: str = "TEST0001") -> MessageContext:
    """The context the daemon would build for this message (``case``/``triage`` as if
    earlier stages had set them)."""
    message = source if isinstance(source, Message) else load_message(
        source, mail_from=mail_from, rcpt_to=rcpt_to)
    return MessageContext(message=message, queue_id=queue_id,
                          recipients=list(message.envelope.rcpt_to), store=store,
                          trusted=trusted, dry_run=dry_run, clock=clock, direction=direction,
                          case=case, triage=triage)


def make_rules(*, local_domains: Sequence[str] = ("example.com",),
               own_addresses: Sequence[str] = (), directory: Path = Path(".")) -> RuleSet:
    """A rules set without files, for a stage that only looks at the local domains."""
    return RuleSet(directory=directory, local_domains=tuple(local_domains),
                   own_addresses=tuple(own_addresses), chain=(), chain_section=None)


def make_stage(cls: type[StageT], options: Mapping[str, Any] | StageOptions | None = None, *,
               rules: RuleSet | None = None, settings: Settings | None = None,
               clock: Clock = SYSTEM_CLOCK, metrics: MetricFactory | None = None) -> StageT:
    """``cls`` with its options validated by its own model, as the daemon loads it."""
    if not isinstance(options, StageOptions):
        options = validate(cls.Options, dict(options or {}), f"<{cls.name} options>")
    env = StageEnv(rules=rules or make_rules(), settings=settings or Settings(),
                   metrics=metrics or MetricFactory(), clock=clock)
    stage = cls(options, env)
    env.terms.build()
    return stage


async def run_stage(stage: Stage[Any], ctx: MessageContext) -> Decision:
    """Run one stage under its timeout and failure policy; its decision (outcome, notes)."""
    await Chain((stage,), timeout=stage.timeout + 1).run(ctx)
    return ctx.decisions[-1]


async def commit(store: Store, ctx: MessageContext) -> None:
    """Apply the store writes the context asked for, in one transaction."""
    await store.write([op for op, _ in ctx.writes])


@contextlib.asynccontextmanager
async def temporary_store(directory: Path, clock: Clock = SYSTEM_CLOCK,
                          schemas: Sequence[Schema] = ()) -> AsyncIterator[Store]:
    """A real SQLite store in ``directory`` (pytest's ``tmp_path``), open, with the core's,
    the built-in stages' and ``schemas`` (your plugin's) tables."""
    store = open_store(f"sqlite:///{directory / 'mailflow.sqlite3'}?busy_timeout=0.5",
                       clock=clock)
    await store.open([*builtin_schemas(), *schemas])
    try:
        yield store
    finally:
        await store.close()
