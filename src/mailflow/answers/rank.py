"""Ranking the library's answers against a customer's own words: BM25F, then a confidence.

Each validated answer of a language is indexed once, when the library loads:
its title, keywords, customers' phrasings (``examples``) and body, each field
with its weight and length normalisation (BM25F: Robertson, Zaragoza & Taylor
2004). What a term adds to each answer's score does not depend on the
message, so it is worked out then too: a term's postings are two arrays (the
answers holding it, and what it adds to each). Ranking a message is then the
sum of a few arrays (numpy's ``bincount``) and a partial sort: a fraction of a
millisecond on a library of thousands.

A raw BM25 score grows with the message's length and cannot be compared from
one message to the next. The confidence can (:func:`confidence`): it weighs
how much of what the message says the best answer covers, and how far ahead of
the next one it stands. A companion is sent above a route's threshold of it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import cast

import numpy as np
import numpy.typing as npt

from mailflow.answers.analysis import stem_words, stems, words
from mailflow.answers.library import Answer

#: BM25's saturation of a term's frequency
K1 = 1.2


@dataclass(frozen=True)
class FieldWeight:
    """How much a field counts (``weight``) and how much its length does (``b``)."""

    weight: float
    b: float


FIELDS: dict[str, FieldWeight] = {
    "title": FieldWeight(3.0, 0.3),
    "keywords": FieldWeight(3.0, 0.3),
    "examples": FieldWeight(2.0, 0.5),
    "body": FieldWeight(0.6, 0.75),
}
#: a word of the Subject counts this much more than one of the text
SUBJECT_BOOST = 0.5


def _fields(answer: Answer) -> dict[str, list[str]]:
    language = answer.language
    return {"title": stems(answer.title, language),
            "keywords": stems(" . ".join(answer.meta.keywords), language),
            "examples": stems(" . ".join(answer.meta.examples), language),
            "body": stems(answer.text(), language)}


@dataclass(frozen=True)
class Match:
    """One answer as ranked for a message: its score, and the message's words it shares."""

    answer: Answer
    score: float
    matched: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ranking:
    """The best answers for a message (best first) and how sure the ranking is."""

    language: str
    matches: tuple[Match, ...]
    confidence: float

    @property
    def best(self) -> Match | None:
        return self.matches[0] if self.matches else None


NOTHING = Ranking("", (), 0.0)


@dataclass(frozen=True)
class Reading:
    """A message as the ranking reads it (shared by callers: never changed)."""

    #: its stems and how much each counts (repeated words a little more, the Subject's more)
    weights: dict[str, float]
    #: stem -> the first of its words that gave it: which words matched, for ``try``
    shown: dict[str, str]


@lru_cache(maxsize=8)
def read_message(subject: str, text: str, language: str) -> Reading:
    """The message's words folded and stemmed once, for its ranking and its explanation
    (remembered for the few messages in the works)."""
    said, wrote = words(subject, language), words(text, language)
    stemmed = stem_words(said + wrote, language)
    counts = Counter(stemmed[len(said):])
    weights = {t: 1.0 + math.log(c) for t, c in counts.items()}
    for term in set(stemmed[:len(said)]):
        weights[term] = weights.get(term, 1.0) + SUBJECT_BOOST
    shown: dict[str, str] = {}
    for word, stem in zip(said + wrote, stemmed, strict=True):
        shown.setdefault(stem, word)
    return Reading(weights, shown)


class Index:
    """The validated answers of one language, with their terms' contributions."""

    def __init__(self, answers: Sequence[Answer], language: str) -> None:
        self.language = language
        self.answers = tuple(answers)
        fields = [_fields(a) for a in self.answers]
        n = len(self.answers)
        average = {name: max(1.0, sum(len(f[name]) for f in fields) / max(1, n))
                   for name in FIELDS}
        blended: list[dict[str, float]] = []
        for doc in fields:
            tf: dict[str, float] = {}
            for name, weight in FIELDS.items():
                terms = doc[name]
                norm = 1 - weight.b + weight.b * len(terms) / average[name]
                for term, count in Counter(terms).items():
                    tf[term] = tf.get(term, 0.0) + weight.weight * count / norm
            blended.append(tf)
        df = Counter(term for tf in blended for term in tf)
        self.idf = {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}
        #: what a word no answer holds weighs in the coverage: the rarest word's weight
        self.unknown_idf = math.log(1 + (n + 0.5) / 0.5)
        postings: dict[str, tuple[list[int], list[float]]] = {}
        for i, tf in enumerate(blended):
            for term, value in tf.items():
                docs, weights = postings.setdefault(term, ([], []))
                docs.append(i)
                weights.append(self.idf[term] * value * (K1 + 1) / (K1 + value))
        self.postings: dict[str, tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]] = {
            t: (np.array(d, dtype=np.intp), np.array(w, dtype=np.float64))
            for t, (d, w) in postings.items()}
        self.terms = [frozenset(tf) for tf in blended]
        self.position = {a.key: i for i, a in enumerate(self.answers)}

    def __len__(self) -> int:
        return len(self.answers)

    def query(self, subject: str, text: str) -> dict[str, float]:
        """The message's stems and how much each counts (repeated words a little more,
        the Subject's more)."""
        return read_message(subject, text, self.language).weights

    def scores(self, query: dict[str, float]) -> npt.NDArray[np.float64]:
        docs: list[npt.NDArray[np.intp]] = []
        values: list[npt.NDArray[np.float64]] = []
        for term, weight in query.items():
            found = self.postings.get(term)
            if found is not None:
                docs.append(found[0])
                values.append(found[1] * weight if weight != 1.0 else found[1])
        if not docs:
            return np.zeros(len(self.answers), dtype=np.float64)
        summed = np.bincount(np.concatenate(docs), weights=np.concatenate(values),
                             minlength=len(self.answers))
        return cast("npt.NDArray[np.float64]", summed)

    def rank(self, subject: str, text: str, k: int = 3,
             usable: Iterable[int] | None = None) -> Ranking:
        """The ``k`` best answers for the message (those scoring above zero)."""
        if not self.answers:
            return Ranking(self.language, (), 0.0)
        query = self.query(subject, text)
        scores = self.scores(query)
        order = _top(scores, k + 1)
        ranked = [i for i in order if scores[i] > 0]
        conf = confidence(query, scores, ranked, self)
        matches = tuple(Match(self.answers[i], float(scores[i])) for i in ranked[:k])
        return Ranking(self.language, matches, conf)

    def explain(self, ranking: Ranking, subject: str, text: str) -> Ranking:
        """The same ranking, each match with the customer's words it shares (for ``try``
        and the case's record)."""
        shown = read_message(subject, text, self.language).shown
        matches = tuple(Match(m.answer, m.score, tuple(
            word for stem, word in shown.items()
            if stem in self.terms[self.position[m.answer.key]])) for m in ranking.matches)
        return Ranking(ranking.language, matches, ranking.confidence)

    def covered(self, query: dict[str, float], index: int) -> float:
        """The share of the message's weight (by idf) that answer ``index`` holds."""
        total = sum(self.idf.get(t, self.unknown_idf) * w for t, w in query.items())
        if total <= 0:
            return 0.0
        held = self.terms[index]
        return sum(self.idf.get(t, 0.0) * w for t, w in query.items() if t in held) / total


def _top(scores: npt.NDArray[np.float64], k: int) -> list[int]:
    if len(scores) <= k:
        return [int(i) for i in np.argsort(-scores, kind="stable")]
    part = np.argpartition(-scores, k)[:k]
    return [int(i) for i in part[np.argsort(-scores[part], kind="stable")]]


def confidence(query: dict[str, float], scores: npt.NDArray[np.float64], ranked: list[int],
               index: Index) -> float:
    """How sure the ranking is of its best answer, from 0 to 1, comparable across messages.

    Two things, each from 0 to 1: the margin (how far the best answer stands ahead of
    the next: ``1 - s2/s1``), and the coverage (the share of the message's weight
    the best answer holds). A short message that says exactly what one answer is about
    scores high on both; a long one that touches several answers, or one the library
    does not cover, scores low on one or the other.
    """
    if not ranked:
        return 0.0
    best = float(scores[ranked[0]])
    second = float(scores[ranked[1]]) if len(ranked) > 1 else 0.0
    margin = 1.0 - second / best if best > 0 else 0.0
    coverage = index.covered(query, ranked[0])
    return round(math.sqrt(max(0.0, margin) * coverage), 3)
