"""Facts about one message, computed once and shared, typed, by every stage.

Whether it is automatic (and which sign said so: the rules' one detector) is
decided when the facts are made, by the reception, before the direction. The
customer's own text (no quoted history, signature or disclaimer) and its
language are worked out the first time anything asks (a stage, ``mailflow
try``), then kept: asked twice, computed once; never asked (most of a
passthrough message's path), never computed.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from mailflow.automatic.verdict import Automatic
from mailflow.language import LanguageGuess, guess_language
from mailflow.message import Message

if TYPE_CHECKING:
    from mailflow.automatic import AutomaticDetector


#: why an empty message opens no case and gets no acknowledgement
EMPTY = "empty message: no subject, no text, no attachment"


class MessageFacts:
    """What is true of ``message`` whatever the stages decide."""

    def __init__(self, message: Message, detector: AutomaticDetector) -> None:
        self.message = message
        #: why the message is automatic (a bounce, an out-of-office, a list…), or None:
        #: decided now, once, for the direction, every stage, the logs and `try`
        self.automatic: Automatic | None = detector.judge(message)

    @property
    def customer_text(self) -> str:
        """The body without quoted history, reply attribution, signature or disclaimer
        (the parse's own, computed once: :mod:`mailflow.message.customer_text`)."""
        return self.message.customer_text.text

    @cached_property
    def empty(self) -> bool:
        """No subject, no text, no attachment: nothing to open a case about (relayed and
        counted all the same)."""
        message = self.message
        if message.subject.strip() or message.text.strip():
            return False
        # a part that gave no text is an attachment, unless it is an empty, unnamed text
        return all(kind.startswith("text/") and not name
                   for kind, name in message.attachments)

    @cached_property
    def language(self) -> LanguageGuess:
        """The language of the subject and the customer's own text."""
        return guess_language(f"{self.message.subject}\n{self.customer_text}")

    def shown(self) -> dict[str, object]:
        """What ``mailflow try`` shows of the facts (computing the lazy ones)."""
        return {"automatic": self.automatic.why if self.automatic else None,
                "automatic_sign": self.automatic.sign if self.automatic else None,
                "language": self.language.code, "language_why": self.language.why,
                "customer_text_chars": len(self.customer_text)}
