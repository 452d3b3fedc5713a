"""A customer's mood from their own words: negative, neutral or positive, a score, and
the sentence that weighed most.

Each sentence adds up points of displeasure and of satisfaction from two sources: the
general lexicon (:mod:`mailflow_sentiment.lexicon`: VADER, or its French port) and
the reviewed complaint cues (:mod:`mailflow_sentiment.cues`). Then what mail says in
its own ways:

- courtesy is not praise ("merci d'avance", "I'd be grateful"): a sentence of
  courtesy alone brings no satisfaction;
- praise beside a grievance in one sentence is irony, or a reproach ("thank you for
  finally…", "bravo, trois semaines pour un colis"): it counts against;
- negative words that defuse ("pas de problème", "no worries", "my own fault")
  take points of displeasure away, first in their sentence, then (a little) in the
  message;
- capitals and "!!!" or "?!" make a grievance stronger, never a calm question.

The message is **negative** when its displeasure reaches `NEGATIVE_AT` and outweighs
half its satisfaction (a complaint with thanks around it is still a complaint),
**positive** when satisfaction clearly dominates, **neutral** otherwise. The score is
``d / sqrt(d² + 4)`` for ``d = satisfaction - 2 × displeasure`` (-1 … 1, below 0 for
every negative message).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from mailflow_sentiment.cues import Hit, cue_groups, find
from mailflow_sentiment.lexicon import NEUTRAL_BAND, valence
from mailflow_sentiment.text import Sentence, sentences

Label = Literal["negative", "neutral", "positive"]
LABELS: tuple[Label, ...] = ("negative", "neutral", "positive")
SCORED_LANGUAGES = ("fr", "en")

#: displeasure from which a message is negative
NEGATIVE_AT = 1.0
#: satisfaction from which a message may be positive
POSITIVE_AT = 0.8
#: points of the lexicon's compound score (its magnitude beyond the neutral band)
LEXICON_POINTS = 1.2
#: "not satisfied", "pas satisfait": a complaint said outright
NEGATED_PRAISE_POINTS = 1.0
#: what praise in a sentence with a grievance counts against the message
IRONY_POINTS = 0.3
#: grievance in a message from which the praise sarcasm wears reads as irony
IRONY_AT = 0.4
#: grievance in a message from which short praise beside it reads as irony
IRONY_CONTEXT = 0.6
SHORT_PRAISE_WORDS = 6
#: grievances said calmly too (a defect, a refund): a question beside them is a question
CALM_GROUPS = frozenset({"defect", "grievance", "demand"})
#: what one emphasis (a word in capitals, "!!", "?!") adds to a sentence's grievance
EMPHASIS_POINTS = 0.3
#: the most a defusing phrase takes from the rest of the message
MESSAGE_DEFUSE_CAP = 1.0

#: words that turn the next one round, and those that may stand between ("pas du tout")
NEGATORS = frozenset({"pas", "jamais", "plus", "ni", "aucunement", "nullement", "guere",
                      "not", "never", "no", "nor", "hardly"})
_BETWEEN = frozenset({"du", "tout", "vraiment", "tres", "trop", "si", "tellement", "forcement",
                      "at", "all", "very", "that", "so", "really", "too", "particularly",
                      "entirely", "exactly", "remotely", "even"})
_WORDS = re.compile(r"[a-z]+(?:'[a-z]+)?")
_BARE_THANKS = re.compile(r"(?:merci|thanks|thank you|thx|many thanks|cheers)[ .!]*")
_CAPITALS = re.compile(r"(?<![\w-])[A-ZÀ-Ý]{3,}(?![\w-])")
_INSISTING = re.compile(r"[!?]{2,}|!")
#: capitals that are names, not shouting
_ACRONYMS = frozenset({"PDF", "TVA", "SAV", "UPS", "LED", "RIB", "SMS", "USB", "HDMI", "DVD",
                       "TTC", "HT", "SIRET", "KBIS", "OPCO", "CGV", "VAT", "ASAP", "HEPA",
                       "FAQ", "URL", "GDPR", "RGPD", "IBAN", "BIC", "SAS", "SARL", "SRL", "LLC",
                       "LTD", "GMBH", "DGCCRF", "UFC", "BBB", "CEO", "API", "WIFI", "NAS"})


@dataclass(frozen=True)
class SentenceMood:
    """What one sentence weighed: displeasure, satisfaction, and the cues found."""

    sentence: Sentence
    displeasure: float
    satisfaction: float
    defused: float
    hits: tuple[Hit, ...] = ()
    #: the part of the displeasure that only sarcasm markers gave
    sarcasm: float = 0.0
    #: points of praise that is irony if the message holds a grievance ("bravo")
    irony: float = 0.0

    @property
    def balance(self) -> float:
        return self.satisfaction - self.displeasure


@dataclass(frozen=True)
class Mood:
    """The mood of one message: its label, score (-1 … 1), the sentence that weighed
    most (the customer's words, kept for the digest) and why (the cues that counted)."""

    label: Label
    score: float
    sentence: str = ""
    language: str = ""
    why: tuple[str, ...] = field(default=())

    def header(self) -> str:
        """The ``X-Mailflow-Sentiment`` value: ``negative; score=-0.62``."""
        return f"{self.label}; score={self.score:.2f}"


def negated(folded: str, start: int) -> bool:
    """Whether the words at ``start`` follow a negation ("pas du tout", "not very")."""
    for word in reversed(_WORDS.findall(folded[max(0, start - 40):start])[-4:]):
        if word in NEGATORS or word.endswith("n't"):
            return True
        if word not in _BETWEEN:
            return False
    return False


def _turned(hit: Hit, folded: str) -> Hit | None:
    """``hit`` as a negation leaves it: a negated grievance counts for nothing, negated
    praise counts as a grievance ("pas satisfait", "not impressed")."""
    if not hit.negatable or not negated(folded, hit.start):
        return hit
    if hit.polarity == "positive":
        return Hit(f"negated {hit.group}", "negative", NEGATED_PRAISE_POINTS,
                   f"(not) {hit.words}")
    return None


def _weigh(sentence: Sentence, language: str, bare_thanks: bool = False,
           ) -> SentenceMood | None:
    found = find(sentence.folded, language)
    if any(h.polarity == "boilerplate" for h in found):
        return None  # a legal notice the customer's text still held
    courtesy = [(h.start, h.end) for h in found if h.polarity == "courtesy"]
    if bare_thanks and _BARE_THANKS.fullmatch(sentence.folded):
        return SentenceMood(sentence, 0.0, 0.0, 0.0)  # "Merci." below a question
    found = [h for h in found if h.polarity != "positive" or not any(
        start <= h.start and h.end <= end for start, end in courtesy)]  # "merci d'avance"
    hits = tuple(h for h in (_turned(h, sentence.folded) for h in found) if h is not None)
    points: dict[str, float] = {}
    for hit in hits:  # a group counts at most twice in a sentence
        points[hit.group] = min(points.get(hit.group, 0.0) + hit.weight, 2 * hit.weight)
    by = {polarity: sum(points[h.group] for h in {h.group: h for h in hits
                                                    if h.polarity == polarity}.values())
          for polarity in ("negative", "positive", "defuse", "ironic")}
    compound = valence(sentence.text, language)
    grievance, praise, defuse = by["negative"], by["positive"], by["defuse"]
    if compound <= -NEUTRAL_BAND and not defuse:
        grievance += (-compound) * LEXICON_POINTS
    elif compound >= NEUTRAL_BAND and not (courtesy and not praise):  # courtesy alone
        praise += compound * LEXICON_POINTS
    if grievance > 0:
        if praise > 0:  # thanks for a failure: irony, or a reproach
            grievance += IRONY_POINTS
            praise = 0.0
        emphasis = sum(1 for w in _CAPITALS.findall(sentence.text) if w not in _ACRONYMS)
        emphasis += len(_INSISTING.findall(sentence.text))
        if any(h.polarity == "negative" and h.group not in CALM_GROUPS for h in hits):
            emphasis += "?" in sentence.text  # a question with a grievance: rhetorical
        grievance += EMPHASIS_POINTS * min(emphasis, 2)
    taken = min(grievance, defuse)
    sarcasm = min(points.get("sarcasm", 0.0), grievance - taken)
    return SentenceMood(sentence, grievance - taken, praise, defuse - taken, hits, sarcasm,
                        by["ironic"])


def _normalise(value: float) -> float:
    return value / math.sqrt(value * value + 4)


def _ironic(moods: Sequence[SentenceMood]) -> list[SentenceMood]:
    """Praise among grievances is irony. In a message with a grievance, the praise that
    sarcasm wears ("bravo", "great job", "quel exploit") counts against; and with enough
    grievance, a short exclamation of praise beside a grievance ("Brilliant. Another
    missed delivery. Well done.") too."""
    grievance = sum(m.displeasure - m.sarcasm for m in moods)
    if grievance < IRONY_AT:
        return list(moods)
    turned = [replace(m, displeasure=m.displeasure + m.irony, satisfaction=0.0) if m.irony
              else m for m in moods]
    if grievance < IRONY_CONTEXT:
        return turned
    for i, mood in enumerate(turned):
        near = [*turned[max(0, i - 1):i], *turned[i + 1:i + 2]]
        if (mood.satisfaction > 0 and mood.displeasure == 0
                and len(mood.sentence.folded.split()) <= SHORT_PRAISE_WORDS
                and any(m.displeasure > 0 for m in near)):
            turned[i] = replace(mood, displeasure=IRONY_POINTS, satisfaction=0.0)
    return turned


def _decide(moods: Sequence[SentenceMood]) -> tuple[Label, float, float, float]:
    """(label, score, displeasure, satisfaction) of a message's sentences."""
    displeasure = sum(m.displeasure for m in moods)
    satisfaction = sum(m.satisfaction for m in moods)
    displeasure = max(0.0, displeasure - min(sum(m.defused for m in moods), MESSAGE_DEFUSE_CAP))
    balance = satisfaction - 2 * displeasure
    score = _normalise(balance)
    if displeasure >= NEGATIVE_AT and balance < 0:
        return "negative", score, displeasure, satisfaction
    if satisfaction >= POSITIVE_AT and balance >= 0.6:
        return "positive", score, displeasure, satisfaction
    return "neutral", score, displeasure, satisfaction


def warm_up() -> None:
    """Load the lexicons and compile the cues of every language (once per process)."""
    for language in SCORED_LANGUAGES:
        score_text("", language)
        valence("ok", language)


def score_text(text: str, language: str) -> Mood:
    """The mood of ``text`` (the customer's own words) in ``language`` ("fr" or "en")."""
    if language not in SCORED_LANGUAGES:
        raise ValueError(f"no scorer for language {language!r}")
    asks = "?" in text  # a bare "thanks" below a question is a closing, not praise
    moods = _ironic([m for m in (_weigh(s, language, asks) for s in sentences(text))
                     if m is not None])
    cue_groups(language)  # a wrong cue file fails on the first text, empty or not
    if not moods:
        return Mood("neutral", 0.0, "", language)
    label, score, _, _ = _decide(moods)
    if label == "positive":
        weighed = max(moods, key=lambda m: m.balance)
    else:
        weighed = min(moods, key=lambda m: m.balance)
    why = tuple(dict.fromkeys(f"{h.group}: {h.words}" for m in moods for h in m.hits
                              if h.polarity in ("negative", "positive", "defuse")))
    return Mood(label, round(score, 3), weighed.sentence.text, language, why)
