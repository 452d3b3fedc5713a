"""Stage ``answers``: suggested answers from the library, and the companion an agent sends.

For each customer message of a case (a new case, a follow-up; not a copy, not
automatic mail), the validated answers in the customer's language are ranked
against the customer's own text (:mod:`mailflow.answers.rank`); the three best
the case can fill in are recorded on the case (``mailflow cases show``), with
the confidence and the words that matched (``mailflow try`` shows them).

On a route that opts in (``companion:``), when the confidence reaches the
route's threshold, the case's assignee (or the team's addresses, for a team
without members) gets a companion beside the customer's message: the best
answer filled in, nothing else in its body (:mod:`mailflow.answers.letters`),
and a reply address of its own, ``answers+<case>.<token>@``. The customer's
message itself is relayed as received: suggestions never touch it.

Replying to the companion sends the answer. Such a reply is direction
``reply`` only from an agent or team the rules know writing from where agents
write (a trusted network, the submission listener): from anywhere else the
address is a service mailbox like any other, and the message inbound mail. Of
those, only the case's assignee or a member of its team may send: mailflow
takes the agent's text (:mod:`mailflow.answers.reply`), writes it to the
customer threaded on their last message, from the service mailbox (or the
agent, ``send_from: agent``), with a copy to the agent; records it as the
agent's answer (``CaseAnswered``: first response, statistics) and which
answer was used. The agent's reply itself goes nowhere else (its other
recipients, if any, still get it).

Configuration (rules section ``answers``)::

    answers:
      folder: answers            # rules/answers/<theme>/<id>.<lang>.md
      default_language: fr       # when the customer's language cannot be told
      companion: {sav: 0.3}      # route -> confidence threshold
      agent_names: {support@example.com: "L'équipe support"}

Metrics: ``mailflow_answer_suggestions_total{outcome}``,
``mailflow_answer_companions_total{route}``, ``mailflow_answers_sent_total{how}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import partial
from typing import Any, get_args

from mailflow import cases
from mailflow.answers import letters, records
from mailflow.answers.fields import Later, form_fields
from mailflow.answers.options import AnswersOptions
from mailflow.answers.reply import How, agent_text
from mailflow.answers.review import review
from mailflow.answers.suggest import Suggester, Suggestions
from mailflow.config import Problem
from mailflow.direction import new_token, reply_address, reply_base, token_address, tokens_to
from mailflow.events import CaseAnswered
from mailflow.hookspecs import hookimpl
from mailflow.services import TEAMS
from mailflow.stage import (
    CaseInfo,
    CaseStatus,
    Direction,
    KnownLabels,
    MessageContext,
    ScopePart,
    Stage,
    StageEnv,
    Verdict,
)
from mailflow.store import Transaction
from mailflow.store.schema import Schema


def signing_name(address: str, names: dict[str, str]) -> str:
    """The name that signs for ``address``: the rules', else ``first.last`` → "First Last"."""
    address = address.lower()
    if address in names:
        return names[address]
    local = address.partition("@")[0]
    parts = [p for p in local.split(".") if p.isalpha()]
    return " ".join(p.capitalize() for p in parts) if len(parts) >= 2 else ""


class AnswersStage(Stage[AnswersOptions]):
    name = "answers"
    description = "suggest library answers; send an agent's companion to the customer"
    directions = frozenset({Direction.INBOUND, Direction.REPLY})
    requires = ("number",)

    def __init__(self, options: AnswersOptions, env: StageEnv) -> None:
        super().__init__(options, env)
        self.suggester = Suggester.load(env.rules.template_path(options.folder))
        self.base = reply_base(options.reply_local_part, options.reply_domain,
                               env.rules.local_domains)
        self.host = env.settings.smtp.hostname
        self.suggested = env.metrics.counter(
            "mailflow_answer_suggestions_total", "Customer messages ranked against the"
            " answer library, by outcome", ["outcome"])
        self.companions = env.metrics.counter(
            "mailflow_answer_companions_total", "Companions (a suggested answer) sent to"
            " agents, by route", ["route"])
        self.sent = env.metrics.counter(
            "mailflow_answers_sent_total", "Suggested answers agents sent to customers,"
            " by how (unedited, written, edited in place)", ["how"])

    def scope(self) -> ScopePart:
        return ScopePart(reply_addresses=frozenset({self.base}))

    def known_labels(self) -> Iterable[KnownLabels]:
        hows = [how.replace(" ", "_") for how in get_args(How)]
        return [KnownLabels.of("mailflow_answer_suggestions_total",
                               outcome=["automatic", "no_language", "none", "suggested"]),
                KnownLabels.of("mailflow_answers_sent_total", how=hows),
                KnownLabels.of("mailflow_outbox_sent_total", kind=["answer", "answer-companion"]),
                KnownLabels.of("mailflow_outbox_failures_total",
                               kind=["answer", "answer-companion"])]

    def warnings(self) -> Iterable[Problem]:
        return review(self.suggester.library, languages=self.options.languages,
                      today=datetime.fromtimestamp(self.env.clock.now()).date(),
                      duplicate_threshold=self.options.duplicate_threshold)

    async def process(self, ctx: MessageContext) -> None:
        if ctx.direction is Direction.REPLY:
            await self._send(ctx)
        else:
            await self._suggest(ctx)

    # -- a customer's message: suggest -------------------------------------------

    def _language(self, ctx: MessageContext) -> str | None:
        code = ctx.language.code
        if code in self.suggester.indexes:
            return code
        return self.options.default_language

    def _fields(self, ctx: MessageContext, case: CaseInfo, signer: str) -> dict[str, Any]:
        language = self._language(ctx) or "fr"
        promised: Later | str = ""
        if case.promised_at is not None:
            calendar, at = self.env.calendars.default, case.promised_at
            promised = Later(lambda: calendar.format(datetime.fromtimestamp(at, calendar.zone),
                                                     language))
        sender = ctx.message.envelope.mail_from.lower()
        form = (form_fields(ctx.message.text) if sender in self.options.form_senders else {})
        return {"customer_name": case.customer_name, "case": case.number,
                "promised": promised, "subject": " ".join(ctx.message.subject.split()),
                "agent_name": signing_name(signer, self.options.agent_names) if signer else "",
                "form": form}

    def _recipients(self, case: CaseInfo) -> list[str]:
        if case.assignee:
            return [case.assignee]
        teams = self.env.services.get(TEAMS) or {}
        return list(teams.get(case.route or "", ())) or ([case.mailbox] if case.mailbox else [])

    async def _suggest(self, ctx: MessageContext) -> None:
        case = ctx.case
        if case is None or not case.status.from_customer:
            ctx.note(suggestions=None, because="not a customer's message of a case")
            return
        if ctx.automatic is not None:
            self.suggested.labels(outcome="automatic").inc()
            ctx.note(suggestions=None, because=f"automatic mail ({ctx.automatic.why})")
            return
        language = self._language(ctx)
        if language is None:
            self.suggested.labels(outcome="no_language").inc()
            ctx.note(suggestions=None, because=f"language {ctx.language}: no answers in it")
            return
        to = self._recipients(case)
        fields = self._fields(ctx, case, to[0] if len(to) == 1 else "")
        found = self.suggester.suggest(language, ctx.message.subject, ctx.customer_text,
                                       fields)
        if not found.offers:
            self.suggested.labels(outcome="none").inc()
            ctx.note(language=language, suggestions=[], because="no answer matched")
            return
        self.suggested.labels(outcome="suggested").inc()
        confidence = found.ranking.confidence
        rows = [records.Suggestion(i + 1, o.match.answer.id, o.match.answer.code,
                                   o.match.answer.title, language, confidence,
                                   ", ".join(o.match.matched))
                for i, o in enumerate(found.offers)]
        ctx.write(partial(records.record_suggestions, case=case.number,
                          message_id=ctx.message.message_id, queue_id=ctx.queue_id,
                          suggestions=rows),
                  undo=partial(records.forget, queue_id=ctx.queue_id))
        ctx.note(language=language, confidence=confidence, suggestions=[
            f"{o.match.answer.code} {o.match.answer.id} ({o.match.score:.2f}):"
            f" {', '.join(o.match.matched) or '-'}" for o in found.offers])
        self._companion(ctx, case, found, to)

    def _companion(self, ctx: MessageContext, case: CaseInfo, found: Suggestions,
                   to: list[str]) -> None:
        threshold = self.options.companion.get(case.route or "")
        confidence = found.ranking.confidence
        if threshold is None:
            ctx.note(companion=None, because=f"route {case.route} does not ask for one")
            return
        if confidence < threshold or not found.best_offered or not to:
            why = (f"confidence {confidence:.2f} below {threshold:.2f}"
                   if confidence < threshold else "the best answer cannot be filled in"
                   if not found.best_offered else "nobody to send it to")
            ctx.note(companion=None, because=why)
            return
        best, *others = found.offers
        token = new_token()
        answer = best.match.answer
        address = reply_address(self.base, case.number, token)
        written = letters.companion(
            host=self.host, case=case.number, sender=case.mailbox or ctx.mailbox,
            sender_name=self.options.from_name, to=to, reply_to=address,
            best=letters.Named(answer.code, answer.title),
            others=[letters.Named(o.match.answer.code, o.match.answer.title) for o in others],
            confidence=confidence, text=best.text, customer_subject=ctx.message.subject,
            in_reply_to=ctx.message.message_id or None, references=(), now=ctx.clock.now())
        ctx.queue_mail(written.mail)
        expires = self.env.calendars.default.add(ctx.received_at, self.options.token_valid_for)
        companion = records.Companion(token, case.number, answer.id, answer.code,
                                      answer.language, ",".join(to), best.text,
                                      written.message_id, records.WAITING, ctx.received_at,
                                      expires)
        ctx.write(partial(records.record_companion, companion=companion, queue_id=ctx.queue_id))
        ctx.write(partial(cases.add_case_message, number=case.number,
                          message_id=written.message_id, role="companion", sender=to[0],
                          queue_id=ctx.queue_id))
        self.companions.labels(route=case.route or "none").inc()
        ctx.note(companion=answer.code, to=to, reply_to=address)

    # -- the agent's reply to a companion: send the answer ------------------------

    async def _send(self, ctx: MessageContext) -> None:
        found = tokens_to(ctx.message, {self.base})
        if not found or ctx.case is not None:
            return  # an agent's ordinary reply: the replies stage's
        assert ctx.store is not None
        _, token = found[0]
        looked = await ctx.store.run_read(partial(_look, token=token))
        refusal = self._refusal(ctx, looked)
        if refusal is not None:
            ctx.set_verdict(Verdict.REJECT, refusal, f"550 5.7.1 {refusal}")
            return
        assert looked is not None
        companion, row, thread = looked
        made = agent_text(ctx.message.text, companion.text)
        if made is None:
            ctx.set_verdict(Verdict.REJECT, "nothing to send",
                            "550 5.6.0 Nothing to send: write the answer above the quote")
            return
        agent = ctx.author or ctx.message.envelope.mail_from.lower()
        sender = row.mailbox if self.options.send_from == "mailbox" else agent
        name = self.options.from_name if self.options.send_from == "mailbox" else \
            signing_name(agent, self.options.agent_names)
        written = letters.answer(host=self.host, sender=sender or agent, sender_name=name,
                                 customer=row.customer, subject=row.subject, text=made.text,
                                 thread=thread, now=ctx.clock.now(), case=row.number)
        copy = written.mail
        ctx.queue_mail(type(copy)(copy.kind, (row.customer, agent), copy.data, copy.mail_from))
        ctx.case = CaseInfo(number=row.number, status=CaseStatus.REPLY, customer=row.customer,
                            mailbox=row.mailbox, route=row.route, assignee=row.assignee)
        ctx.write(partial(records.mark_sent, token=companion.token, at=ctx.received_at,
                          by=agent, message_id=written.message_id, edited=made.edited,
                          queue_id=ctx.queue_id))
        ctx.write(partial(cases.add_case_message, number=row.number,
                          message_id=written.message_id, role="agent", sender=agent,
                          queue_id=ctx.queue_id),
                  undo=partial(cases.remove_case_messages, queue_id=ctx.queue_id))
        await ctx.emit(CaseAnswered(row.number, ctx.received_at, by=agent, role="agent",
                                    agent=ctx.agent_label, route=row.route))
        self.sent.labels(how=made.how.replace(" ", "_")).inc()
        others = [r for r in ctx.recipients if token_address(r, {self.base}) is None]
        if others:
            ctx.set_recipients(others)
        else:
            ctx.set_verdict(Verdict.DISCARD, "the answer went to the customer")
        ctx.note(case=row.number, answer=companion.code, how=made.how, to=row.customer,
                 copy_to=agent)

    def _refusal(self, ctx: MessageContext,
                 looked: tuple[records.Companion, cases.CaseRow, list[str]] | None) -> str | None:
        """Why this reply may not send the answer (None: it may)."""
        if looked is None:
            return "No such suggested answer: nothing was sent to the customer"
        companion, row, _ = looked
        if companion.expires_at <= ctx.received_at:
            return "This suggested answer has expired: nothing was sent to the customer"
        if companion.state == records.SENT:
            return "This suggested answer was sent already: nothing more was sent"
        author = (ctx.author or "").lower()
        if author != (row.assignee or "").lower() and (ctx.team is None
                                                      or ctx.team != row.route):
            return "Only the case's agent or team may send this answer: nothing was sent"
        return None


def _look(tx: Transaction, *, token: str,
          ) -> tuple[records.Companion, cases.CaseRow, list[str]] | None:
    companion = records.get_companion(tx, token)
    row = cases.get_case(tx, companion.case) if companion is not None else None
    if companion is None or row is None:
        return None
    return companion, row, records.customer_thread(tx, row.number)


@hookimpl(trylast=True)
def mailflow_stages() -> Iterable[type[Stage[Any]]]:
    return [AnswersStage]


@hookimpl
def mailflow_schemas() -> Iterable[Schema]:
    return [cases.SCHEMA, records.SCHEMA]


@hookimpl
def mailflow_case_lines(tx: Transaction, number: str) -> Iterable[tuple[str, str]]:
    """The suggestions of each customer message, and the answers agents sent."""
    lines = []
    for _, _, s in records.suggestions_of(tx, number):
        lines.append(("suggested", f"{s.rank}. {s.code} {s.title} [{s.answer_id},"
                      f" {s.language}] confidence {s.confidence:.2f}; words: {s.matched or '-'}"))
    for c in records.companions_of(tx, number):
        state = (f"sent by {c.sent_by} ({'edited' if c.edited else 'unedited'})"
                 if c.state == records.SENT else "waiting for the agent")
        lines.append(("companion", f"{c.code} {c.answer_id} to {c.sent_to}: {state}"))
    return lines
