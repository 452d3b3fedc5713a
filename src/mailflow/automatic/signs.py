"""What real robots look like, beyond RFC 3834's ``Auto-Submitted``: the shipped signs.

Out-of-office replies from Exchange, iCloud or Lotus carry no ``Auto-Submitted``:
they are known by a vendor header (``X-Apple-Action: VACATION``, ``X-Autoreply``),
by a subject marker in the sender's language ("Automatic reply:", "AUTO:",
"Abwesenheitsnotiz"), by a report's content type, or by the robot's address
(``…-noreply@``, ``post_master@``, ``MAILER-DAEMON``), as Zammad, OTOBO and Sieve's
vacation extension (RFC 5230) check. Other helpdesks and trackers sign their
notifications with loop headers (``X-OTOBO-Loop``, ``RT-Ticket``) or "… via RT".

The subject markers are per language; the rules choose the languages
(``automatic.languages``) and may add their own markers, senders and headers.
Each check returns an :class:`~mailflow.automatic.Automatic`: the sign's name
and what it saw, which ``mailflow try`` and the logs show.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from email.utils import parseaddr

from pydantic import Field

from mailflow.automatic.verdict import Automatic
from mailflow.config import Model
from mailflow.message import Message
from mailflow.textmatch import fold

#: Subject markers of out-of-office and automatic replies, and of delivery failures,
#: per language. Matched at the start of the Subject, accents and case aside (a marker in
#: capitals, Lotus's "AUTO:", only in capitals); a marker beginning with ``*`` is looked
#: for anywhere in it (whole words).
SUBJECT_MARKERS: Mapping[str, tuple[str, ...]] = {
    "en": ("auto reply", "auto-reply", "autoreply", "automatic reply", "auto response",
           "auto-response", "autoresponse", "automated response", "automatic response",
           "out of office", "out of the office", "out-of-office", "AUTO:",
           "*is out of the office", "*am out of the office", "*out of office autoreply",
           "undeliverable", "undelivered mail", "delivery status notification",
           "delivery failure", "delivery failed", "delivery has failed",
           "delivery notification", "mail delivery failed", "mail delivery failure",
           "returned mail", "failure notice", "message not delivered",
           "nondeliverable", "non-deliverable", "warning: could not send message",
           "mail system error", "complaint about message from",
           "email feedback report for", "abuse report"),
    "fr": ("reponse automatique", "réponse automatique", "absent du bureau",
           "absente du bureau", "absence du bureau", "message d'absence",
           "reponse d'absence", "répondeur automatique", "*est absent du bureau",
           "*est absente du bureau", "non remis", "message non remis",
           "echec de la remise", "échec de la remise", "notification d'etat de remise",
           "non distribuable"),
    "de": ("automatische antwort", "automatische ruckantwort", "autom. antwort",
           "abwesenheitsnotiz", "abwesenheit", "abwesend", "nicht im buro",
           "ausser haus", "außer haus", "*ist nicht im buro", "*bin nicht im buro",
           "unzustellbar", "nicht zustellbar", "nicht zugestellt",
           "zustellung fehlgeschlagen", "benachrichtigung zum ubermittlungsstatus"),
    "es": ("respuesta automatica", "respuesta automática", "fuera de la oficina",
           "fuera de oficina", "respuesta de ausencia", "ausente", "mensaje automatico",
           "no se puede entregar", "no entregado", "notificacion de estado de entrega"),
    "it": ("risposta automatica", "risposta di assenza", "fuori sede", "fuori ufficio",
           "assente", "non recapitabile", "notifica di mancato recapito",
           "notifica stato di consegna"),
    "nl": ("automatisch antwoord", "afwezig", "afwezigheid", "niet aanwezig",
           "buiten kantoor", "automatisch bericht", "onbestelbaar", "niet bezorgd",
           "kan niet worden bezorgd"),
    "pt": ("resposta automatica", "resposta automática", "ausente",
           "fora do escritorio", "ausencia temporaria", "não entregue", "nao entregue"),
    "sv": ("autosvar", "automatiskt svar", "franvaro", "frånvaro", "ej levererat"),
    "da": ("autosvar", "automatisk svar", "fravaerende", "fraværende",
           "ikke pa kontoret"),
    "pl": ("automatyczna odpowiedz", "automatyczna odpowiedź", "nieobecnosc",
           "nieobecność", "poza biurem"),
    "lv": ("arpus biroja", "ārpus biroja", "automatiska atbilde", "automātiskā atbilde",
           "*automatiska atbilde"),
}

#: local parts that are robots (the whole part, after a ``+tag`` is dropped)
ROBOT_LOCAL_PARTS = frozenset({
    "mailer-daemon", "mailerdaemon", "mailer_daemon", "mail-daemon", "maildaemon",
    "postmaster", "post_master", "post-master", "abuse", "root", "daemon", "nobody",
    "noreply", "no-reply", "no_reply", "no.reply", "donotreply", "do-not-reply",
    "do_not_reply", "do.not.reply", "dontreply", "dont-reply", "noresponse",
    "no-response", "ne-pas-repondre", "nepasrepondre", "ne_pas_repondre",
    "ne.pas.repondre", "bounce", "bounces", "autoreply", "auto-reply", "autoresponder",
    "auto-responder", "majordomo", "listserv", "notification", "notifications",
})
#: whole addresses of robots whose local part could be a person's: Hotmail's feedback
#: loop (JMRP) writes as staff@hotmail.com
ROBOT_ADDRESSES = frozenset({"staff@hotmail.com", "staff@outlook.com"})
#: the same words as a prefix or suffix: ``noreply-dmarc@``, ``newsalerts-noreply@``,
#: ``gmail-noreply@``, ``bounce-123@``, ``dovecot-bounces@``
_ROBOT_WORD = (r"(?:no-?reply|no[_.]reply|do-?not-?reply|do_not_reply|dont-?reply"
               r"|mailer-?daemon|bounces?|ne[-_.]?pas[-_.]?repondre|auto-?reply|postmaster)")
_ROBOT_AFFIX = re.compile(rf"^{_ROBOT_WORD}[-._=]|[-._]{_ROBOT_WORD}$")
_EXCHANGE_SYSTEM = re.compile(r"^microsoftexchange[0-9a-f]{32}$")  # Exchange's NDR sender
_BATV = re.compile(r"^(?:prvs|btv1|msprvs1)=[^=]+=(.+)$")  # prvs=tag=local: the local part
_LIST_LOCAL = re.compile(r"^owner-|-(?:request|owner)$")

#: display names robots sign with (whole words, anywhere), and "… via RT" (Request
#: Tracker's notifications)
_ROBOT_NAME = re.compile(r"\b(?:mail delivery (?:system|subsystem|service)|mailer[- ]daemon"
                         r"|postmaster|ndr administrator|mail administrator"
                         r"|delivery status notification)\b|\bvia rt$")

#: headers whose mere presence means a robot, a helpdesk or a tracker wrote it
ROBOT_HEADERS = frozenset({
    "x-autoreply", "x-autorespond", "x-autoresponder", "x-auto-reply", "x-autoresponse",
    "x-auto-response", "x-mail-autoreply", "x-autoreply-from", "x-autogenerated",
    "x-loop", "x-no-loop", "x-failed-recipients",
    "rt-ticket", "rt-originator", "x-rt-loop-prevention", "x-rt-ticket",
    "x-bluebottle-request", "x-boxbe-waitlist", "x-hmxmroriginalrecipient",
    "x-jira-fingerprint", "x-github-reason", "x-gitlab-project", "x-bugzilla-reason",
    "x-redmine-host", "x-zendesk-from-account-id", "x-freshdesk-ticket-id",
})
_LOOP_HEADER = re.compile(r"^x-[a-z0-9-]*-loop$|loop-prevention$")  # X-OTOBO-Loop, X-OTRS-Loop
#: header: values that mean a robot (others are ignored)
_ROBOT_VALUES = {
    "x-apple-action": re.compile(r"vacation|auto", re.I),
    "x-zammad-is-auto-response": re.compile(r"true|yes", re.I),
    "delivered-to": re.compile(r"^autoresponder$", re.I),
    "managed-by": re.compile(r"^rt\b|request tracker", re.I),
    "x-mailer": re.compile(r"vacation|autorespond|autoreply|out of office", re.I),
}
#: content types of reports: the whole message, or a part of its top-level multipart
REPORT_TYPES = frozenset({
    "multipart/report", "message/delivery-status", "message/global-delivery-status",
    "message/disposition-notification", "message/global-disposition-notification",
    "message/feedback-report", "text/rfc822-headers", "message/rfc822-headers",
})


class AutomaticRules(Model):
    """Rules section ``automatic``: which languages' subject markers apply, and what the
    rules add to the shipped signs."""

    languages: list[str] = Field(default_factory=lambda: list(SUBJECT_MARKERS))
    subjects: list[str] = Field(default_factory=list)  # extra markers, any language
    senders: list[str] = Field(default_factory=list)  # extra robot local parts or addresses
    headers: list[str] = Field(default_factory=list)  # extra header names


def _marker_patterns(markers: Iterable[str]) -> list[tuple[bool, re.Pattern[str]]]:
    """(folded?, pattern) for each kind of marker: at the start or anywhere, in any case
    or in capitals only."""
    kinds: dict[tuple[bool, bool], set[str]] = {}
    for marker in markers:
        bare = marker.lstrip("*")
        capitals = bare.isupper()
        text = _normal(bare, fold_case=not capitals)
        if text:
            kinds.setdefault((marker.startswith("*"), capitals), set()).add(re.escape(text))
    end = r"(?![^\W_])"  # a whole word: "assente" but not "assentement"
    patterns = []
    for (anywhere, capitals), words in sorted(kinds.items()):
        head = r"(?<![^\W_])" if anywhere else "^"
        body = "|".join(sorted(words, key=len, reverse=True))
        patterns.append((not capitals, re.compile(f"{head}(?:{body}){end}")))
    return patterns


def _normal(text: str, fold_case: bool = True) -> str:
    """Folded (accents and case), single spaces, no space before a colon, leading
    punctuation dropped ("[Auto-Reply] …", "*** Out of office ***")."""
    spaced = " ".join((fold(text) if fold_case else text).split()).replace(" :", ":")
    return spaced.lstrip("[(*#-_ .\"'»«")


class Signs:
    """The shipped signs and the rules' additions, compiled once per (re)load."""

    def __init__(self, rules: AutomaticRules | None = None) -> None:
        rules = rules or AutomaticRules()
        unknown = [lang for lang in rules.languages if lang not in SUBJECT_MARKERS]
        if unknown:
            raise ValueError(f"languages: no shipped subject markers for "
                             f"{', '.join(unknown)} (known: {', '.join(SUBJECT_MARKERS)}); "
                             "add yours under subjects")
        markers = [m for lang in rules.languages for m in SUBJECT_MARKERS[lang]]
        self._subject_patterns = _marker_patterns([*markers, *rules.subjects])
        extra = {s.lower().strip() for s in rules.senders}
        self._extra_locals = {s for s in extra if "@" not in s}
        self._extra_addresses = ROBOT_ADDRESSES | {s for s in extra if "@" in s}
        self._headers = ROBOT_HEADERS | {h.lower().strip() for h in rules.headers}

    def subject(self, subject: str) -> Automatic | None:
        """The Subject says an automatic reply or a delivery failure."""
        if not subject:
            return None
        folded, as_written = _normal(subject), _normal(subject, fold_case=False)
        for fold_case, pattern in self._subject_patterns:
            found = pattern.search(folded if fold_case else as_written)
            if found:
                return Automatic("automatic-reply subject",
                                 f"automatic-reply subject ({found.group(0)})")
        return None

    def sender(self, address: str) -> Automatic | None:
        """``address`` is a robot's, judging by its local part."""
        lowered = address.lower().strip()
        if lowered in self._extra_addresses:
            return Automatic("robot sender", f"robot sender ({lowered})")
        local = lowered.rpartition("@")[0] if "@" in lowered else lowered
        local = local.strip('"')
        batv = _BATV.match(local)
        if batv:
            local = batv.group(1)
        base = local.partition("+")[0] or local
        if (base in ROBOT_LOCAL_PARTS or base in self._extra_locals
                or _ROBOT_AFFIX.search(base) or _EXCHANGE_SYSTEM.match(base)):
            return Automatic("robot sender", f"robot sender ({local})")
        if _LIST_LOCAL.search(base):
            return Automatic("mailing-list sender", "mailing-list sender")
        return None

    def author(self, message: Message) -> Automatic | None:
        """The From field (its address or its name) is a robot's."""
        value = message.get("From")
        if not value:
            return None
        name, address = parseaddr(value)
        if not address and ("<>" in value.replace(" ", "") or "@" not in value):
            return Automatic("From names no address", "From names no address")
        if _ROBOT_NAME.search(" ".join(fold(name).split())):
            return Automatic("robot name in From", f"robot name in From ({name.strip()[:60]})")
        return self.sender(address) if address else None

    def headers(self, message: Message) -> Automatic | None:
        """A vendor, helpdesk or loop header says a robot wrote it."""
        for header in message.headers:
            lower = header.name.lower()
            if lower in self._headers or _LOOP_HEADER.search(lower):
                return Automatic("auto-reply header", f"auto-reply marker ({header.name})")
            value_rule = _ROBOT_VALUES.get(lower)
            if value_rule is not None and value_rule.search(header.value.strip()):
                return Automatic("auto-reply header", f"auto-reply marker ({header.name}:"
                                 f" {header.value.strip()[:40]})")
            if lower == "return-path" and header.value.replace(" ", "") == "<>":
                return Automatic("null sender", "null sender (Return-Path: <>)")
        return None

    @staticmethod
    def content(message: Message) -> Automatic | None:
        """The content type says a delivery, read or abuse report."""
        if message.content_type in REPORT_TYPES:
            return Automatic("report", f"delivery or read report ({message.content_type})")
        for part in message.part_types:
            if part in REPORT_TYPES:
                return Automatic("report", f"delivery or read report ({message.content_type}"
                                 f" with {part})")
        return None
