"""Fast keyword matching: every term of every rule in one Aho-Corasick automaton.

Text and terms are folded the same way (accents removed, case-folded), so
"LITIGE", "litigé" and "litige" match one another. Terms match on word
boundaries; a term ending in ``*`` matches as a prefix ("urgen*" finds
"urgence", "urgente"); a phrase matches across a line break. The automaton
is built once per (re)load, and each message's text is folded once (cached on
the message context).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ahocorasick

from mailflow.stash import StashKey

if TYPE_CHECKING:
    from mailflow.context import MessageContext


#: what NFKD leaves alone, spelled the way a French (or German…) reader would type it
_SPELLED = {"œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "ł": "l",
            "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "þ": "th", "ı": "i",
            "’": "'", "‘": "'", "ʼ": "'", "–": "-", "—": "-"}
_MARKS = re.compile(r"[\u0300-\u036f]+")  # the accents NFKD splits off
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_OTHER = re.compile(r"[^\x00-\x7f\u0300-\u036f]")  # neither ASCII nor an accent
_BEYOND_LATIN1 = re.compile(r"[^\x00-\xff]")


def _non_ascii(char: str) -> str:
    spelled = _SPELLED.get(char)
    if spelled is not None:
        return spelled
    if unicodedata.category(char) in ("Mn", "Mc", "Me", "Cf"):
        return ""  # another combining mark, or invisible (soft hyphen, zero-width space)
    # letters of other scripts stay letters; other punctuation (guillemets, emoji…)
    # separates words, never glues them together
    return char if char.isalnum() else " "


def fold(text: str) -> str:
    """Lower-case text without accents: 'Litigé URGENT' -> 'litige urgent'.

    Accents are removed, 'œ'/'æ'/'ß' spelled 'oe'/'ae'/'ss', typographic
    apostrophes and dashes made ASCII; other punctuation outside ASCII
    (« » … emoji) becomes a space, so it still separates words.
    """
    if text.isascii():
        return text.lower()
    text = text.casefold()
    for char, spelled in _BEFORE_LATIN1:
        if char in text:
            text = text.replace(char, spelled)
    try:  # French, German, Spanish…: Latin-1 after the replacements above
        latin1 = text.encode("latin-1")
    except UnicodeEncodeError:
        # a few marks beyond Latin-1 ("…", "€", a narrow no-break space) in Latin text
        # fold alone, as in the whole; letters of another script take the general path
        alone = {char: _fold_alone(char) for char in set(_BEYOND_LATIN1.findall(text))}
        if not all(folded.isascii() for folded in alone.values()):
            return _fold_unicode(text)
        latin1 = functools.reduce(lambda t, pair: t.replace(*pair), alone.items(),
                                  text).encode("latin-1")
    if len(latin1.translate(None, _LATIN1_SLOW)) != len(latin1):  # e.g. '½', 'µ'
        return _fold_unicode(text)
    return latin1.translate(_LATIN1_TABLE, _LATIN1_DELETE).decode("ascii")


def _fold_unicode(text: str) -> str:
    """The general case (any script): NFKD, then accents dropped, other scripts kept."""
    kept = False  # letters of another script, which must survive

    def other(match: re.Match[str]) -> str:
        nonlocal kept
        replacement = _non_ascii(match.group())
        kept = kept or not replacement.isascii()
        return replacement

    text = _OTHER.sub(other, unicodedata.normalize("NFKD", text.casefold()))
    if kept:
        return _MARKS.sub("", text)
    return text.encode("ascii", "ignore").decode("ascii")  # only accents left: drop them


@functools.lru_cache(maxsize=4096)
def _fold_alone(char: str) -> str:
    return _fold_unicode(char)


def _latin1_table() -> tuple[bytes, bytes, bytes]:
    """A byte table doing what :func:`_fold_unicode` does, for every Latin-1 character
    it turns into at most one ASCII character; the others take the general path.
    Built from ``_fold_unicode`` itself, so the two paths cannot disagree."""
    table = bytearray(range(256))
    delete = bytearray()
    slow = bytearray()
    for code in range(0x80, 0x100):
        folded = _fold_unicode(chr(code))
        if folded == "":
            delete.append(code)
        elif len(folded) == 1 and folded.isascii():
            table[code] = ord(folded)
        else:
            slow.append(code)
    return bytes(table), bytes(delete), bytes(slow)


#: multi-letter spellings and typographic marks, replaced before the Latin-1 fast path
_BEFORE_LATIN1 = tuple((c, s.lower()) for c, s in _SPELLED.items() if c == c.casefold()
                       and len(c.encode("utf-8")) > 1 and (ord(c) > 0xFF or len(s) > 1))
_LATIN1_TABLE, _LATIN1_DELETE, _LATIN1_SLOW = _latin1_table()


def flat(text: str) -> str:
    """Line breaks and tabs made spaces, runs of spaces made one: phrases match across lines."""
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " ")
    while "  " in text:
        text = text.replace("  ", " ")
    return text


def strip_accents(pattern: str) -> str:
    """A regular expression written with accents, made to match folded text.

    Changed as :func:`fold` changes the text ('é' -> 'e', '°' -> ' ').
    Not lower-cased (that would turn ``\\W`` into ``\\w``): the patterns are
    compiled with IGNORECASE instead.
    """
    if pattern.isascii():
        return pattern
    text = _MARKS.sub("", unicodedata.normalize("NFKD", pattern))
    return _NON_ASCII.sub(lambda match: _non_ascii(match.group()), text)


_FOLDED: StashKey[tuple[str, str]] = StashKey()
_FLAT: StashKey[tuple[str, str]] = StashKey()
_Scans = tuple[dict[str, bool], dict[str, bool]]


def folded_parts(ctx: MessageContext) -> tuple[str, str]:
    """(subject, text) of the message, folded once and shared by every stage."""
    cached = ctx.cache.get(_FOLDED)
    if cached is None:
        cached = ctx.cache[_FOLDED] = (fold(ctx.message.subject), fold(ctx.message.text))
    return cached


def flat_parts(ctx: MessageContext) -> tuple[str, str]:
    """(subject, text) folded and :func:`flat`, once per message: what terms are sought in."""
    cached = ctx.cache.get(_FLAT)
    if cached is None:
        subject, text = folded_parts(ctx)
        cached = ctx.cache[_FLAT] = (flat(subject), flat(text))
    return cached


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


class TermIndex:
    """Every term of every stage in one Aho-Corasick automaton, built once per (re)load.

    Each message's text is then scanned once, whatever the number of stages
    and rules that look for words in it; the stages share the result.
    """

    def __init__(self) -> None:
        self._keys: set[str] = set()
        self._automaton: ahocorasick.Automaton | None = None
        self._phrases = False
        self._scans: StashKey[_Scans] = StashKey()

    def matcher(self, terms: Sequence[Term]) -> TermMatcher:
        """A matcher for ``terms``, served by this index's shared scans."""
        if self._automaton is not None:
            raise RuntimeError("terms must be registered before the index is built")
        self._keys.update(term.key for term in terms)
        self._phrases = self._phrases or any(" " in term.key for term in terms)
        return TermMatcher(terms, self)

    def build(self) -> None:
        automaton = ahocorasick.Automaton()
        for key in self._keys:
            automaton.add_word(key, key)
        if self._keys:
            automaton.make_automaton()
        self._automaton = automaton

    def scan(self, text: str) -> dict[str, bool]:
        """Keys found at a word start: True if also found as a whole word somewhere."""
        if self._automaton is None:
            self.build()
        assert self._automaton is not None
        found: dict[str, bool] = {}
        if not self._keys or not text:
            return found
        if self._phrases and ("\n" in text or "  " in text or "\t" in text):
            text = flat(text)  # "mise en demeure" across a line break (flat_parts did it)
        size = len(text)
        for end, key in self._automaton.iter(text):
            start = end - len(key) + 1
            if start > 0 and _word_char(text[start - 1]) and _word_char(key[0]):
                continue
            whole = end + 1 >= size or not _word_char(text[end + 1]) or not _word_char(key[-1])
            if whole or key not in found:
                found[key] = found.get(key, False) or whole
        return found

    def scan_parts(self, ctx: MessageContext) -> tuple[dict[str, bool], dict[str, bool]]:
        """(subject, text) scans of the message, done once and shared by every stage."""
        cached = ctx.cache.get(self._scans)
        if cached is None:
            subject, text = flat_parts(ctx)
            cached = ctx.cache[self._scans] = (self.scan(subject), self.scan(text))
        return cached


class TermMatcher:
    """Finds which of its terms occur in a text, on word boundaries."""

    def __init__(self, terms: Sequence[Term], index: TermIndex | None = None) -> None:
        self.terms = list(terms)
        if index is None:  # standalone: an index of its own
            index = TermIndex()
            index.matcher(terms)
            index.build()
        self.index = index
        self._by_key: dict[str, list[int]] = {}
        for i, term in enumerate(self.terms):
            self._by_key.setdefault(term.key, []).append(i)

    def _resolve(self, hits: dict[str, bool]) -> set[int]:
        """From what the scan found (few keys) to this matcher's terms."""
        return {i for key, whole in hits.items() for i in self._by_key.get(key, ())
                if whole or self.terms[i].prefix}

    def find(self, text: str) -> set[int]:
        """Indexes of the terms found in ``text`` (already folded; best: :func:`flat_parts`)."""
        return self._resolve(self.index.scan(text))

    def find_parts(self, ctx: MessageContext) -> tuple[set[int], set[int]]:
        """Indexes of the terms found in the message's (subject, text), from the shared scan."""
        subject, text = self.index.scan_parts(ctx)
        return self._resolve(subject), self._resolve(text)


def compile_regexes(patterns: Iterable[tuple[str, str]]) -> list[tuple[str, re.Pattern[str]]]:
    """Optional regular expressions, matched on folded text; errors name the pattern."""
    compiled = []
    for tag, pattern in patterns:
        try:
            compiled.append((tag, re.compile(strip_accents(pattern), re.IGNORECASE)))
        except re.error as exc:
            raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    return compiled
