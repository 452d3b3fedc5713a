"""Words as the ranking compares them: folded, split, stop words out, stemmed.

Customers write "livree", "livrée" and "livraison", "refunded" and "refund":
each word is lower-cased and accent-folded first (a customer without accents
and an answer with them meet), French elisions are split off (``l'adresse``),
the little words every message has are dropped, and what is left is stemmed by
the Snowball stemmer of the language (PyStemmer, in C). Folding before
stemming keeps both sides consistent; an unaccented feminine participle
("livree", "annulee") is brought back to the masculine first, as the accented
one would be.

A word's stem is also mapped through the language's few equivalences
(:data:`EQUIVALENT`): words customers use for the same thing ("parcel",
"package", "box") meet on one stem. They are language, not answers: each
holds whatever answer uses the words.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

import Stemmer

#: Snowball's names of the languages answers may be written in
STEMMERS = {"fr": "french", "en": "english", "de": "german", "es": "spanish",
            "it": "italian", "nl": "dutch", "pt": "portuguese"}
def _fold_table() -> dict[int, str]:
    """Latin letters with accents (U+00C0 to U+024F) to their base letters, worked out
    once: ``str.translate`` then folds a text in one pass, in C."""
    table = {ord(k): v for k, v in {"œ": "oe", "æ": "ae", "ß": "ss", "’": "'", "ʼ": "'",
                                    "`": "'", "Œ": "oe", "Æ": "ae"}.items()}
    for code in range(0xC0, 0x250):
        if code in table:
            continue
        base = "".join(c for c in unicodedata.normalize("NFKD", chr(code))
                       if not unicodedata.combining(c))
        if base and base != chr(code) and base.isascii():
            table[code] = base.lower()
    return table


_FOLD = _fold_table()
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


@lru_cache(maxsize=4096)
def _folded_letter(char: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", char)
                   if not unicodedata.combining(c))


def _fold_letter(found: re.Match[str]) -> str:
    return _folded_letter(found.group(0))
_WORD = re.compile(r"[a-z0-9]+")
_ELISION = re.compile(r"\b(?:[lcdjmnst]|qu|jusqu|lorsqu|puisqu)'")

_FR_STOP_WORDS = """
    a ai aie aient ait alors aout as au aucun aujourd aupres aussi autre aux avais
    avait avance avant avec avez aviez avions avoir avons avril bien bjr bon bonjour
    bonne bonsoir c ca car cdt ce ceci cela celle celles celui cependant ces cet
    cette ceux chaque chez ci comme comment cordialement d dans de decembre deja
    demain depuis des deux dimanche dois doit donc dont du elle elles en encore es
    est et etaient etais etait etant ete etes etre eu eux faire fais fait faut
    fevrier hier hui ici il ils j janvier je jeudi jour journee jours juillet juin l
    la le les leur leurs lui lundi m ma madame mai mais mardi mars matin me meme
    merci mercredi mes mlle mme moi mois mon monsieur mr n ne ni non nos notre nous
    novembre octobre on ont ou par parce pas peu peut peuvent peux plus pour
    pourquoi pourrais pourriez pouvez pu puis quand que quel quelle quelles quels
    qui quoi s sa salutations samedi sans se semaine semaines septembre ses si sil
    sinon slt soir soit sommes son sont sous stp suis sur svp t ta te tes toi ton
    tous tout toute toutes tres trois tu un une vais vendredi voici voila vos votre
    vous vu y
"""
_EN_STOP_WORDS = """
    a about above after again all also am an and any april are as at august be
    because been before being below best between both but by can cant cheers could
    day days dear december did didnt do does doesnt doing done dont down during each
    february few for friday from further get got had has have having he hello her
    here hers hi him his how i if im in into is isnt it its itself ive january july
    june just kind madam march may me monday month months more most my myself no nor
    not november now october of off ok okay on once only or other our ours out over
    own please pm regards same saturday september she should sincerely sir so some
    still such sunday team than thank thanks that the their them then there these
    they this those through thursday to today tomorrow too tuesday under until up
    very was we wednesday week weeks were what whats when where which while who whom
    why will with wont would yesterday yet you your yours
"""
#: words that say how, not what: asking, wanting, sending, time, people, things, and
#: the products themselves (any request may be about any machine)
_FR_FILLER = """
    aimerais aimerait besoin chose choses cote dire dit dis donner envoyer envoye faites
    fois part personne prendre pris prise quelque quelqu rien souhaite souhaiterais
    souhaitons toujours va vais veux voir voudrais voudrait voulons vraiment savoir sais
    merci bonjour cordialement demande demander ete avoir etre fait faire peut pouvoir
    machine machines appareil appareils produit produits materiel aspirateur aspirateurs
    autolaveuse autolaveuses monobrosse nettoyeur
    """
_EN_FILLER = """
    ago back come could first get give go going know left like look need new one ones
    people send sent someone something take thing things time want way well wonder
    would ask asking asked let us also said say tell still never nothing anything
    machine machines unit units product products equipment device devices vacuum
    scrubber scrubbers cleaner
    """
STOP_WORDS: dict[str, frozenset[str]] = {
    "fr": frozenset(_FR_STOP_WORDS.split()) | frozenset(_FR_FILLER.split()),
    "en": frozenset(_EN_STOP_WORDS.split()) | frozenset(_EN_FILLER.split()),
}
_NO_STOP_WORDS: frozenset[str] = frozenset()

#: stems that mean the same to a customer, per language: (stem, stem it stands for)
EQUIVALENT: dict[str, dict[str, str]] = {
    "fr": {
        "paquet": "colis", "carton": "colis", "envoi": "colis",
        "recu": "recevoir", "reception": "recevoir", "receptionn": "recevoir",
        "arriv": "recevoir", "parvenu": "recevoir", "parven": "recevoir",
        "recredit": "rembours", "argent": "rembours",
        "identifi": "connexion", "connect": "connexion",
        "log": "connexion", "login": "connexion", "connecter": "connexion",
        "casse": "endommag", "cass": "endommag", "abim": "endommag", "abime": "endommag",
        "ecras": "endommag", "deterior": "endommag",
        "pann": "panne", "marcher": "fonctionn", "march": "fonctionn",
        "mail": "email", "courriel": "email", "mel": "email",
        "tarif": "prix", "cout": "prix", "chiffrag": "devis", "chiffr": "devis",
        "plaquet": "brochur", "prospectus": "brochur",
        "formation": "seminair", "stag": "seminair",
        "notic": "manuel", "guid": "manuel",
        "rgpd": "donne", "cnil": "donne",
    },
    "en": {
        "packag": "parcel", "box": "parcel", "shipment": "parcel", "consign": "parcel",
        "arriv": "receiv",
        "ship": "dispatch", "sent": "dispatch",
        "money": "refund", "reimburs": "refund", "repay": "refund",
        "login": "log", "signin": "log", "logon": "log", "credenti": "password",
        "broken": "damag", "broke": "damag", "smash": "damag", "crush": "damag",
        "dent": "damag", "crack": "damag",
        "work": "function", "fault": "defect", "faulti": "defect", "malfunct": "defect",
        "bill": "invoic", "receipt": "invoic",
        "cost": "price", "pricelist": "price", "quotat": "quot", "estim": "quot",
        "leaflet": "brochur", "literatur": "brochur",
        "cours": "seminar", "train": "seminar", "webinar": "seminar",
        "guid": "manual", "instruct": "manual", "handbook": "manual",
        "gdpr": "data", "mail": "email",
    },
}


def fold(text: str) -> str:
    """Lower case, without accents (``é`` → ``e``, ``œ`` → ``oe``), elisions spaced."""
    low = text.lower().translate(_FOLD)
    if not low.isascii():  # what the table does not know: each such letter decomposed
        low = _NON_ASCII.sub(_fold_letter, low)
    return _ELISION.sub(" ", low) if "'" in low else low


def words(text: str, language: str) -> list[str]:
    """The folded words of ``text`` that carry meaning (no stop words, no bare numbers,
    nothing shorter than two letters)."""
    stop = STOP_WORDS.get(language, _NO_STOP_WORDS)
    return [w for w in _WORD.findall(fold(text))
            if len(w) > 1 and w not in stop and not w.isdigit()]


@lru_cache(maxsize=16)
def _stemmer(language: str) -> Stemmer.Stemmer | None:
    name = STEMMERS.get(language)
    return Stemmer.Stemmer(name, 20000) if name else None


def _feminine(word: str) -> str:
    """``livree`` → ``livre``, ``annulees`` → ``annule``: what the stemmer makes of the
    accented form."""
    if word.endswith("ees") and len(word) > 5:
        return word[:-2]
    if word.endswith("ee") and len(word) > 4:
        return word[:-1]
    return word


def stems(text: str, language: str) -> list[str]:
    """The stems of the words of ``text`` that carry meaning, in order, equivalents
    mapped."""
    found = words(text, language)
    return stem_words(found, language)


def stem_words(found: Iterable[str], language: str) -> list[str]:
    """Folded words (:func:`words`) to their stems, equivalents mapped."""
    stemmer = _stemmer(language)
    found = list(found)
    if stemmer is None:
        return found
    if language == "fr":
        found = [_feminine(w) for w in found]
    stemmed: list[str] = stemmer.stemWords(found)
    same = EQUIVALENT.get(language)
    if not same:
        return stemmed
    return [same.get(s, s) for s in stemmed]
