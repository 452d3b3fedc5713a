"""Stage ``escalate``: forward a case to an expert, remind them, then tell a supervisor.

On a new case matched by a rule (route's ``when:``, plus the case's
``route``), a copy goes to the rule's expert (or a present member of an
expert group) through the outbox: the case number in the Subject, a first
line saying how to answer, the customer's message attached
(``message/rfc822``), and a reply address of its own,
``experts+<case>.<token>@<local domain>`` (see
:mod:`mailflow.escalation.tokens`). An ``escalate.remind`` timer follows
``remind_after`` later (at the calendar's next opening); after the last of
``reminders`` reminders, ``escalate.supervisor`` mails the ``supervisor``.

An answer to a reply address with a valid token is direction ``reply`` from
any network (:mod:`mailflow.direction`; the stage provides the token check,
service ``REPLY_TOKENS``): it cancels the escalation's timers, is recorded on
the case (role ``expert``) and is relayed to the case's assignee or team (the
``TEAMS`` service of ``route``), not the customer (unless
``expert_answers_customer``: then it raises ``CaseAnswered``). An expert's
out-of-office cancels nothing: it is recorded and not relayed, and with
``advance_on_auto_reply`` the supervisor is told at once. A closed case
(``CaseClosed``) stops its reminders.

Configuration (rules section ``escalate``)::

    escalate:
      reply_local_part: experts        # experts+<case>.<token>@<reply_domain>
      reply_domain: example.com        # default: the first of local_domains
      calendar: default
      groups:
        legal-experts: {members: [maitre.durand@example.com], strategy: first_present}
      rules:
        - name: legal-notice
          when: {route: [legal], keyword: ["mise en demeure"]}
          group: legal-experts         # or expert: ADDRESS
          remind_after: 4bh            # 90s, 30m, 4h, 2bh, 1bd
          reminders: 2
          supervisor: direction-juridique@example.com

Metrics: ``mailflow_escalations_total{rule}``, ``mailflow_escalation_reminders_total``,
``mailflow_escalation_supervisor_total``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping
from functools import partial
from typing import Any

import structlog

from mailflow import agents, cases
from mailflow.conditions import CompiledCondition, lazy_keyword_hits, message_recipients
from mailflow.context import Effects, StageStore, TimerHandler
from mailflow.direction import reply_base, token_address, tokens_to
from mailflow.escalation import mail, tokens
from mailflow.escalation.options import EscalateOptions, EscalationRule
from mailflow.escalation.timers import HANDLERS, SUPERVISOR, FollowUp, cancel, schedule_next
from mailflow.escalation.tokens import ANSWERED, WAITING, Escalation
from mailflow.events import CaseAnswered, CaseClosed, CaseEvent, Listener
from mailflow.hookspecs import hookimpl
from mailflow.host import Purge
from mailflow.message import Message
from mailflow.presence import present_members, take_turn
from mailflow.retention import of_closed_cases
from mailflow.services import REPLY_TOKENS, TEAMS, Services, Token
from mailflow.stage import (
    CaseInfo,
    CaseStatus,
    Direction,
    KnownLabels,
    MessageContext,
    ScopePart,
    Stage,
    StageEnv,
    Timer,
    Verdict,
)
from mailflow.stats.metrics import StatsMetrics
from mailflow.stats.store import Count, Response, day_of, forget_responses
from mailflow.store import Transaction
from mailflow.store.schema import Schema
from mailflow.textmatch import parse_term

log = structlog.get_logger("mailflow.stages.escalate")


class _ReplyTokens:
    """The check of reply-address tokens, offered to the reception (``REPLY_TOKENS``)."""

    def __init__(self, base: str) -> None:
        self.bases = frozenset({base})

    async def verified(self, message: Message, store: StageStore,
                       now: float) -> Collection[Token]:
        return await tokens.verified(message, self.bases, store, now)


class EscalateStage(Stage[EscalateOptions]):
    name = "escalate"
    description = "forward cases to experts by rule; remind them, then a supervisor"
    directions = frozenset({Direction.INBOUND, Direction.REPLY})
    requires = ("number",)

    def __init__(self, options: EscalateOptions, env: StageEnv) -> None:
        super().__init__(options, env)
        try:
            self.calendar = env.calendars.get(options.calendar)
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None
        for rule in options.rules:
            if rule.group is not None and rule.group not in options.groups:
                raise ValueError(f"rule '{rule.name}' names unknown group '{rule.group}'"
                                 f" (groups: {', '.join(sorted(options.groups)) or 'none'})")
        self.base = reply_base(options.reply_local_part, options.reply_domain,
                               env.rules.local_domains)
        self.host = env.settings.smtp.hostname
        self.rules = [CompiledCondition(r.when, str(i)) for i, r in enumerate(options.rules)]
        self.keywords = env.terms.matcher([parse_term(k, str(i))
                                           for i, r in enumerate(options.rules)
                                           for k in r.when.keyword])
        self.stats = StatsMetrics.of(env.metrics, env.settings.statistics.per_agent)
        self.zone = env.calendars.default.zone
        self.counter = env.metrics.counter("mailflow_escalations_total",
                                           "Cases forwarded to an expert, by rule", ["rule"])
        HANDLERS.bind(env.calendars,
                      env.metrics.counter("mailflow_escalation_reminders_total",
                                          "Reminders sent to experts"),
                      env.metrics.counter("mailflow_escalation_supervisor_total",
                                          "Escalations handed to the supervisor after the"
                                          " last reminder"),
                      self.host)

    def scope(self) -> ScopePart:
        return ScopePart(reply_addresses=frozenset({self.base}))

    def provide(self, services: Services) -> None:
        services.provide(REPLY_TOKENS, _ReplyTokens(self.base), self.name)

    def listeners(self) -> Iterable[tuple[type[CaseEvent], Listener]]:
        return [(CaseClosed, _closed)]

    def known_labels(self) -> Iterable[KnownLabels]:
        rules = [rule.name for rule in self.options.rules]
        kinds = ["escalation", "escalation-reminder", "escalation-supervisor"]
        return [KnownLabels.of("mailflow_escalations_total", rule=rules),
                KnownLabels.of("mailflow_expert_answer_seconds", rule=rules),
                *(KnownLabels.of(name, kind=kinds) for name in (
                    "mailflow_outbox_sent_total", "mailflow_outbox_failures_total"))]

    async def process(self, ctx: MessageContext) -> None:
        if ctx.direction is Direction.REPLY:
            await self._answer(ctx)
        else:
            await self._forward(ctx)

    # -- a new case: forward it -------------------------------------------------

    def match(self, ctx: MessageContext) -> EscalationRule | None:
        """The first rule whose ``when:`` (and ``route:``) the message meets."""
        keyword_hits = lazy_keyword_hits(self.keywords, ctx)

        recipients = message_recipients(ctx)
        route = ctx.case.route if ctx.case is not None else None
        for compiled, rule in zip(self.rules, self.options.rules, strict=True):
            if rule.when.route and route not in rule.when.route:
                continue
            if compiled.matches(ctx, recipients, ctx.customer, keyword_hits):
                return rule
        return None

    async def _experts(self, ctx: MessageContext, rule: EscalationRule) -> list[str]:
        """Who is asked: the rule's expert, or the group's present members (the first, in
        turn, or all), never the agent handling the case (asking oneself is no help)."""
        handler = ctx.case.assignee if ctx.case is not None else None
        if rule.expert is not None:
            return [rule.expert] if rule.expert != handler else []
        assert rule.group is not None and ctx.store is not None
        group = self.options.groups[rule.group]
        away = await ctx.store.run_read(agents.away_agents)
        now = dt.datetime.fromtimestamp(ctx.received_at, self.calendar.zone)
        members = [m for m in group.members if m.address != handler]
        present = present_members(members, away, now)
        if not present and members:
            ctx.note(nobody_present=True)  # asked all the same: reminders, then the supervisor
            present = [members[0].address]
        if group.strategy == "all" or not present:
            return present
        if group.strategy == "round_robin":
            return [await take_turn(ctx, f"expert-turn:{rule.group}", present)]
        return present[:1]

    def _follow(self, rule: EscalationRule, token: str, case: str, sender: str) -> FollowUp:
        return FollowUp(token=token, remind_after=str(rule.remind_after),
                        reminders=rule.reminders, supervisor=rule.supervisor or "",
                        calendar=self.options.calendar, sender=sender,
                        sender_name=self.options.from_name,
                        reply_to=tokens.reply_address(self.base, case, token),
                        to_customer=rule.expert_answers_customer)

    def _sender(self, mailbox: str) -> str:
        return self.options.from_address or mailbox or f"postmaster@{self.host}"

    async def _forward(self, ctx: MessageContext) -> None:
        case = ctx.case
        if case is None or case.status is not CaseStatus.NEW:
            ctx.note(escalation=None, because="not a new case")
            return
        why = ctx.automatic
        if why is not None:
            ctx.note(escalation=None, because=f"automatic mail ({why})")
            return
        rule = self.match(ctx)
        if rule is None:
            ctx.note(escalation=None, because="no escalation rule matched")
            return
        experts = await self._experts(ctx, rule)
        if not experts:
            ctx.note(rule=rule.name, escalation=None,
                     because="the only expert is the agent handling the case")
            return
        token = tokens.new_token()
        follow = self._follow(rule, token, case.number, self._sender(case.mailbox or ctx.mailbox))
        head = mail.Letterhead(case.number, follow.sender, follow.sender_name, follow.reply_to,
                               self.host)
        subject = " ".join(ctx.message.subject.split()) or "(sans objet)"
        written = mail.forward(head, experts, subject=subject, original=ctx.message.raw,
                               rule=rule.name, now=ctx.clock.now(),
                               to_customer=rule.expert_answers_customer)
        message_id = written.message_id
        ctx.queue_mail(written.mail)
        escalation = Escalation(
            token=token, case=case.number, rule=rule.name, expert=",".join(experts),
            reply_to=follow.reply_to, message_id=message_id, subject=subject,
            excerpt=ctx.message.text[: self.options.max_excerpt_chars], state=WAITING,
            reminders_sent=0, auto_replies=0, created_at=ctx.received_at,
            expires_at=self.calendar.add(ctx.received_at, self.options.token_valid_for),
            answered_at=None)
        ctx.write(partial(tokens.record, escalation=escalation, queue_id=ctx.queue_id),
                  undo=partial(tokens.forget_escalations, queue_id=ctx.queue_id))
        ctx.write(partial(cases.add_case_message, number=case.number, message_id=message_id,
                          role="escalation", sender=experts[0], queue_id=ctx.queue_id))
        timer = schedule_next(ctx, self.calendar, ctx.received_at, case.number, follow, 0)
        self.counter.labels(rule=rule.name).inc()
        count = Count(day_of(ctx.received_at, self.zone), "escalation", case.route or "",
                      ctx.triage.priority if ctx.triage is not None else "", rule.name)
        ctx.write(count.add, undo=count.give_back)
        log.info("escalation_queued", queue_id=ctx.queue_id, case=case.number, rule=rule.name,
                 to=experts)
        ctx.note(rule=rule.name, experts=experts, reply_to=follow.reply_to,
                 follow_up=timer.kind, due=self._when(timer.due))

    def _when(self, ts: float) -> str:
        return dt.datetime.fromtimestamp(ts, self.calendar.zone).strftime("%Y-%m-%d %H:%M %Z")

    # -- the expert's answer ----------------------------------------------------

    async def _answer(self, ctx: MessageContext) -> None:
        found = tokens_to(ctx.message, {self.base})
        if not found:
            return  # an agent's reply: the replies stage's
        assert ctx.store is not None
        _, token = found[0]
        looked = await ctx.store.run_read(partial(self._look, token=token))
        if looked is None:
            ctx.note(escalation=None, because="reply address of no known escalation")
            return
        escalation, row = looked
        number = row.number
        ctx.case = CaseInfo(number=number, status=CaseStatus.REPLY, customer=row.customer,
                            mailbox=row.mailbox, route=row.route, assignee=row.assignee)
        expert = ctx.author or ctx.message.envelope.mail_from.lower()
        rule = self.options.rule(escalation.rule)
        if ctx.automatic is not None:
            self._auto_reply(ctx, escalation, rule, expert, ctx.automatic.why)
            return
        if escalation.state != ANSWERED:
            cancel(ctx, number)
            ctx.write(partial(tokens.update, token=token, state=ANSWERED,
                              answered_at=ctx.received_at))
        to_customer = rule is not None and rule.expert_answers_customer
        # an expert who answers the customer directly gives the case its response
        ctx.write(partial(cases.add_case_message, number=number,
                          message_id=ctx.message.message_id,
                          role=cases.EXPERT_TO_CUSTOMER if to_customer else "expert",
                          sender=expert, queue_id=ctx.queue_id),
                  undo=partial(cases.remove_case_messages, queue_id=ctx.queue_id))
        if escalation.state != ANSWERED:
            self._count_answer(ctx, escalation)
        if to_customer:
            await ctx.emit(CaseAnswered(number, ctx.received_at, by=expert, role="expert",
                                        agent=ctx.agent_label, route=row.route))
        teams = self.env.services.get(TEAMS) or {}  # without a route stage: the mailbox
        targets = ([row.customer] if to_customer else
                   [row.assignee] if row.assignee else
                   list(teams.get(row.route or "", ())) or [row.mailbox])
        others = [r for r in ctx.recipients if token_address(r, {self.base}) is None]
        ctx.set_recipients([*targets, *others])
        ctx.set_header("X-Mailflow-Case", number)
        log.info("expert_answer_relayed", queue_id=ctx.queue_id, case=number, expert=expert,
                 to=targets)
        ctx.note(case=number, expert=expert, relayed_to=targets, timers_cancelled=True)

    def _count_answer(self, ctx: MessageContext, escalation: Escalation) -> None:
        """The expert's first answer: how long the expert took, by rule."""
        seconds = max(0.0, ctx.received_at - escalation.created_at)
        self.stats.expert_answer.labels(rule=escalation.rule).observe(seconds)
        answer = Response(ctx.received_at, day_of(ctx.received_at, self.zone), "expert",
                          seconds, agent=escalation.rule)
        ctx.write(partial(answer.record, queue_id=ctx.queue_id),
                  undo=partial(forget_responses, queue_id=ctx.queue_id))

    def _auto_reply(self, ctx: MessageContext, escalation: Escalation,
                    rule: EscalationRule | None, expert: str, why: str) -> None:
        """An expert's out-of-office: no answer. Recorded, not relayed; with
        ``advance_on_auto_reply`` the supervisor is told at the next opening."""
        number = escalation.case
        ctx.write(partial(tokens.count_auto_reply, token=escalation.token))
        ctx.write(partial(cases.add_case_message, number=number,
                          message_id=ctx.message.message_id, role="expert-auto",
                          sender=expert, queue_id=ctx.queue_id))
        advanced = None
        if rule is not None and rule.advance_on_auto_reply and escalation.state == WAITING:
            follow = self._follow(rule, escalation.token, number,
                                  self._sender(ctx.case.mailbox if ctx.case else ""))
            cancel(ctx, number)
            advanced = self.calendar.next_open(ctx.received_at)
            ctx.schedule_timer(Timer(SUPERVISOR, advanced, number, follow.payload()))
        ctx.set_verdict(Verdict.DISCARD, f"an expert's automatic reply ({why}): recorded")
        ctx.note(case=number, expert=expert, automatic=why, timers_cancelled=False,
                 supervisor_at=self._when(advanced) if advanced is not None else None)

    @staticmethod
    def _look(tx: Transaction, *, token: str) -> tuple[Escalation, cases.CaseRow] | None:
        escalation = tokens.get(tx, token)
        row = cases.get_case(tx, escalation.case) if escalation is not None else None
        return (escalation, row) if escalation is not None and row is not None else None




def _closed(ctx: Effects, event: CaseClosed) -> None:
    """A closed case needs no expert any more: its reminders stop."""
    cancel(ctx, event.number)


@hookimpl(trylast=True)
def mailflow_stages() -> Iterable[type[Stage[Any]]]:
    return [EscalateStage]


@hookimpl
def mailflow_schemas() -> Iterable[Schema]:
    return [cases.SCHEMA, agents.SCHEMA, tokens.SCHEMA]


@hookimpl
def mailflow_timer_handlers() -> Mapping[str, TimerHandler]:
    return HANDLERS.handlers()


@hookimpl
def mailflow_retention() -> Iterable[Purge]:
    return of_closed_cases("escalations")
