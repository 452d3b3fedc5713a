"""Fast keyword matching: every term of every rule in one Aho-Corasick automaton.

Text and terms are folded the same way (accents removed, case-folded), so
"LITIGE", "litigé" and "litige" match one another. Terms match on word
boundaries; a term ending in ``*`` matches as a prefix ("urgen*" finds
"urgence", "urgente"). The automaton is built once per (re)load, and each
message's text is folded once (cached on the message context).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ahocorasick

if TYPE_CHECKING:
    from mailflow.stage import MessageContext


#: letters NFKD leaves alone, spelled the way a French (or German…) reader would type them
_LETTERS = str.maketrans({"œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O",
                          "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "þ": "th",
                          "ı": "i"})
_MARKS = re.compile(r"[\u0300-\u036f]+")  # the accents NFKD splits off
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_SPACES = re.compile(r"\s{2,}|[^\S ]")  # runs of blanks, line breaks, tabs


def _non_ascii(match: re.Match[str]) -> str:
    char = match.group()
    if unicodedata.category(char).startswith("M"):
        return ""  # another combining mark
    # letters of other scripts stay letters; typographic apostrophes, dashes,
    # guillemets, emoji separate words ("l’urgence" is "l urgence", not "lurgence")
    return char if char.isalnum() else " "


def fold(text: str) -> str:
    """Lower-case text without accents: 'Litigé URGENT' -> 'litige urgent'.

    Accents are removed, 'œ'/'æ'/'ß' spelled 'oe'/'ae'/'ss'; punctuation
    outside ASCII (’ — « » …) becomes a space, so it still separates words.
    """
    if text.isascii():
        return text.lower()
    text = unicodedata.normalize("NFKD", text.casefold()).translate(_LETTERS)
    return _NON_ASCII.sub(_non_ascii, _MARKS.sub("", text))


def strip_accents(pattern: str) -> str:
    """A regular expression written with accents, made to match folded text.

    Not lower-cased (that would turn ``\\W`` into ``\\w``): the patterns are
    compiled with IGNORECASE instead.
    """
    if pattern.isascii():
        return pattern
    return _MARKS.sub("", unicodedata.normalize("NFKD", pattern).translate(_LETTERS))


def folded_parts(ctx: MessageContext) -> tuple[str, str]:
    """(subject, text) of the message, folded once and shared by every stage."""
    cached = ctx.attributes.get("_folded")
    if cached is None:
        cached = (fold(ctx.message.subject), fold(ctx.message.text))
        ctx.attributes["_folded"] = cached
    result: tuple[str, str] = cached
    return result


@dataclass(frozen=True)
class Term:
    """One term as written in the rules, with what it is worth."""

    text: str  # as written
    key: str  # folded, without the trailing '*'
    prefix: bool
    tag: str  # which rule it belongs to (for explanations)
    weight: float = 0.0


def parse_term(text: str, tag: str = "", weight: float = 0.0) -> Term:
    raw = text.strip()
    prefix = raw.endswith("*")
    key = " ".join(fold(raw.rstrip("*")).split())
    if not key:
        raise ValueError(f"empty term {text!r}")
    return Term(raw, key, prefix, tag, weight)


def _word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class TermMatcher:
    """Finds which terms occur in a text, on word boundaries, in one pass."""

    def __init__(self, terms: Sequence[Term]) -> None:
        self.terms = list(terms)
        self._automaton: ahocorasick.Automaton | None = None
        self._phrases = any(" " in term.key for term in self.terms)
        by_key: dict[str, list[int]] = {}
        for index, term in enumerate(self.terms):
            by_key.setdefault(term.key, []).append(index)
        if by_key:
            automaton = ahocorasick.Automaton()
            for key, indexes in by_key.items():
                automaton.add_word(key, (key, tuple(indexes)))
            automaton.make_automaton()
            self._automaton = automaton

    def find(self, text: str) -> set[int]:
        """Indexes of the terms found in ``text`` (already folded)."""
        found: set[int] = set()
        if self._automaton is None or not text:
            return found
        if self._phrases:  # "mise en demeure" across a line break or a double space
            text = _SPACES.sub(" ", text)
        size = len(text)
        for end, (key, indexes) in self._automaton.iter(text):
            start = end - len(key) + 1
            if start > 0 and _word_char(text[start - 1]) and _word_char(key[0]):
                continue
            whole_word = end + 1 >= size or not _word_char(text[end + 1]) \
                or not _word_char(key[-1])
            for index in indexes:
                if whole_word or self.terms[index].prefix:
                    found.add(index)
        return found


def compile_regexes(patterns: Iterable[tuple[str, str]]) -> list[tuple[str, re.Pattern[str]]]:
    """Optional regular expressions, matched on folded text; errors name the pattern."""
    compiled = []
    for tag, pattern in patterns:
        try:
            compiled.append((tag, re.compile(strip_accents(pattern), re.IGNORECASE)))
        except re.error as exc:
            raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    return compiled
