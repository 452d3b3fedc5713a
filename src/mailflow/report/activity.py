"""What mailflow itself did in a report's period: the mail it wrote, and in shadow mode's
store what it would have decided. Counts only, as every table of the report."""

from __future__ import annotations

from mailflow.host import ReportSection
from mailflow.store import Transaction

#: how the outbox's kinds read in the report
MAIL_KINDS = {"ack": "acknowledgements", "escalation": "forwards to experts",
              "escalation-reminder": "reminders to experts",
              "escalation-supervisor": "notices to supervisors",
              "sla-warning": "SLA warnings", "sla-breach": "SLA breach notices",
              "bounce": "bounces to senders"}


def mail_written(tx: Transaction, since: float, until: float) -> ReportSection | None:
    """The outbox's mail of the period by kind (None when there was none); in shadow
    mode's store none of it left: the outbox there captures and marks it sent."""
    shadow = bool(tx.execute("SELECT 1 FROM messages WHERE state LIKE 'shadow%' LIMIT 1"))
    rows = tx.execute("SELECT kind, state, count(*) FROM outbox WHERE created_at >= :since"
                      " AND created_at < :until GROUP BY kind, state ORDER BY kind",
                      {"since": since, "until": until})
    by_kind: dict[str, dict[str, int]] = {}
    for kind, state, count in rows:
        by_kind.setdefault(str(kind), {})[str(state)] = int(count)
    if not by_kind:
        return None
    if shadow:
        return ReportSection(
            title="Mail mailflow would have sent (shadow mode: none of it was sent)",
            columns=("mail", "messages"),
            rows=tuple((MAIL_KINDS.get(k, k), sum(s.values())) for k, s in by_kind.items()))
    return ReportSection(
        title="Mail mailflow wrote", columns=("mail", "sent", "waiting", "not sent"),
        rows=tuple((MAIL_KINDS.get(k, k), s.get("sent", 0), s.get("ready", 0),
                    sum(n for state, n in s.items() if state not in ("sent", "ready")))
                   for k, s in by_kind.items()))


def shadow_decisions(tx: Transaction, since: float, until: float) -> ReportSection | None:
    """Shadow mode: the verdicts the chain gave live traffic, and the messages a plugin
    would have refused during the SMTP dialogue; all of it was relayed as received."""
    rows = tx.execute("SELECT state, verdict, count(*) FROM messages WHERE received_at >="
                      " :since AND received_at < :until AND state LIKE 'shadow%'"
                      " GROUP BY state, verdict ORDER BY verdict",
                      {"since": since, "until": until})
    counted = [(str(state), str(verdict), int(n)) for state, verdict, n in rows]
    if not counted:
        return None
    verdicts: dict[str, int] = {}
    for state, verdict, n in counted:
        key = "refused during SMTP" if state == "shadow-refused" else verdict
        verdicts[key] = verdicts.get(key, 0) + n
    return ReportSection(
        title="What mailflow would have decided (shadow mode: every message was relayed"
              " as received)", columns=("decision", "messages"),
        rows=tuple(sorted(verdicts.items())))
