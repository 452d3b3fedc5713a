"""Stage ``deduplicate``: one case and one acknowledgement per message, however many copies.

The ``number`` stage (which must run first) recognises a copy: the same
Message-ID in another transaction (a customer writing to sav@ and contact@,
a client retrying after a timeout) or a resend (same sender, same text within
its window, new Message-ID). This stage marks the copy with
``X-Mailflow-Duplicate: <case>`` and, per ``action``, still delivers it or
discards it. A discarded copy is logged, counted, and its record kept.
(One transaction to several local addresses is one message: one case.)
A client's retry of a message the next hop may already have (it vanished
after the data, or mailflow was killed before its answer) is marked too but
always delivered, even with ``action: discard``: the first copy may never
have arrived.

Configuration (rules section ``deduplicate``)::

    deduplicate:
      action: deliver     # or: discard

Verdicts: ``discard`` for a copy when ``action: discard``.
Metrics: ``mailflow_duplicates_total{kind, action}``. Log events: ``duplicate``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import structlog

from mailflow.hookspecs import hookimpl
from mailflow.stage import (
    CaseStatus,
    Direction,
    KnownLabels,
    MessageContext,
    Stage,
    StageEnv,
    StageOptions,
    Verdict,
)

log = structlog.get_logger("mailflow.stages.deduplicate")


class DeduplicateOptions(StageOptions):
    action: Literal["deliver", "discard"] = "deliver"


class DeduplicateStage(Stage[DeduplicateOptions]):
    name = "deduplicate"
    description = "mark copies and resends of a message already seen; deliver or discard them"
    requires = ("number",)
    directions = frozenset({Direction.INBOUND})

    def __init__(self, options: DeduplicateOptions, env: StageEnv) -> None:
        super().__init__(options, env)
        self.action = options.action
        self.counter = env.metrics.counter("mailflow_duplicates_total",
                                           "Copies and resends of messages already seen",
                                           ["kind", "action"])

    def known_labels(self) -> Iterable[KnownLabels]:
        return [KnownLabels.of("mailflow_duplicates_total", action=[self.action],
                               kind=[s.value for s in CaseStatus if s.is_duplicate])]

    async def process(self, ctx: MessageContext) -> None:
        if ctx.case is None or not ctx.case.status.is_duplicate:
            return
        case, kind = ctx.case.number, ctx.case.status.value
        ctx.set_header("X-Mailflow-Duplicate", case)
        self.counter.labels(kind=kind, action=self.action).inc()
        log.info("duplicate", queue_id=ctx.queue_id, case=case, kind=kind, action=self.action,
                 message_id=ctx.message.message_id)
        ctx.note(duplicate_of=case, kind=kind, action=self.action)
        if self.action == "discard" and not ctx.case.status.is_retry:
            ctx.set_verdict(Verdict.DISCARD, f"{kind} of a message in case {case}")


@hookimpl(trylast=True)
def mailflow_stages() -> Iterable[type[Stage[Any]]]:
    return [DeduplicateStage]
