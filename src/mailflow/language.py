"""The language of the customer's words, guessed from the little words every text has.

Function words ("je", "vous", "the", "und"…) give a language away in a few
lines, cost one pass over the text, and say why: the guess comes with the
words that decided it (``mailflow try`` shows them). Each language's list
holds words that are rare in the others, so a French mail quoting an English
signature stays French. Unsure (too few words, or two languages close) is
said as such: the caller then uses its own default (the acknowledgement's
``default_language``).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

#: how much of the text is looked at: a question is in its first lines
SCANNED_CHARS = 4000
#: the words that count: distinctive function words of each language
WORDS: dict[str, frozenset[str]] = {
    "fr": frozenset({"bonjour", "merci", "je", "vous", "nous", "est", "pour", "les", "des",
                     "une", "commande", "votre", "mon", "ma", "pas", "avec", "cordialement",
                     "ai", "suis", "mes", "sont", "dans", "sur", "mais", "cette", "aussi"}),
    "en": frozenset({"hello", "thanks", "thank", "you", "the", "is", "for", "and", "my",
                     "order", "your", "with", "regards", "please", "not", "dear", "hi",
                     "have", "would", "could", "this", "was", "are", "been"}),
    "de": frozenset({"und", "ich", "nicht", "sie", "ist", "mit", "der", "die", "das",
                     "bitte", "danke", "ihre", "meine", "grüße", "wir", "haben", "auf"}),
    "es": frozenset({"hola", "gracias", "usted", "pedido", "por", "favor", "saludos", "es",
                     "el", "los", "mi", "su", "con", "estoy", "tengo", "muy", "pero"}),
    "it": frozenset({"buongiorno", "grazie", "sono", "della", "ordine", "vorrei", "cordiali",
                     "saluti", "mio", "che", "gli", "alla", "questo", "sto", "nostro"}),
    "nl": frozenset({"hallo", "bedankt", "ik", "het", "een", "niet", "met", "mijn", "bestelling",
                     "groeten", "alstublieft", "wij", "graag", "van", "ook", "maar"}),
}
_WORD = re.compile(r"[a-zà-ÿßœæ]+")


def _languages_of_words() -> dict[str, tuple[str, ...]]:
    """Each listed word's languages (a few words are in two lists: "es", "mit")."""
    found: dict[str, tuple[str, ...]] = {}
    for lang, vocabulary in WORDS.items():
        for word in vocabulary:
            found[word] = (*found.get(word, ()), lang)
    return found


_LANGUAGES_OF = _languages_of_words()


@dataclass(frozen=True)
class LanguageGuess:
    """The language (an ISO 639-1 code) or None when unsure, and why."""

    code: str | None
    why: str

    def __str__(self) -> str:
        return f"{self.code or 'unsure'} ({self.why})"


def guess_language(text: str) -> LanguageGuess:
    """The language of ``text``: the one with the most of its words, if at least two and
    clearly ahead of the next."""
    counts: dict[str, Counter[str]] = {lang: Counter() for lang in WORDS}
    for word, times in Counter(_WORD.findall(text[:SCANNED_CHARS].lower())).items():
        for lang in _LANGUAGES_OF.get(word, ()):
            counts[lang][word] += times
    ranked = sorted(counts, key=lambda lang: sum(counts[lang].values()), reverse=True)
    best, second = ranked[0], ranked[1]
    top, next_ = sum(counts[best].values()), sum(counts[second].values())
    words = ", ".join(w for w, _ in counts[best].most_common(5))
    if top < 2:
        return LanguageGuess(None, "too few words to tell")
    if top <= 1.5 * next_:
        return LanguageGuess(None, f"{best} ({top}) and {second} ({next_}) too close")
    return LanguageGuess(best, f"{top} {best} words: {words}")
