"""The language guess: the language with the most of its function words, and why."""

from __future__ import annotations

import re
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from mailflow.language import SCANNED_CHARS, WORDS, LanguageGuess, guess_language


def counted_word_by_word(text: str) -> LanguageGuess:
    """The guess as its definition reads: each word against each language's list."""
    counts: dict[str, Counter[str]] = {lang: Counter() for lang in WORDS}
    for word in re.findall(r"[a-zà-ÿßœæ]+", text[:SCANNED_CHARS].lower()):
        for lang, vocabulary in WORDS.items():
            if word in vocabulary:
                counts[lang][word] += 1
    ranked = sorted(counts, key=lambda lang: sum(counts[lang].values()), reverse=True)
    top, next_ = (sum(counts[lang].values()) for lang in ranked[:2])
    words = ", ".join(w for w, _ in counts[ranked[0]].most_common(5))
    if top < 2:
        return LanguageGuess(None, "too few words to tell")
    if top <= 1.5 * next_:
        return LanguageGuess(None, f"{ranked[0]} ({top}) and {ranked[1]} ({next_}) too close")
    return LanguageGuess(ranked[0], f"{top} {ranked[0]} words: {words}")


def test_french_english_and_unsure() -> None:
    assert guess_language("Bonjour, je vous écris pour ma commande. Merci").code == "fr"
    guess = guess_language("Hello, thank you for my order, regards")
    assert guess == LanguageGuess("en", "7 en words: hello, thank, you, for, my")
    assert guess_language("12345 ok").code is None
    assert "too close" in guess_language("je vous the you").why


_VOCABULARY = sorted({word for words in WORDS.values() for word in words})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_VOCABULARY),
                          st.sampled_from(["Je", "THE", "commande.", "x", "42", "é"])),
                max_size=60))
def test_the_guess_is_its_definition(words: list[str]) -> None:
    text = " ".join(words)
    assert guess_language(text) == counted_word_by_word(text)
