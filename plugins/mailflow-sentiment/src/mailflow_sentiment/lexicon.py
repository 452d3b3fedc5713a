"""The general sentiment lexicons: VADER for English, its French port for French.

Both are rule-based libraries (valence of words, negation, intensifiers, capitals,
exclamation marks) whose lexicons ship in their packages: nothing is downloaded, at
install or at run time, and no model is loaded. ``vaderSentiment`` scores English;
``vaderSentiment_fr`` (package ``vadersentiment-fr``, the same rules over a French
lexicon of about 9,000 words, looked up without accents) scores French.

Customer-service mail names problems without being unhappy ("problème de mot de
passe", "error message", "urgent"): the words listed in `SERVICE_WORDS` lose their
valence here, and the complaint cues (:mod:`mailflow_sentiment.cues`) say what is really
a grievance. Built once per process, on first use (about 50 ms).
"""

from __future__ import annotations

import functools
import importlib
import warnings
from typing import Any, Protocol

from unidecode import unidecode

#: words every service mailbox reads in calm requests: no valence of their own
SERVICE_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset({"problem", "problems", "error", "errors", "issue", "issues", "bug",
                     "urgent", "urgency", "sorry", "unfortunately", "cancel", "cancelled",
                     "canceled", "cancelling", "fault", "fire", "damage", "liability", "pain",
                     "worries", "worry", "declined", "expired", "dead", "died", "mistake",
                     "afraid", "confuses", "confusion", "reject", "rejects", "kindly", "please",
                     "block", "dropped", "clumsy", "complaint", "complaints"}),
    "fr": frozenset({"probleme", "problemes", "souci", "soucis", "erreur", "erreurs", "bug",
                     "urgence", "urgent", "desole", "desolee", "malheureusement", "annuler",
                     "annulation", "panne", "faute", "coupure", "mal", "grave", "casse",
                     "perte", "pertes", "confusion", "abandon", "plainte", "reclamation",
                     "tomber", "peur", "merci"}),
}
#: score of a sentence (-1 … 1) below which it reads as unhappy, above which as happy
NEUTRAL_BAND = 0.3


class Analyzer(Protocol):
    def polarity_scores(self, text: str) -> dict[str, Any]: ...


@functools.cache
def analyzer(language: str) -> Analyzer:
    """The library's analyser for ``language`` ("fr", else English), service words muted."""
    if language == "fr":
        with warnings.catch_warnings():  # fuzzywuzzy's note about a faster C module it
            warnings.simplefilter("ignore")  # would use for fuzzy look-ups: not used here
            from vaderSentiment_fr.vaderSentiment import SentimentIntensityAnalyzer as French
        found: Analyzer = French()
    else:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        found = SentimentIntensityAnalyzer()
    lexicon: dict[str, float] = found.lexicon  # type: ignore[attr-defined]
    for word in SERVICE_WORDS["fr" if language == "fr" else "en"]:
        lexicon.pop(word, None)
    return found


def valence(text: str, language: str) -> float:
    """The library's compound score of one sentence, -1 (unhappy) … 1 (happy)."""
    found = analyzer(language)
    if _no_lexicon_word(found, text, language):
        return 0.0
    return float(found.polarity_scores(text)["compound"])


def _no_lexicon_word(found: Analyzer, text: str, language: str) -> bool:
    """True when the library would score ``text`` 0 without looking further: none of
    its words (split as the library splits them) is in the lexicon, and it holds no
    emoji (the library reads an emoji as words). Two sentences in three of customer
    mail; the library's full pass over one costs about three times this check.

    The French port scores a sentence of no lexicon word below 0 when it has "!", "?"
    or suspension points: such a sentence takes the full pass."""
    french = language == "fr"
    if french and ("!" in text or "?" in text or ".." in text):
        return False
    if not found.emojis.keys().isdisjoint(text):  # type: ignore[attr-defined]
        return False
    lexicon: dict[str, float] = found.lexicon  # type: ignore[attr-defined]
    for word in _library(language).SentiText(text).words_and_emoticons:
        key = word.lower()
        if french and not key.isascii():
            key = unidecode(key)  # the French port looks its words up without accents
        if key in lexicon:
            return False
    return True


@functools.cache
def _library(language: str) -> Any:
    return importlib.import_module("vaderSentiment_fr.vaderSentiment" if language == "fr"
                                   else "vaderSentiment.vaderSentiment")
