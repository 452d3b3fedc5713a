"""The ``when:`` of a rule: recipient, sender, web-form field, priority, keyword.

Shared by every stage whose rules pick messages (``route`` chooses a team,
``escalate`` an expert), so a condition means the same everywhere and is
checked the same way. Keywords are matched through the stage's automaton
(one scan of the text per message, see :mod:`mailflow.textmatch`): the
caller passes the tags that were found.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import Field, model_validator

from mailflow.config import Model
from mailflow.context import MessageContext
from mailflow.textmatch import TermMatcher, fold, folded_parts, parse_term


class Condition(Model):
    recipient: tuple[str, ...] = ()
    sender: tuple[str, ...] = ()  # addresses or @domains
    form_field: dict[str, str] = Field(default_factory=dict)
    priority: tuple[Literal["urgent", "high", "normal", "low"], ...] = ()
    keyword: tuple[str, ...] = ()

    def given(self) -> bool:
        """Is at least one condition written? (a ``when:`` matching everything is a typo)"""
        return bool(self.recipient or self.sender or self.form_field or self.priority
                    or self.keyword)

    @model_validator(mode="after")
    def _not_empty(self) -> Condition:
        if not self.given():
            raise ValueError("'when' needs at least one condition")
        for term in self.keyword:
            parse_term(term)
        return self


class CompiledCondition:
    """A condition with its form-field patterns built once; ``tag`` names its keywords
    in the stage's automaton."""

    def __init__(self, when: Condition, tag: str) -> None:
        self.when = when
        self.tag = tag
        self.recipients = {r.lower() for r in when.recipient}
        self.senders = {s.lower() for s in when.sender}
        self.has_keywords = bool(when.keyword)
        # each with its folded name: a text without it cannot match, and ``in`` finds
        # that out faster than the pattern, which tries every line
        self.fields = [(fold(name), re.compile(
                            rf"^[ \t]*{re.escape(fold(name))}[ \t]*:[ \t]*(.+?)[ \t]*$",
                            re.MULTILINE), fold(value))
                       for name, value in when.form_field.items()]

    def matches(self, ctx: MessageContext, recipients: Sequence[str], sender: str,
                keyword_hits: Callable[[], set[str]]) -> bool:
        when = self.when
        if self.recipients and not self.recipients.intersection(recipients):
            return False
        if self.senders:
            domain = "@" + sender.rpartition("@")[2]
            if sender not in self.senders and domain not in self.senders:
                return False
        if when.priority and ctx.priority not in when.priority:
            return False
        if self.fields:
            _, text = folded_parts(ctx)
            for name, pattern, value in self.fields:
                found = pattern.search(text) if name in text else None
                if found is None or found.group(1).strip() != value:
                    return False
        return not self.has_keywords or self.tag in keyword_hits()


def message_recipients(ctx: MessageContext) -> list[str]:
    """Every address the message was written to (envelope, To, Cc), lower-case: what a
    ``recipient:`` condition looks at."""
    message = ctx.message
    return [r.lower() for r in (*message.envelope.rcpt_to, *message.addresses("To"),
                                *message.addresses("Cc"))]


def lazy_keyword_hits(keywords: TermMatcher, ctx: MessageContext) -> Callable[[], set[str]]:
    """The tags of the rules whose keywords the message has, searched for only when a
    condition first asks (most messages are decided by a recipient or a sender)."""
    hits: set[str] | None = None

    def keyword_hits() -> set[str]:
        nonlocal hits
        if hits is None:
            in_subject, in_text = keywords.find_parts(ctx)
            hits = {keywords.terms[i].tag for i in in_subject | in_text}
        return hits

    return keyword_hits
