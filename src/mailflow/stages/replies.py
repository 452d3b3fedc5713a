"""Stage ``replies``: an agent's answer to a customer, recorded on its case.

Runs for mail whose direction is ``reply`` only (see :mod:`mailflow.direction`:
an agent or team the rules know, writing from a trusted network or the
submission listener, not automatically). The reply joins its case by
``In-Reply-To``/``References`` (the customer's message, our acknowledgement)
or by a case number in its Subject and, addressed to that case's customer
(an agent forwarding the case to a colleague is not answering it), it is
recorded on the case (who, when:
``mailflow cases show`` lists it, and the case's first response time comes
from it) and raises ``CaseAnswered`` (:mod:`mailflow.events`): the ``sla``
stage meets the case's running deadlines and cancels their timers, the
``statistics`` stage records the delays. A reply that matches no case is
relayed untouched, counted, and opens nothing. Replies get no routing and no
acknowledgement, and leave without our routing headers.

Configuration (rules section ``replies``, optional)::

    replies:
      tag_subject: false   # true: put [case number] in front of the Subject, so the
                           # customer's answer joins the case (rewriting breaks DKIM)

Metrics: ``mailflow_replies_total{outcome}`` (``joined``, ``no_case``,
``not_to_customer``).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any

from mailflow import cases
from mailflow.events import CaseAnswered
from mailflow.hookspecs import hookimpl
from mailflow.stage import (
    CaseInfo,
    CaseStatus,
    Direction,
    KnownLabels,
    MessageContext,
    Stage,
    StageEnv,
    StageOptions,
)
from mailflow.store import Transaction
from mailflow.store.schema import Schema


class RepliesOptions(StageOptions):
    tag_subject: bool = False


class RepliesStage(Stage[RepliesOptions]):
    name = "replies"
    description = "record an agent's reply on its case (no routing, no acknowledgement)"
    directions = frozenset({Direction.REPLY})

    def __init__(self, options: RepliesOptions, env: StageEnv) -> None:
        super().__init__(options, env)
        self.counter = env.metrics.counter("mailflow_replies_total",
                                           "Agents' replies by outcome (joined a case, or none)",
                                           ["outcome"])

    def known_labels(self) -> Iterable[KnownLabels]:
        return [KnownLabels.of("mailflow_replies_total",
                               outcome=["joined", "no_case", "not_to_customer"])]

    async def process(self, ctx: MessageContext) -> None:
        assert ctx.store is not None
        if ctx.case is not None:  # joined already: an expert's answer, by its reply address
            return
        found = await ctx.store.run_read(partial(self._find, ctx=ctx))
        if found is None:
            self.counter.labels(outcome="no_case").inc()
            ctx.note(case=None, because="no case referenced (relayed untouched)")
            return
        number, customer, route = found
        if customer not in {r.lower() for r in ctx.message.envelope.rcpt_to}:
            # an agent forwarding the case to a colleague is not answering the customer
            self.counter.labels(outcome="not_to_customer").inc()
            ctx.note(case=None, because=f"not addressed to {customer}, the customer of {number}")
            return
        agent = ctx.author or ctx.message.envelope.mail_from.lower()
        ctx.case = CaseInfo(number=number, status=CaseStatus.REPLY, customer=customer,
                            route=route)
        ctx.write(partial(cases.add_case_message, number=number,
                          message_id=ctx.message.message_id, role="agent", sender=agent,
                          queue_id=ctx.queue_id),
                  undo=partial(cases.remove_case_messages, queue_id=ctx.queue_id))
        await ctx.emit(CaseAnswered(number, ctx.received_at, by=agent, role="agent",
                                    agent=ctx.agent_label, route=route))
        if self.options.tag_subject:
            ctx.subject_tag = f"[{number}]"
        self.counter.labels(outcome="joined").inc()
        ctx.note(case=number, agent=agent, customer=customer)

    @staticmethod
    def _find(tx: Transaction, *, ctx: MessageContext) -> tuple[str, str, str | None] | None:
        """(case, customer, route) the reply answers, by its references, then its Subject."""
        message = ctx.message
        ids = [*message.message_ids("References"), *message.message_ids("In-Reply-To")]
        number = cases.case_of_references(tx, ids) if ids else None
        candidates = [number] if number else cases.first_match([message.subject],
                                                               cases.ANY_NUMBER)
        for candidate in candidates:
            row = cases.get_case(tx, candidate)
            if row is not None:
                return row.number, row.customer, row.route
        return None


@hookimpl(trylast=True)
def mailflow_stages() -> Iterable[type[Stage[Any]]]:
    return [RepliesStage]


@hookimpl
def mailflow_schemas() -> Iterable[Schema]:
    return [cases.SCHEMA]
