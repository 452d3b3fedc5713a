"""The agent's reply to a companion, turned into what the customer gets.

Agents reply from Outlook or Thunderbird, in text or HTML: their client puts
the companion below an attribution ("Le … a écrit :", "On … wrote:") or an
Outlook header block ("De : … Envoyé : …"), quoted with ``>`` or not. The cut
is the one the customer's own text uses (:mod:`mailflow.message.customer_text`),
so every client it knows is known here too. Then:

- the agent wrote above the quote: that text goes, as written (the agent's own
  closing and signature included), the quote and everything below it removed;
- the agent wrote nothing above: the companion goes as it was filled in; if the
  agent changed the quoted answer in place (Outlook does not mark quotes), the
  changed text goes, unquoted.

Nothing of the companion's quoting, nor of what a client adds below it,
reaches the customer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from mailflow.answers.analysis import fold
from mailflow.message.customer_text import split_customer_text

#: the cuts that mark where the quoted companion starts
_QUOTED = frozenset({"quote", "attribution", "history"})
_WORD = re.compile(r"[a-z0-9]+")
_HEADER_LINE = re.compile(
    r"^\s*\*{0,2}(?:from|de|von|sent|envoy[ée]|date|to|à|a|cc|subject|objet|sujet)\*{0,2}"
    r"[ \t\xa0]*:", re.IGNORECASE)
_RULE = re.compile(r"^\s*(?:[-_=*]{5,}|[-_=*]{2,}.*(?:original|origine).*)\s*$", re.IGNORECASE)

How = Literal["written", "unedited", "edited in place"]


@dataclass(frozen=True)
class AgentText:
    """What goes to the customer, and how the agent made it."""

    text: str
    how: How

    @property
    def edited(self) -> bool:
        return self.how != "unedited"


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _trimmed(lines: list[str]) -> str:
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def _same_words(one: str, other: str) -> bool:
    return _WORD.findall(fold(one)) == _WORD.findall(fold(other))


def _unquoted(lines: list[str]) -> str:
    """The quoted part without its attribution or header block and without ``>``."""
    body = list(lines)
    while body and (not body[0].strip() or _RULE.match(body[0]) or _HEADER_LINE.match(body[0])
                    or (body[0].rstrip().endswith(":") and not body[0].lstrip().startswith(">"))):
        body.pop(0)
    out = []
    for line in body:
        stripped = line.lstrip()
        if stripped.startswith(">"):
            stripped = stripped[1:]
            stripped = stripped[1:] if stripped.startswith(" ") else stripped
            out.append(stripped)
        else:
            out.append(line)
    return _trimmed(out)


def agent_text(reply_text: str, companion: str) -> AgentText | None:
    """What the customer gets from the agent's reply (``reply_text``, the reply's body as
    text) to a companion holding ``companion``; None when there is nothing to send."""
    lines = _lines(reply_text)
    split = split_customer_text(reply_text)
    start = next((cut.start for cut in split.cuts if cut.reason in _QUOTED), len(lines))
    above = _trimmed(lines[:start])
    if split_customer_text(above).text.strip():
        return AgentText(above, "written")
    quoted = _unquoted(lines[start:])
    if not quoted or _same_words(quoted, companion):
        return AgentText(companion.strip("\n"), "unedited")
    if not _WORD.search(fold(quoted)):
        return None
    return AgentText(quoted, "edited in place")
