"""What an editorial team should look at in its library: warnings, not errors.

An answer missing one of the library's languages, two answers so alike that a
customer would get either (cosine similarity of their stemmed words, weighted
by rarity, above a threshold), and answers past their ``review_by`` date: the
library still loads, ``mailflow check`` prints each at its ``file:line:column``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
from ruamel.yaml import YAML

from mailflow.answers.analysis import stems
from mailflow.answers.library import Answer, Library
from mailflow.config import Problem, position

#: answers more alike than this (cosine of their weighted words) are near duplicates
DUPLICATE_THRESHOLD = 0.8


def _at(answer: Answer, key: str, message: str) -> Problem:
    """A warning at the front-matter key ``key`` of ``answer``'s file."""
    try:
        with open(answer.file, encoding="utf-8") as fh:
            front = fh.read().replace("\r\n", "\n").split("\n---", 1)[0].removeprefix("---\n")
        line, column = position(YAML(typ="rt").load(front), (key,))
        return Problem(answer.file, line + 1, column, message)
    except Exception:  # the file changed since it loaded: the file is enough
        return Problem(answer.file, 0, 0, message)


def missing_languages(library: Library, languages: Sequence[str]) -> list[Problem]:
    """Each answer lacking one of ``languages`` (the library's own, when none given)."""
    wanted = tuple(languages) or library.languages
    problems = []
    ids = sorted({a.id for a in library})
    for answer_id in ids:
        versions = library.versions(answer_id)
        have = {a.language for a in versions}
        for language in wanted:
            if language not in have:
                problems.append(_at(versions[0], "language", f"answer '{answer_id}'"
                                    f" has no '{language}' version"))
    return problems


def past_review(library: Library, today: dt.date) -> list[Problem]:
    return [_at(a, "review_by", f"answer '{a.id}' ({a.language}) was due for"
                f" review on {a.meta.review_by.isoformat()}")
            for a in library if a.meta.review_by < today]


def _vectors(answers: Sequence[Answer]) -> list[dict[str, float]]:
    """Each answer's stemmed words (title, keywords, body), tf-idf weighted, unit length."""
    bags = [Counter(stems(f"{a.title} {' '.join(a.meta.keywords)} {a.text()}", a.language))
            for a in answers]
    df = Counter(term for bag in bags for term in bag)
    n = len(bags)
    vectors = []
    for bag in bags:
        vector = {t: (1 + math.log(c)) * math.log(1 + n / df[t]) for t, c in bag.items()}
        norm = math.sqrt(sum(v * v for v in vector.values())) or 1.0
        vectors.append({t: v / norm for t, v in vector.items()})
    return vectors


def near_duplicates(answers: Sequence[Answer], threshold: float = DUPLICATE_THRESHOLD,
                    ) -> list[tuple[Answer, Answer, float]]:
    """Pairs of answers of one language more alike than ``threshold``: a term's postings
    give each answer's dot products with all the others at once."""
    vectors = _vectors(answers)
    postings: dict[str, tuple[list[int], list[float]]] = {}
    for i, vector in enumerate(vectors):
        for term, value in vector.items():
            docs, values = postings.setdefault(term, ([], []))
            docs.append(i)
            values.append(value)
    arrays = {t: (np.array(d, dtype=np.intp), np.array(v, dtype=np.float64))
              for t, (d, v) in postings.items()}
    found = []
    for i, vector in enumerate(vectors):
        held = [arrays[term][0] for term in vector]
        weighed = [arrays[term][1] * w for term, w in vector.items()]
        dots = np.bincount(np.concatenate(held), weights=np.concatenate(weighed),
                           minlength=len(vectors))
        for j in np.nonzero(dots[i + 1:] > threshold)[0]:
            found.append((answers[i], answers[i + 1 + int(j)], float(dots[i + 1 + int(j)])))
    return found


def duplicate_problems(library: Library, threshold: float) -> list[Problem]:
    problems = []
    for language in library.languages:
        same = [a for a in library if a.language == language]
        for one, other, similarity in near_duplicates(same, threshold):
            problems.append(_at(other, "id", f"answer '{other.id}' is"
                                f" {similarity:.0%} like '{one.id}' ({one.file}):"
                                " merge them, or make each say what only it says"))
    return problems


def review(library: Library, *, languages: Sequence[str], today: dt.date,
           duplicate_threshold: float) -> list[Problem]:
    """Every warning about ``library``, by file."""
    found: Iterable[Problem] = [*missing_languages(library, languages),
                                *duplicate_problems(library, duplicate_threshold),
                                *past_review(library, today)]
    return sorted(found, key=lambda p: (p.file, p.line))
