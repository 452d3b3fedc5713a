"""Recording an answer to a customer: its delays, in the store and in the metrics.

The ``statistics`` stage's listener of ``CaseAnswered`` (an agent's reply, an
expert answering the customer directly: whoever raises it), run on the
answering message's context, before its transaction: what it writes commits
with the answer or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from zoneinfo import ZoneInfo

from mailflow import cases
from mailflow.context import Effects
from mailflow.events import CaseAnswered
from mailflow.stats.metrics import StatsMetrics, label
from mailflow.stats.store import Response, day_of, forget_responses
from mailflow.store import Transaction


@dataclass(frozen=True)
class Waiting:
    """What the case looked like when the answer came."""

    opened_at: float
    route: str
    priority: str
    answered_before: bool
    #: the first response's deadline (the SLA's, else the acknowledgement's promise)
    due: float | None
    #: the oldest customer message since the last answer (None: the customer has it)
    waiting_since: float | None


def waiting(tx: Transaction, number: str) -> Waiting | None:
    row = cases.get_case(tx, number)
    if row is None:
        return None
    roles = ", ".join(f"'{r}'" for r in cases.RESPONSE_ROLES)
    (last_answer,), = tx.execute(
        f"SELECT MAX(created_at) FROM case_messages WHERE case_number = :number"
        f" AND role IN ({roles})", {"number": number})
    (since,), = tx.execute(
        "SELECT MIN(created_at) FROM case_messages WHERE case_number = :number"
        " AND role = 'customer' AND created_at > :after",
        {"number": number, "after": -1.0 if last_answer is None else last_answer})
    due = row.promised_at
    (deadline,), = tx.execute("SELECT MIN(due) FROM sla_deadlines"
                              " WHERE case_number = :number AND kind = 'first_response'",
                              {"number": number})
    if deadline is not None:
        due = float(deadline)
    return Waiting(row.created_at, row.route or "", row.priority or "",
                   last_answer is not None, due, None if since is None else float(since))


async def record_answer(ctx: Effects, event: CaseAnswered, metrics: StatsMetrics,
                        zone: ZoneInfo, per_agent: bool) -> None:
    """The case got an answer to its customer (``event``), with the work of ``ctx``."""
    if ctx.store is None or event.automatic:
        return
    case = await ctx.store.run_read(partial(waiting, number=event.number))
    if case is None:
        return
    at, day = event.at, day_of(event.at, zone)
    agent = event.agent if per_agent else ""
    route, priority = label(case.route), label(case.priority)
    answers: list[Response] = []
    if not case.answered_before:
        in_time = None if case.due is None else at <= case.due
        answers.append(Response(at, day, "first_response", max(0.0, at - case.opened_at),
                                case.route, case.priority, agent, in_time))
        metrics.first_response.labels(route=route, priority=priority).observe(
            answers[-1].seconds)
        metrics.first_responses.labels(route=route, priority=priority, in_time={
            True: "yes", False: "no", None: "none"}[in_time]).inc()
    if case.waiting_since is not None:
        seconds = max(0.0, at - case.waiting_since)
        answers.append(Response(at, day, "response", seconds, case.route, case.priority,
                                agent))
        metrics.response.labels(route=route, priority=priority).observe(seconds)
        if metrics.agent_response is not None:
            metrics.agent_response.labels(agent=event.agent).observe(seconds)
    if metrics.agent_replies is not None:
        metrics.agent_replies.labels(agent=event.agent).inc()
    queue_id = ctx.queue_id
    for answer in answers:
        ctx.write(partial(answer.record, queue_id=queue_id),
                  undo=partial(forget_responses, queue_id=queue_id) if queue_id else None)
