"""The rules' own signs (the ``automatic:`` section): what an operator knows of the
robots that write to the company, beside the shipped signs.

A sign names a header (present, or with a value matching ``value``), a ``sender``
pattern (the envelope sender and the From address), a ``subject`` pattern or a
``body`` pattern (the first 8 KB of the text); when it names several, all must
match. A sign of ``weight`` 1 (the default) decides alone; weaker signs add up with
each other and with the shipped hints, and decide together when they reach 1. The
sign's ``name`` is what ``mailflow try``, the logs and the metric
``mailflow_acks_suppressed_total{reason}`` show.

Patterns are regular expressions, case-insensitive, compiled when the rules load
(a broken one is a ``check`` error at its line), and each search is bounded in time
(:data:`SEARCH_SECONDS`): a pattern that backtracks without end gives up, and the
message is judged without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import regex
import structlog
from pydantic import Field, field_validator, model_validator

from mailflow.automatic.markers import SUBJECT_MARKERS
from mailflow.automatic.verdict import Evidence
from mailflow.config import Model
from mailflow.message import Message

log = structlog.get_logger("mailflow.automatic")

#: one pattern's search, at most (then it counts as not found)
SEARCH_SECONDS = 0.02
#: how much of the body a body pattern reads
BODY_CHARS = 8192
_NAME = regex.compile(r"^[^():\n]{1,40}$")


def compile_pattern(pattern: str) -> regex.Pattern[str]:
    """A pattern of the rules, compiled once; a ValueError says what is wrong."""
    try:
        return regex.compile(pattern, regex.IGNORECASE | regex.V0)
    except (regex.error, TypeError) as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


class OwnSign(Model):
    """One sign of the rules: what it looks at, its weight, its name."""

    name: str = "rules sign"
    header: str | None = None  # a header name: present (or its value matching ``value``)
    value: str | None = None  # pattern on the header's value
    sender: str | None = None  # pattern on the envelope sender and the From address
    subject: str | None = None  # pattern on the Subject
    body: str | None = None  # pattern on the first 8 KB of the text
    weight: float = Field(1.0, gt=0, le=1)

    @field_validator("name")
    @classmethod
    def _short_name(cls, value: str) -> str:
        if not _NAME.match(value.strip()):
            raise ValueError("a sign's name is 1 to 40 characters, without '(', ')' or ':'"
                             " (it is a metric label)")
        return value.strip()

    @field_validator("value", "sender", "subject", "body")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            compile_pattern(value)
        return value

    @field_validator("header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is not None and not regex.fullmatch(r"[!-9;-~]+", value.strip()):
            raise ValueError(f"'{value}' is not a header name")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _looks_at_something(self) -> OwnSign:
        if self.value is not None and self.header is None:
            raise ValueError("'value' needs the 'header' it is the value of")
        if self.header is None and self.sender is None and self.subject is None and (
                self.body is None):
            raise ValueError("a sign needs a header, sender, subject or body pattern")
        return self


class AutomaticRules(Model):
    """Rules section ``automatic``: which languages' subject markers apply, and what the
    rules add to the shipped signs."""

    languages: list[str] = Field(default_factory=lambda: list(SUBJECT_MARKERS))
    subjects: list[str] = Field(default_factory=list)  # extra markers, any language
    senders: list[str] = Field(default_factory=list)  # extra robot local parts or addresses
    headers: list[str] = Field(default_factory=list)  # extra header names
    signs: list[OwnSign] = Field(default_factory=list)  # patterns with weights and names


class OwnSigns:
    """The rules' signs, compiled once per (re)load of the rules."""

    def __init__(self, signs: list[OwnSign]) -> None:
        self.signs = [(sign, {field: compile_pattern(pattern) for field in
                              ("value", "sender", "subject", "body")
                              if (pattern := getattr(sign, field)) is not None})
                      for sign in signs]

    def evidence(self, message: Message, headers: Mapping[str, list[str]],
                 author: str) -> list[Evidence]:
        """Each sign whose every pattern matches, with its weight."""
        found: list[Evidence] = []
        for sign, patterns in self.signs:
            seen = _matches(sign, patterns, message, headers, author)
            if seen is not None:
                found.append(Evidence(sign.name, seen, sign.weight))
        return found


def _search(pattern: regex.Pattern[str], text: str, sign: OwnSign) -> Any:
    try:
        return pattern.search(text, timeout=SEARCH_SECONDS)
    except TimeoutError:
        log.warning("automatic_sign_timeout", sign=sign.name, pattern=pattern.pattern,
                    seconds=SEARCH_SECONDS)
        return None


def _matches(sign: OwnSign, patterns: Mapping[str, regex.Pattern[str]], message: Message,
             headers: Mapping[str, list[str]], author: str) -> str | None:
    """What the sign saw, if all its parts match; else None."""
    seen: list[str] = []
    if sign.header is not None:
        values = headers.get(sign.header.lower())
        if values is None:
            return None
        value = patterns.get("value")
        if value is None:
            seen.append(sign.header)
        else:
            hit = next((v for v in values if _search(value, v, sign)), None)
            if hit is None:
                return None
            seen.append(f"{sign.header}: {hit.strip()[:40]}")
    sender = patterns.get("sender")
    if sender is not None:
        hit = next((a for a in (message.envelope.mail_from, author)
                    if a and _search(sender, a, sign)), None)
        if hit is None:
            return None
        seen.append(f"sender {hit}")
    for field, text in (("subject", message.subject), ("body", message.text[:BODY_CHARS])):
        pattern = patterns.get(field)
        if pattern is not None:
            found = _search(pattern, text, sign)
            if found is None:
                return None
            seen.append(f"{field} “{found.group(0).strip()[:40]}”")
    return "; ".join(seen)
