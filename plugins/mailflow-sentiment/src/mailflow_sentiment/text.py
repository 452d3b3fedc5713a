"""The customer's text cut into sentences, and folded for matching.

Mail is written in lines that a client wrapped, in paragraphs, and often without
full stops (a signature, a one-line complaint above it): a sentence ends at ``.``, ``!``,
``?``, ``…``, at a blank line, and at a line break after which a new line starts with a
capital. Folding makes "reçu", "recu" and "REÇU" one word: lower case, accents
removed, typographic apostrophes and dashes made plain, whitespace collapsed.

Bounded work: at most `MAX_CHARS` of text and `MAX_SENTENCES` sentences are looked at.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

#: a customer's own words rarely run longer; the rest is not read
MAX_CHARS = 6000
MAX_SENTENCES = 60
#: a sentence longer than this is cut (a pasted log, a table)
MAX_SENTENCE_CHARS = 600

_PARAGRAPH = re.compile(r"\n[ \t]*\n+")
_END = re.compile(r"(?<=[.!?…])[\"'»”)\]]*\s+|(?<=[!?])(?=[A-ZÀ-Ý])")
_WRAPPED = re.compile(r"\n(?=[ \t]*[a-zà-ÿ0-9(«\"'-])")
_NEWLINES = re.compile(r"\s*\n\s*")
_SPACES = re.compile(r"\s+")
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
_PLAIN = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'", "ʼ": "'", "«": '"', "»": '"',
                        "“": '"', "”": '"', "–": "-", "—": "-", "‐": "-", "‑": "-",
                        "œ": "oe", "Œ": "oe", "æ": "ae", "Æ": "ae", "\u00a0": " ",
                        "\u202f": " "})


@dataclass(frozen=True)
class Sentence:
    """One sentence as the customer wrote it, and its folded form."""

    text: str
    folded: str


def fold(text: str) -> str:
    """Lower case, no accents, plain apostrophes and quotes, single spaces."""
    plain = text.translate(_PLAIN).lower()
    if not plain.isascii():
        plain = "".join(c for c in unicodedata.normalize("NFKD", plain)
                        if not unicodedata.combining(c))
    return _SPACES.sub(" ", plain).strip()


def sentences(text: str) -> list[Sentence]:
    """The sentences of ``text`` with at least one letter, in order."""
    found: list[Sentence] = []
    for paragraph in _PARAGRAPH.split(text[:MAX_CHARS].replace("\r\n", "\n")):
        # a line break followed by a lower-case start is the client's wrapping
        joined = _WRAPPED.sub(" ", paragraph.strip())
        for line in _NEWLINES.split(joined):
            for part in _END.split(line):
                part = part.strip()
                if part and _LETTER.search(part):
                    part = part[:MAX_SENTENCE_CHARS]
                    found.append(Sentence(part, fold(part)))
                    if len(found) >= MAX_SENTENCES:
                        return found
    return found
