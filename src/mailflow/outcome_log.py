"""One message's log line and the metrics of its outcome: whose mail it was decides what
the line may say (mail that is not the service's keeps its addresses out of the logs)."""

from __future__ import annotations

import time
from typing import Any

import structlog

from mailflow.context import MessageContext
from mailflow.direction import SERVICE_DIRECTIONS
from mailflow.message import Envelope
from mailflow.metrics import Metrics

log = structlog.get_logger("mailflow.message")


def count_stages(metrics: Metrics, ctx: MessageContext) -> None:
    """Each stage's time, and its failures."""
    for d in ctx.decisions:
        metrics.stage_seconds.labels(stage=d.stage).observe(d.seconds)
        if d.outcome in ("error", "timeout"):
            metrics.stage_failures.labels(stage=d.stage, outcome=d.outcome).inc()


def log_outcome(metrics: Metrics, queue_id: str, envelope: Envelope,
                ctx: MessageContext | None, verdict: str, reply: str, started: float) -> None:
    """The message's line (``started``: its ``perf_counter`` at DATA) and counters."""
    seconds = time.perf_counter() - started
    metrics.messages.labels(verdict=verdict).inc()
    metrics.smtp_replies.labels(code=f"{reply[:1]}xx").inc()
    metrics.message_seconds.observe(seconds)
    if ctx is not None and ctx.direction not in SERVICE_DIRECTIONS:
        # not the service's mail: whose it is stays out of the logs
        log.info("message", queue_id=queue_id, direction=ctx.direction.value,
                 reason=ctx.direction_reason, automatic=_automatic(ctx),
                 size=len(ctx.message.raw), verdict=verdict, reply=reply,
                 ms=round(seconds * 1000, 2))
        return
    fields: dict[str, Any] = {
        "queue_id": queue_id, "mail_from": envelope.mail_from,
        "rcpt_to": list(envelope.rcpt_to), "verdict": verdict, "reply": reply,
        "ms": round(seconds * 1000, 2)}
    if ctx is not None:
        fields["direction"] = ctx.direction.value
        fields["message_id"] = ctx.message.message_id
        fields["automatic"] = _automatic(ctx)
        fields["case"] = ctx.case.number if ctx.case is not None else None
        if ctx.case is not None:
            fields["case_status"] = ctx.case.status.value
            fields["route"] = ctx.case.route
        fields["stages"] = {d.stage: round(d.seconds * 1000, 2) for d in ctx.decisions}
        failed = [d.stage for d in ctx.decisions if d.outcome in ("error", "timeout")]
        if failed:
            fields["failed_stages"] = failed
    log.info("message", **fields)


def _automatic(ctx: MessageContext) -> str | None:
    """The automatic verdict as the logs say it: ``sign: what was seen``."""
    found = ctx.automatic
    return f"{found.sign}: {found.why}" if found is not None else None
