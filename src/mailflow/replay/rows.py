"""What a replay says of each message: one row, for the terminal, JSON and CSV, and the
fields two rule folders are compared on (``--against``)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailflow.context import MessageContext
    from mailflow.replay.archive import Archived

#: what ``--against`` compares: what a team would notice changing
COMPARED = ("direction", "automatic", "route", "priority", "ack", "escalation")


@dataclass
class Row:
    """One replayed message: what the daemon would have done with it."""

    index: int
    source: str
    at: str  # when it arrived (UTC, ISO 8601)
    mail_from: str
    rcpt_to: str
    message_id: str
    reply: str  # what the client would have heard
    direction: str = ""
    direction_why: str = ""
    automatic: str = ""  # "sign: why", or empty
    case: str = ""
    case_status: str = ""  # new, followup, reopened, copy, resend, reply
    priority: str = ""
    score: float | None = None
    route: str = ""
    assignee: str = ""
    ack: str = ""  # sent, suppressed, or empty (no acknowledge stage ran)
    ack_why: str = ""
    escalation: str = ""  # "rule -> experts", or empty
    deadline: str = ""  # the case's first-response deadline: met, breached, pending


def _decision(ctx: MessageContext, stage: str) -> dict[str, Any]:
    for decision in ctx.decisions:
        if decision.stage == stage:
            return decision.notes
    return {}


def row_of(index: int, item: Archived, reply: str, ctx: MessageContext | None) -> Row:
    """The row of a message as its context left it (None: refused before the chain)."""
    at = datetime.fromtimestamp(item.at, UTC).isoformat(timespec="seconds")
    row = Row(index, item.source, at, item.envelope.mail_from,
              " ".join(item.envelope.rcpt_to), "", reply)
    if ctx is None:
        return row
    row.message_id = ctx.message.message_id
    row.direction, row.direction_why = ctx.direction.value, ctx.direction_reason
    if ctx.automatic is not None:
        row.automatic = f"{ctx.automatic.sign}: {ctx.automatic.why}"
    if ctx.case is not None:
        row.case, row.case_status = ctx.case.number, ctx.case.status.value
        row.route, row.assignee = ctx.case.route or "", ctx.case.assignee or ""
    if ctx.triage is not None:
        row.priority, row.score = ctx.triage.priority, ctx.triage.score
    ack = _decision(ctx, "acknowledge")
    if "sent" in ack:
        row.ack = "sent" if ack["sent"] else "suppressed"
        row.ack_why = str(ack.get("reason", ack.get("language", "")))
    escalation = _decision(ctx, "escalate")
    if escalation.get("rule") and escalation.get("experts"):
        row.escalation = f"{escalation['rule']} -> {', '.join(escalation['experts'])}"
    return row


def write(rows: Sequence[Row], path: Path) -> None:
    """One row per message, as ``.json`` (a list) or ``.csv`` (a header line first)."""
    if path.suffix.lower() == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, [f.name for f in fields(Row)])
            writer.writeheader()
            writer.writerows(asdict(row) for row in rows)
        return
    path.write_text(json.dumps([asdict(row) for row in rows], indent=1, ensure_ascii=False),
                    encoding="utf-8")


def differences(ours: Sequence[Row], theirs: Sequence[Row]) -> list[dict[str, Any]]:
    """The messages whose compared fields differ between two replays of one archive."""
    found = []
    for a, b in zip(ours, theirs, strict=True):
        changed = {name: (getattr(a, name), getattr(b, name)) for name in COMPARED
                   if getattr(a, name) != getattr(b, name)}
        if changed:
            found.append({"index": a.index, "source": a.source, "message_id": a.message_id,
                          "changed": changed})
    return found
