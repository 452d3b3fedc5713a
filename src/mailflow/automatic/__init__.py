"""Which mail is automatic: one detector, configured in one place, asked once per message.

RFC 3834 and RFC 5230 say when a robot must not answer; real robots often
ignore them, so the shipped signs add what mail servers, gateways, list managers,
monitoring tools, ticketing systems and bulk mailers really write: report formats
(:mod:`~mailflow.automatic.reports`), vendor and mailer headers
(:mod:`~mailflow.automatic.headers`), robots' addresses and names
(:mod:`~mailflow.automatic.senders`), subject markers per language
(:mod:`~mailflow.automatic.markers`), and their wording
(:mod:`~mailflow.automatic.phrases`), which counts only where the message's
structure agrees (:mod:`~mailflow.automatic.signs` weighs them). The rules'
top-level ``automatic:`` section chooses the languages and adds its own signs,
with weights and names (:mod:`~mailflow.automatic.own`; the old
``acknowledge.robots`` key still works, with a deprecation warning).

The daemon's reception asks :meth:`AutomaticDetector.judge` once per message,
before the direction is decided, and every stage reads the verdict from the
context (``ctx.automatic``): an acknowledgement is never sent, a clock never
moves, an escalation never starts and the priority is lowered for the same mail.
"""

from __future__ import annotations

from mailflow.automatic.markers import SUBJECT_MARKERS
from mailflow.automatic.own import AutomaticRules, OwnSign
from mailflow.automatic.signs import Signs
from mailflow.automatic.verdict import Automatic
from mailflow.message import Message

__all__ = ["SHIPPED", "SUBJECT_MARKERS", "Automatic", "AutomaticDetector", "AutomaticRules",
           "OwnSign"]


class AutomaticDetector:
    """The shipped signs and the rules' own, compiled once per (re)load of the rules."""

    def __init__(self, rules: AutomaticRules | None = None) -> None:
        self.rules = rules or AutomaticRules()
        self.signs = Signs(self.rules)

    def judge(self, message: Message) -> Automatic | None:
        """Is ``message`` automatic, and which sign says so? Its headers, content, From and
        Subject first, whatever the envelope names; then the envelope sender; then the
        weaker hints together."""
        if not message.envelope.mail_from:
            return Automatic("null sender", "null sender")
        return self.signs.judge(message)

    def by_content(self, message: Message) -> Automatic | None:
        """What the message itself says (headers, content, From, Subject, wording),
        whoever the envelope names."""
        return self.signs.judge(message, envelope=False)

    def address(self, address: str) -> Automatic | None:
        """Is ``address`` a robot's (``noreply@``, ``mailer-daemon@``, a list's owner)?
        For an address the message names besides its sender (a web form's customer)."""
        return self.signs.sender(address)


#: the shipped signs alone (rules that say nothing of automatic mail)
SHIPPED = AutomaticDetector()
