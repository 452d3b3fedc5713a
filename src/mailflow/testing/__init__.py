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

``commit(store, ctx)`` commits what a stage or a timer handler asked for (writes,
mail, timers) as the daemon does once a message is accepted; ``undo(store, ctx)``
what it does when the next hop then refuses it. ``make_timer_context`` builds a
timer handler's context (with the plugin's host and options), ``make_host`` a host
on given rules, ``call_hook`` calls an SMTP hook through pluggy with the plugin's
options injected, ``load_test_runtime`` and ``receive`` run a whole chain (the
daemon's own reception) on a message, ``check_rules`` checks a rules folder
in-process. The pytest fixtures of :mod:`mailflow.testing.pytest_plugin` wrap them,
and add a real daemon with a capturing next hop.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pluggy

from mailflow import hookspecs
from mailflow.chain import Chain
from mailflow.clock import SYSTEM_CLOCK, Clock
from mailflow.config import ConfigError, Settings, load_settings, validate
from mailflow.context import CaseInfo, Decision, Effects, MessageContext, TimerContext, Triage
from mailflow.events import NO_LISTENERS, EventBus
from mailflow.host import DaemonHost, Host
from mailflow.message import Envelope, Message, parse_message
from mailflow.metrics import MetricFactory
from mailflow.plugins import builtin_schemas, call_each
from mailflow.reception import Door, Reception
from mailflow.rules import RuleSet, load_rules
from mailflow.runtime import Runtime, load_runtime
from mailflow.stage import Stage, StageEnv, StageOptions
from mailflow.store import Store, open_store
from mailflow.store.schema import Schema
from mailflow.values import Direction, Timer

StageT = TypeVar("StageT", bound=Stage[Any])

__all__ = ["call_hook", "check_rules", "commit", "load_message", "load_test_runtime",
           "make_context", "make_host", "make_rules", "make_stage", "make_timer_context",
           "receive", "run_stage", "run_stages", "temporary_store", "undo"]


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


async def run_stages(stages: Sequence[Stage[Any]], ctx: MessageContext) -> list[Decision]:
    """Run several stages in order, as a chain of them would; their decisions."""
    await Chain(tuple(stages), timeout=sum(s.timeout for s in stages) + 1).run(ctx)
    return ctx.decisions


async def commit(store: Store, ctx: Effects) -> None:
    """Commit everything ``ctx`` asked for (writes, mail to the outbox, timers scheduled
    and cancelled) in one transaction, as the daemon does once a message is accepted or
    a timer's handler is done."""
    await store.write(ctx.commit_ops(message=ctx.queue_id, held=False))


async def undo(store: Store, ctx: MessageContext) -> None:
    """What the daemon does when the next hop refuses a message after its commit: each
    write's undo, in reverse order, and the message's own records forgotten."""
    ops = [undo for _, undo in reversed(ctx.writes) if undo is not None]
    queue_id = ctx.queue_id
    ops.append(lambda tx: tx.abandon_message(queue_id))
    await store.write(ops)


def make_host(store: Store, rules: RuleSet | Path | None = None, *,
              settings: Settings | None = None, clock: Clock = SYSTEM_CLOCK,
              plugin: str = "plugin-under-test") -> DaemonHost:
    """A plugin's view of a daemon: ``rules`` (a folder, or a ``RuleSet``), ``store``, the
    clock, a throwaway metric factory."""
    loaded = load_rules(rules) if isinstance(rules, Path) else rules or make_rules()
    return DaemonHost(settings=settings or Settings(), store=store, metrics=MetricFactory(),
                      rules=lambda: loaded, clock=clock, plugin=plugin)


def make_timer_context(timer: Timer, store: Store, *, clock: Clock = SYSTEM_CLOCK,
                       host: Host | None = None, options: Any = None,
                       events: EventBus = NO_LISTENERS) -> TimerContext:
    """The context the scheduler gives a timer's handler (its plugin's host and options)."""
    return TimerContext(timer=timer, store=store, clock=clock, host=host, options=options,
                        events=events)


async def call_hook(plugin: object, hook: str, *, options: Any = None, host: Any = None,
                    **kwargs: Any) -> list[Any]:
    """Call ``plugin``'s implementation of an SMTP or lifecycle hook as the daemon does:
    through pluggy, with ``options`` (its rules section) and ``host`` given to it if it
    asks; what it returned, awaited."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(plugin, name="plugin-under-test")
    return await call_each(pm, hook, {"plugin-under-test": options}, host, **kwargs)


def load_test_runtime(rules: Path, *, plugins: Sequence[object] = (),
                      clock: Clock = SYSTEM_CLOCK, **settings: Any) -> Runtime:
    """The rules folder, the built-in stages and ``plugins`` (registered as they are),
    loaded as the daemon loads them; ``settings`` override the defaults."""
    loaded = load_settings(None, {"rules": str(rules), **settings})
    return load_runtime(loaded, clock=clock,
                        plugins=[(f"test:{i}", p) for i, p in enumerate(plugins)])


def check_rules(rules: Path, *, plugins: Sequence[object] = (), **settings: Any) -> list[str]:
    """What ``mailflow check`` would say of a rules folder: its problems (and warnings),
    ``file:line:column: message`` each; none when it loads cleanly."""
    try:
        runtime = load_test_runtime(rules, plugins=plugins, **settings)
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return [f"{w}" for w in runtime.rules.warnings]


async def receive(runtime: Runtime, source: bytes | str | Path, store: Store, *,
                  mail_from: str | None = None, rcpt_to: Sequence[str] | None = None,
                  trusted: bool = False, submission: bool = False,
                  clock: Clock = SYSTEM_CLOCK, queue_id: str = "TEST0001",
                  dry_run: bool = False) -> MessageContext:
    """The daemon's own reception of a message (facts, direction, the whole chain) on
    ``store``; nothing is committed: ``await commit(store, ctx)`` does, as the daemon
    would once the next hop took it."""
    message = load_message(source, mail_from=mail_from, rcpt_to=rcpt_to)
    reception = Reception(runtime.settings.smtp, lambda: runtime.chain, clock)
    return await reception.judge(message, Door(trusted, submission), store,
                                 queue_id=queue_id, dry_run=dry_run)


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
