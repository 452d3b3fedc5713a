"""Which mail is automatic: one detector, configured in one place, asked once per message.

RFC 3834 and RFC 5230 say when a robot must not answer; real robots often
ignore them, so the shipped signs (:mod:`mailflow.automatic.signs`) add what
Zammad, OTOBO, Request Tracker and Sieve's vacation extension learnt: vendor
headers, report content types, robots' addresses and names, out-of-office
subjects per language. The rules' top-level ``automatic:`` section chooses the
languages and adds its own signs (the old ``acknowledge.robots`` key still
works, with a deprecation warning).

The daemon's reception asks :meth:`AutomaticDetector.judge` once per message,
before the direction is decided, and every stage reads the verdict from the
context (``ctx.automatic``): an acknowledgement is never sent, a clock never
moves, an escalation never starts and the priority is lowered for the same mail.
"""

from __future__ import annotations

from mailflow.automatic.rfc3834 import standard_headers
from mailflow.automatic.signs import SUBJECT_MARKERS, AutomaticRules, Signs
from mailflow.automatic.verdict import Automatic
from mailflow.message import Message

__all__ = ["SHIPPED", "SUBJECT_MARKERS", "Automatic", "AutomaticDetector", "AutomaticRules"]


class AutomaticDetector:
    """The shipped signs and the rules' own, compiled once per (re)load of the rules."""

    def __init__(self, rules: AutomaticRules | None = None) -> None:
        self.rules = rules or AutomaticRules()
        self.signs = Signs(self.rules)

    def judge(self, message: Message) -> Automatic | None:
        """Is ``message`` automatic, and which sign says so? Its headers, content, From and
        Subject first, whatever the envelope names; then the envelope sender."""
        if not message.envelope.mail_from:
            return Automatic("null sender", "null sender")
        return self.by_content(message) or self.signs.sender(message.envelope.mail_from)

    def by_content(self, message: Message) -> Automatic | None:
        """What the message itself says (headers, content type, From, Subject), whoever
        the envelope names."""
        signs = self.signs
        return (standard_headers(message) or signs.headers(message) or signs.content(message)
                or signs.author(message) or signs.subject(message.subject))

    def address(self, address: str) -> Automatic | None:
        """Is ``address`` a robot's (``noreply@``, ``mailer-daemon@``, a list's owner)?
        For an address the message names besides its sender (a web form's customer)."""
        return self.signs.sender(address)


#: the shipped signs alone (rules that say nothing of automatic mail)
SHIPPED = AutomaticDetector()
