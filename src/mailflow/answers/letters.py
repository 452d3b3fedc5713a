"""The two letters of a suggested answer: the companion to the agent, and the answer to
the customer.

The companion's body is the best answer filled in, and nothing else: whatever
the agent's client does with it (quote it, let it be edited in place), only text
ready for the customer is there. What the agent needs to know (the case, the
answer's code and title, the two others) is in its Subject; its reply address
is its own token address (``Reply-To``), and it is threaded on the customer's
message so the agent's client shows them together. Internal headers
(``X-Mailflow-Case``, ``X-Mailflow-Suggestion``) are fine there: it goes to
colleagues only.

The answer to the customer is a new message written by mailflow: the agent's
text, threaded on the customer's last message, from the service mailbox (or
the agent); none of the companion's headers, none of ours but the loop marker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mailflow.message.writer import TO_ANSWER, Letter, MailWriter, Written

_REPLY_PREFIX = ("re:", "aw:", "sv:", "réf :", "ref:", "tr:", "fw:", "fwd:")


@dataclass(frozen=True)
class Named:
    """An answer as the companion's Subject names it."""

    code: str
    title: str

    def __str__(self) -> str:
        return f"{self.code} {self.title}"


def companion(*, host: str, case: str, sender: str, sender_name: str, to: Sequence[str],
              reply_to: str, best: Named, others: Sequence[Named], confidence: float,
              text: str, customer_subject: str, in_reply_to: str | None,
              references: Sequence[str], now: float) -> Written:
    """The companion of case ``case``: ``text`` (the best answer, filled in) to ``to``."""
    also = f" (+ {' ; '.join(str(o) for o in others)})" if others else ""
    subject = " ".join(customer_subject.split()) or "-"
    letter = Letter(sender, to, f"[{case}] {best}{also} : {subject}", text,
                    sender_name=sender_name, reply_to=reply_to, in_reply_to=in_reply_to,
                    references=tuple(references),
                    headers={"X-Mailflow-Case": case,
                             "X-Mailflow-Suggestion": f"{best.code} {confidence:.2f}"})
    return MailWriter(host).write(letter, kind="answer-companion", profile=TO_ANSWER, now=now,
                                  id_prefix=f"sug.{case}")


def reply_subject(subject: str) -> str:
    """``Re: `` and the customer's Subject, not ``Re: Re: ``."""
    flat = " ".join(subject.split())
    return flat if flat.lower().startswith(_REPLY_PREFIX[:1]) else f"Re: {flat or '-'}"


def answer(*, host: str, sender: str, sender_name: str, customer: str, subject: str,
           text: str, thread: Sequence[str], now: float, case: str) -> Written:
    """The agent's answer to ``customer``, threaded on the last of ``thread`` (the case's
    customer Message-IDs, oldest first), from ``sender`` (also its envelope sender:
    a bounce comes back to us, not to nobody)."""
    last = thread[-1] if thread else None
    letter = Letter(sender, [customer], reply_subject(subject), text.rstrip("\n") + "\n",
                    sender_name=sender_name, in_reply_to=last, references=tuple(thread[:-1]))
    return MailWriter(host).write(letter, kind="answer", profile=TO_ANSWER, now=now,
                                  mail_from=sender, id_prefix=f"ans.{case}")
