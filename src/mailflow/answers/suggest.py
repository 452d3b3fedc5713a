"""Suggesting answers for one message: rank, keep those the case can fill in, fill the best.

Used by the ``answers`` stage for each customer message, and by ``mailflow
answers search`` for a team's own words (then nothing is filled in).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from mailflow.answers.fields import present
from mailflow.answers.library import Answer, Library, load_library
from mailflow.answers.rank import NOTHING, Index, Match, Ranking

#: how many answers are suggested (and recorded on the case)
SUGGESTED = 3
#: how many of the best are looked at to find three the case can fill in
LOOKED_AT = 8


@dataclass(frozen=True)
class Offer:
    """An answer the case can fill in, and its text filled in."""

    match: Match
    text: str


@dataclass(frozen=True)
class Suggestions:
    """What the ranking found for a message, and what may be offered of it."""

    ranking: Ranking
    offers: tuple[Offer, ...]

    @property
    def best_offered(self) -> bool:
        """The best ranked answer is among the offers (its fields are all there)."""
        best = self.ranking.best
        return bool(self.offers) and best is not None and self.offers[0].match.answer is \
            best.answer


def render(answer: Answer, fields: Mapping[str, Any]) -> str | None:
    """``answer`` filled in with ``fields``; None when it needs one the case lacks."""
    try:
        return answer.template.render(**present(fields))
    except TemplateError:
        return None


def _shape(fields: Mapping[str, Any]) -> frozenset[str]:
    """Which fields a case has (the form's by name): whether an answer can be filled in
    depends on that alone."""
    given = present(fields)
    form = given.pop("form", {})
    return frozenset(given) | frozenset(f"form.{k}" for k in form)


class Suggester:
    """The library of one load of the rules, indexed by language."""

    def __init__(self, library: Library) -> None:
        self.library = library
        self.indexes = {language: Index(library.validated(language), language)
                        for language in library.languages}
        self._fillable_cache: dict[tuple[tuple[str, str], frozenset[str]], bool] = {}

    def _fillable(self, answer: Answer, shape: frozenset[str],
                  fields: Mapping[str, Any]) -> bool:
        """Can ``answer`` be filled in with fields of this ``shape``? Found by rendering it
        once per shape, then remembered."""
        key = (answer.key, shape)
        known = self._fillable_cache.get(key)
        if known is None:
            if len(self._fillable_cache) > 50_000:  # forms' fields vary: kept bounded
                self._fillable_cache.clear()
            known = self._fillable_cache[key] = render(answer, fields) is not None
        return known

    @classmethod
    def load(cls, folder: Path) -> Suggester:
        return cls(load_library(folder))

    def rank(self, language: str, subject: str, text: str, k: int = SUGGESTED) -> Ranking:
        index = self.indexes.get(language)
        if index is None:
            return NOTHING
        return index.explain(index.rank(subject, text, k), subject, text)

    def suggest(self, language: str, subject: str, text: str,
                fields: Mapping[str, Any]) -> Suggestions:
        """The best answers the case can fill in (three at most), each filled in."""
        index = self.indexes.get(language)
        if index is None:
            return Suggestions(NOTHING, ())
        ranking = index.rank(subject, text, LOOKED_AT)
        offers: list[Offer] = []
        shape = _shape(fields)
        for match in ranking.matches:
            if not self._fillable(match.answer, shape, fields):
                continue
            # the best is filled in now (the companion's text); the others only named
            filled = render(match.answer, fields) if not offers else ""
            if filled is not None:
                offers.append(Offer(match, filled))
            if len(offers) == SUGGESTED:
                break
        shown = index.explain(Ranking(ranking.language, tuple(o.match for o in offers),
                                      ranking.confidence), subject, text)
        best = ranking.matches[:1]
        top = Ranking(ranking.language, best, ranking.confidence)
        return Suggestions(top, tuple(Offer(m, o.text)
                                      for m, o in zip(shown.matches, offers, strict=True)))
