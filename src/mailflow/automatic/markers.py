"""Subject markers that decide alone: how out-of-office replies and delivery failures
begin their Subject, per language ("Automatic reply:", "Réponse automatique :",
Lotus's "AUTO:", "Abwesenheitsnotiz", "Undeliverable:", "Non remis :").

Matched at the start of the Subject, accents and case aside (a marker in capitals only
in capitals); a marker beginning with ``*`` is looked for anywhere in it, as whole
words. "Re: Undeliverable" is a person answering a robot: it does not begin so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from mailflow.automatic.verdict import Evidence
from mailflow.textmatch import fold

#: out-of-office and automatic replies, per language
OUT_OF_OFFICE: Mapping[str, tuple[str, ...]] = {
    "en": ("auto reply", "auto-reply", "autoreply", "automatic reply", "auto response",
           "auto-response", "autoresponse", "automated response", "automatic response",
           "out of office", "out of the office", "out-of-office", "AUTO:",
           "*is out of the office", "*am out of the office", "*out of office autoreply",
           "vacation reply", "vacation autoreply", "away from the office",
           "away from office"),
    "fr": ("reponse automatique", "réponse automatique", "absent du bureau",
           "absente du bureau", "absence du bureau", "message d'absence",
           "reponse d'absence", "répondeur automatique", "*est absent du bureau",
           "*est absente du bureau"),
    "de": ("automatische antwort", "automatische ruckantwort", "autom. antwort",
           "abwesenheitsnotiz", "abwesenheit", "abwesend", "nicht im buro",
           "ausser haus", "außer haus", "*ist nicht im buro", "*bin nicht im buro"),
    "es": ("respuesta automatica", "respuesta automática", "fuera de la oficina",
           "fuera de oficina", "respuesta de ausencia", "ausente", "mensaje automatico"),
    "it": ("risposta automatica", "risposta di assenza", "fuori sede", "fuori ufficio",
           "assente"),
    "nl": ("automatisch antwoord", "afwezig", "afwezigheid", "niet aanwezig",
           "buiten kantoor", "automatisch bericht"),
    "pt": ("resposta automatica", "resposta automática", "ausente",
           "fora do escritorio", "ausencia temporaria"),
    "sv": ("autosvar", "automatiskt svar", "franvaro", "frånvaro"),
    "da": ("autosvar", "automatisk svar", "fravaerende", "fraværende",
           "ikke pa kontoret"),
    "pl": ("automatyczna odpowiedz", "automatyczna odpowiedź", "nieobecnosc",
           "nieobecność", "poza biurem"),
    "lv": ("arpus biroja", "ārpus biroja", "automatiska atbilde", "automātiskā atbilde",
           "*automatiska atbilde"),
}
#: delivery failures and delays as the MTAs and gateways title them, per language; what
#: a parcel's story could begin with too ("Delivery failed", "Nicht zugestellt",
#: "Niet bezorgd") is a hint only (:mod:`mailflow.automatic.phrases`)
DELIVERY: Mapping[str, tuple[str, ...]] = {
    "en": ("undeliverable", "undelivered mail", "delivery status notification",
           "mail delivery failed", "mail delivery failure", "returned mail", "failure notice",
           "nondeliverable", "non-deliverable", "warning: could not send message",
           "mail system error", "delayed mail", "mail delivery delayed",
           "message delivery delayed"),
    "fr": ("non remis", "message non remis", "notification d'etat de remise",
           "remise differee", "remise retardee", "message non distribue"),
    "de": ("unzustellbar", "benachrichtigung zum ubermittlungsstatus"),
    "es": ("notificacion de estado de entrega",),
    "it": ("non recapitabile", "notifica di mancato recapito", "notifica stato di consegna"),
    "nl": ("onbestelbaar",),
}
#: abuse and feedback-loop reports (Hotmail's JMRP, AOL's and others' loops)
FEEDBACK: Mapping[str, tuple[str, ...]] = {
    "en": ("complaint about message from", "email feedback report for", "abuse report"),
}
#: every language's markers, whatever their kind: the languages the rules may choose
SUBJECT_MARKERS: Mapping[str, tuple[str, ...]] = {
    language: tuple(marker for kinds in (OUT_OF_OFFICE, DELIVERY, FEEDBACK)
                    for marker in kinds.get(language, ()))
    for language in OUT_OF_OFFICE
}


def normal(text: str, fold_case: bool = True) -> str:
    """Folded (accents and case), single spaces, no space before a colon, leading
    punctuation dropped ("[Auto-Reply] …", "*** Out of office ***")."""
    spaced = " ".join((fold(text) if fold_case else text).split()).replace(" :", ":")
    return spaced.lstrip("[(*#-_ .\"'»«")


def _patterns(markers: Iterable[str]) -> list[tuple[bool, re.Pattern[str]]]:
    """(folded?, pattern) for each kind of marker: at the start or anywhere, in any case
    or in capitals only."""
    kinds: dict[tuple[bool, bool], set[str]] = {}
    for marker in markers:
        bare = marker.lstrip("*")
        capitals = bare.isupper()
        text = normal(bare, fold_case=not capitals)
        if text:
            kinds.setdefault((marker.startswith("*"), capitals), set()).add(re.escape(text))
    end = r"(?![^\W_])"  # a whole word: "assente" but not "assentement"
    patterns = []
    for (anywhere, capitals), words in sorted(kinds.items()):
        head = r"(?<![^\W_])" if anywhere else "^"
        body = "|".join(sorted(words, key=len, reverse=True))
        patterns.append((not capitals, re.compile(f"{head}(?:{body}){end}")))
    return patterns


class SubjectMarkers:
    """The markers of the chosen languages by kind, then the rules' own (``subjects``,
    named "automatic-reply subject" as they always were)."""

    def __init__(self, languages: Iterable[str], extra: Iterable[str]) -> None:
        chosen = list(languages)
        unknown = [lang for lang in chosen if lang not in SUBJECT_MARKERS]
        if unknown:
            raise ValueError(f"languages: no shipped subject markers for "
                             f"{', '.join(unknown)} (known: {', '.join(SUBJECT_MARKERS)}); "
                             "add yours under subjects")
        self.kinds: list[tuple[str, list[tuple[bool, re.Pattern[str]]]]] = [
            (kind, _patterns(m for lang in chosen for m in table.get(lang, ())))
            for kind, table in (("out-of-office", OUT_OF_OFFICE), ("delivery report", DELIVERY),
                                ("feedback report", FEEDBACK))]
        extra = list(extra)
        if extra:
            self.kinds.append(("automatic-reply subject", _patterns(extra)))

    def search(self, subject: str) -> Evidence | None:
        if not subject:
            return None
        folded, as_written = normal(subject), normal(subject, fold_case=False)
        for kind, patterns in self.kinds:
            for fold_case, pattern in patterns:
                found = pattern.search(folded if fold_case else as_written)
                if found:
                    detail = found.group(0)
                    return Evidence(kind, detail if kind == "automatic-reply subject"
                                    else f"subject: {detail}")
        return None
