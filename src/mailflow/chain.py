"""The chain: the stages named in the rules, run in order, each under its own deadline.

A stage that raises or overruns its timeout follows its failure policy,
like Postfix's per-milter ``default_action``: ``tempfail`` (the default) ends
the chain with a 4xx; ``skip`` undoes what the stage asked for and goes on.
No failure path can end in a 250 by accident: the verdict is TEMPFAIL unless
every stage completed or was deliberately skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import structlog

from mailflow.automatic import SHIPPED, AutomaticDetector
from mailflow.config import ConfigError, Problem, validate
from mailflow.direction import SERVICE_DIRECTIONS, Scope
from mailflow.events import NO_LISTENERS, CaseSettled, EventBus
from mailflow.processing_slots import CHAIN_DEADLINE
from mailflow.rules import RuleSet
from mailflow.services import TRIAGE_SCALE, Services
from mailflow.stage import (
    CaseInfo,
    Decision,
    Direction,
    MessageContext,
    Stage,
    StageEnv,
    Stash,
    Triage,
    Verdict,
)
from mailflow.store.base import StoreUnavailable
from mailflow.triage import DEFAULT_SCALE, Scale

log = structlog.get_logger("mailflow.chain")

TERMINAL = (Verdict.REJECT, Verdict.TEMPFAIL)
#: what the client hears for a terminal verdict when the stage chose no reply of its own
DEFAULT_REPLIES = {Verdict.REJECT: "550 5.7.1 Message refused by policy",
                   Verdict.TEMPFAIL: "451 4.3.0 Try again later"}


@dataclass(frozen=True)
class Chain:
    """The configured stages, ready to run."""

    stages: tuple[Stage[Any], ...]
    timeout: float
    #: who is ours (service mailboxes, agents), from what the stages declare
    scope: Scope = field(default_factory=lambda: Scope(frozenset()))
    #: what the stages offer each other, and who listens to which case event
    services: Services = field(default_factory=Services)
    events: EventBus = NO_LISTENERS
    #: the rules' automatic-mail signs: the reception asks them once per message
    automatic: AutomaticDetector = SHIPPED
    #: what the stages found likely mistaken in their sections (``Stage.warnings``)
    warnings: tuple[Problem, ...] = ()

    @cached_property
    def directions(self) -> frozenset[Direction]:
        """Every direction some stage runs for (the service's, and what others ask)."""
        return SERVICE_DIRECTIONS.union(*(stage.directions for stage in self.stages))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    @cached_property
    def scale(self) -> Scale:
        """The priority levels' thresholds (``prioritise``'s, else the defaults)."""
        return self.services.get(TRIAGE_SCALE) or DEFAULT_SCALE

    async def process(self, ctx: MessageContext) -> None:
        """Run the stages for the service's mail (inbound mail and replies), and for other
        mail those that ask for it (to count it); a reply the ``replies`` stage found no
        case for is passed through after all."""
        if ctx.direction not in self.directions:
            return
        await self.run(ctx)
        if ctx.direction is Direction.REPLY and ctx.case is None:
            ctx.direction, ctx.direction_reason = Direction.PASSTHROUGH, "reply to no case"

    async def run(self, ctx: MessageContext) -> None:
        """Run every stage on ``ctx``; the outcome is in ``ctx.verdict`` and ``ctx.decisions``."""
        try:
            deadline = CHAIN_DEADLINE.get()  # a wait for a processing slot took its part
            async with (asyncio.timeout(self.timeout) if deadline is None
                        else asyncio.timeout_at(deadline)):
                for stage in self.stages:
                    if ctx.direction not in stage.directions:
                        continue
                    await self._run_stage(stage, ctx)
                    if ctx.verdict in TERMINAL:
                        return
                await self._settle(ctx)
        except TimeoutError:
            ctx.verdict = Verdict.TEMPFAIL
            ctx.reply = "451 4.3.0 Message processing took too long, try again later"
            ctx.decisions.append(Decision("chain", outcome="timeout",
                                          verdict=Verdict.TEMPFAIL,
                                          reason=f"chain exceeded {self.timeout:g}s"))
        finally:
            ctx.current = None

    @staticmethod
    async def _settle(ctx: MessageContext) -> None:
        """The customer's message ended its chain: the case's owner records the priority,
        route and assignee it left with (one write, whatever stage or plugin set them)."""
        case = ctx.case
        if case is None or not case.status.from_customer or (
                ctx.triage is None and case.route is None):
            return
        await ctx.emit(CaseSettled(case.number, ctx.received_at,
                                   ctx.triage.priority if ctx.triage is not None else None,
                                   case.route, case.assignee))

    async def _run_stage(self, stage: Stage[Any], ctx: MessageContext) -> None:
        decision = Decision(stage.name)
        ctx.decisions.append(decision)
        ctx.current = decision
        saved = _snapshot(ctx)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(stage.timeout):
                await stage.process(ctx)
        except TimeoutError:
            decision.outcome, decision.reason = "timeout", f"no answer within {stage.timeout:g}s"
        except Exception as exc:  # a plugin's bug must not take the message with it
            decision.outcome, decision.reason = "error", f"{type(exc).__name__}: {exc}"
            if isinstance(exc, StoreUnavailable):  # an outage, not a bug: no traceback
                log.warning("stage_store_unavailable", stage=stage.name, queue_id=ctx.queue_id,
                            error=str(exc))
            else:
                log.exception("stage_failed", stage=stage.name, queue_id=ctx.queue_id)
        finally:
            decision.seconds = time.perf_counter() - started
        if decision.outcome not in ("timeout", "error"):
            return
        _restore(ctx, saved)
        decision.verdict = None  # a verdict the failed stage gave was undone with the rest
        if stage.failure_policy == "skip":
            decision.reason += " (stage skipped)"
            return
        ctx.verdict = Verdict.TEMPFAIL
        ctx.reply = "451 4.3.0 Temporary processing failure, try again later"
        decision.verdict = Verdict.TEMPFAIL


@dataclass(frozen=True)
class _Snapshot:
    """What a stage may change, saved so a failed stage can be undone."""

    headers: list[tuple[str, str]]
    recipients: list[str]
    outgoing: int
    timers: int
    cancelled: int
    writes: int
    verdict: Verdict
    reply: str | None
    subject_tag: str | None
    case: CaseInfo | None
    triage: Triage | None
    stash: Stash


def _snapshot(ctx: MessageContext) -> _Snapshot:
    return _Snapshot(list(ctx.added_headers), list(ctx.recipients), len(ctx.outgoing),
                     len(ctx.timers), len(ctx.cancelled_timers), len(ctx.writes), ctx.verdict,
                     ctx.reply, ctx.subject_tag, ctx.case, ctx.triage, ctx.stash.copy())


def _restore(ctx: MessageContext, saved: _Snapshot) -> None:
    """Undo what a failed stage asked for, so a skipped stage leaves no trace."""
    ctx.added_headers = list(saved.headers)
    ctx.recipients = list(saved.recipients)
    del ctx.outgoing[saved.outgoing:]
    del ctx.timers[saved.timers:]
    del ctx.cancelled_timers[saved.cancelled:]
    del ctx.writes[saved.writes:]
    ctx.verdict = saved.verdict
    ctx.reply = saved.reply
    ctx.subject_tag = saved.subject_tag
    ctx.case, ctx.triage, ctx.stash = saved.case, saved.triage, saved.stash


def build_chain(rules: RuleSet, stage_types: Mapping[str, type[Stage[Any]]], env: StageEnv,
                timeout: float, claimed: Set[str] = frozenset()) -> Chain:
    """Instantiate the stages named in ``chain:``, validating each rules section."""
    problems: list[Problem] = []
    stages: list[Stage[Any]] = []
    for index, name in enumerate(rules.chain):
        cls = stage_types.get(name)
        if cls is None:
            known = ", ".join(sorted(stage_types)) or "none"
            problems.append(_at_chain(rules, f"no stage named '{name}' (known stages: {known})",
                                      index))
            continue
        stage = _instantiate(rules, cls, name, index, env, problems)
        if stage is not None:
            stages.append(stage)
    _check_sections(rules, stage_types, claimed, problems)
    for index, name in enumerate(rules.chain):
        cls = stage_types.get(name)
        for needed in cls.requires if cls else ():
            if needed not in rules.chain[:index]:
                problems.append(_at_chain(
                    rules, f"stage '{name}' needs '{needed}' earlier in the chain", index))
    if len(set(rules.chain)) != len(rules.chain):
        dupes = sorted({n for n in rules.chain if rules.chain.count(n) > 1})
        problems.append(_at_chain(rules, f"stage(s) listed twice in the chain: {', '.join(dupes)}"))
    for stage in stages:
        try:
            stage.provide(env.services)
        except ValueError as exc:  # two stages offering one service
            problems.append(_at_chain(rules, str(exc), rules.chain.index(stage.name)))
    if problems:
        raise ConfigError(problems)
    events = EventBus(pair for stage in stages for pair in stage.listeners())
    return Chain(tuple(stages), timeout,
                 Scope.of(rules.local_domains, (stage.scope() for stage in stages)),
                 env.services, events, env.automatic,
                 tuple(warning for stage in stages for warning in stage.warnings()))


def _at_chain(rules: RuleSet, message: str, index: int | None = None) -> Problem:
    """A problem located at the ``chain:`` list (or its entry ``index``)."""
    section = rules.chain_section
    if section is None:
        return Problem(str(rules.directory), 0, 0, message)
    return section.problem(message, (index,) if index is not None else ())


def _instantiate(rules: RuleSet, cls: type[Stage[Any]], name: str, index: int, env: StageEnv,
                 problems: list[Problem]) -> Stage[Any] | None:
    """The stage with its validated options, or None with the problems recorded."""
    section = rules.section(name)
    try:
        if section is None:
            try:
                options = validate(cls.Options, {}, str(rules.directory))
            except ConfigError as exc:  # required options and no section to give them
                problems.append(_at_chain(rules, f"stage '{name}' needs a '{name}' section: "
                                          + "; ".join(p.message for p in exc.problems), index))
                return None
        else:
            options = validate(cls.Options, section.data, section.file, section.tree,
                               prefix=(name,))
        return cls(options, env)
    except ConfigError as exc:
        problems.extend(exc.problems)
    except (ValueError, OSError) as exc:  # a stage refusing its rules at load time
        message = f"stage '{name}': {exc}"
        problems.append(section.problem(message) if section else _at_chain(rules, message))
    return None


def _check_sections(rules: RuleSet, stage_types: Mapping[str, type[Stage[Any]]],
                    claimed: Set[str], problems: list[Problem]) -> None:
    """Every section belongs to a stage or a plugin, and is valid even if not in use."""
    for name, section in rules.sections.items():
        if name in claimed and name not in stage_types:
            continue  # a plugin's own section, validated with its model
        if name not in stage_types:
            problems.append(section.problem(
                f"section '{name}' belongs to no stage (known stages: "
                f"{', '.join(sorted(stage_types)) or 'none'})"))
        elif name not in rules.chain:
            # not running now, but a typo must not wait for the day it is added
            try:
                validate(stage_types[name].Options, section.data, section.file, section.tree,
                         prefix=(name,))
            except ConfigError as exc:
                problems.extend(exc.problems)


def describe(decisions: Sequence[Decision]) -> list[dict[str, object]]:
    """Decisions as plain data, for ``mailflow try --json`` and logs."""
    return [
        {"stage": d.stage, "outcome": d.outcome,
         "verdict": d.verdict.value if d.verdict else None, "reason": d.reason,
         "notes": d.notes, "ms": round(d.seconds * 1000, 3)}
        for d in decisions
    ]
