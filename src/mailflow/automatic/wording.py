"""What a message says: the phrases of :mod:`mailflow.automatic.phrases` and the
formats of monitoring, ticketing and list subjects, found in linear time.

The body is read on its first 4 KB and last 2 KB (a newsletter's unsubscribe line
is at its end), accents and case folded, by one Aho-Corasick automaton. Only the
sender's own text counts: what follows a forward or an original-message block, a
reply attribution or a quoted line is someone else's (a person forwarding a bounce
with "what is this?" is still a person). A robot's statement about itself ("This is
an automated email") weighs more at the start of a line or sentence than inside
one, and nothing inside quotation marks (a person quoting a robot).
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Iterator

import ahocorasick

from mailflow.automatic.phrases import BODY, STATEMENTS, SUBJECT
from mailflow.automatic.verdict import Evidence

#: the kinds whose body phrases are machine-written blocks (an MTA's report, Nagios'
#: template, Mailman's notice): a person does not type them
MACHINE_KINDS = frozenset({"delivery report", "monitoring alert", "list moderation",
                           "read receipt"})
HEAD_CHARS = 3072
TAIL_CHARS = 1024
#: typographic apostrophes and quotation marks as typed (a phrase's "i'm", a person's
#: quotation marks around a robot's words)
_TYPED = (("’", "'"), ("‘", "'"), ("ʼ", "'"), ("“", '"'), ("”", '"'), ("„", '"'),
          ("«", '"'), ("»", '"'))

#: where someone else's text begins: a quoted line, a forward or original-message block,
#: an Outlook header block, a reply attribution
_OTHERS = re.compile(
    r"^[ \t]*(?:>|-{2,}[ \t]*(?:original message|forwarded message|message d'origine"
    r"|message transf[eé]r[eé]|urspr[üu]ngliche nachricht|weitergeleitete nachricht"
    r"|mensaje original|mensaje reenviado|messaggio originale|messaggio inoltrato"
    r"|oorspronkelijk bericht|doorgestuurd bericht)|begin forwarded message"
    r"|d[ée]but du message r[ée]exp[ée]di[ée]|anfang der weitergeleiteten nachricht"
    r"|inicio del mensaje reenviado|_{10,}[ \t]*$"
    r"|\*?(?:from|de|von|da|van)[ \t]*:[^\n]{0,300}\n[ \t]*\*?(?:sent|date|envoy[ée]|gesendet"
    r"|datum|enviado|fecha|inviato|data|verzonden)[ \t]*:"
    r"|(?:on|le|am|el|il|op)[ \t][^\n]{0,200}(?:wrote|a [ée]crit|schrieb|escribi[óo]"
    r"|ha scritto|schreef)[ \t]*:)", re.I | re.M)
_OPENING = frozenset(".!?:;*-=_|)]>#~\n")
_QUOTES = frozenset("\"'`")
#: "Re:", "AW:", "TR:", "Fwd:", "WG:"…: a person answering or forwarding
REPLY_PREFIX = re.compile(r"^\s*(?:re|aw|sv|vs|antw|antwort|ref|rif|r|tr|fw|fwd|wg|rv|enc"
                          r"|i|doorst|trs)\s*(?:\[\d+\]|\(\d+\))?\s*:", re.I)

def _one(alternatives: tuple[tuple[str, str], ...], flags: int = 0) -> tuple[
        re.Pattern[str], tuple[str, ...]]:
    """One search for several (kind, pattern): each alternative its own group, so the
    group that matched says the kind."""
    pattern = "|".join(f"({regex})" for _, regex in alternatives)
    return re.compile(pattern, flags), tuple(kind for kind, _ in alternatives)


#: subjects that only robots write (Nagios', Icinga's, Alertmanager's, Mailman's…): at
#: the start of the Subject
_FORMATS = _one((
    ("monitoring alert", r"\*\* ?(?:PROBLEM|RECOVERY|ACKNOWLEDGEMENT|FLAPPING\w*|DOWNTIME\w*"
                         r"|CUSTOM) (?:Service|Host) Alert: "),
    ("monitoring alert", r"\[(?:FIRING|RESOLVED)(?::\d+)?\]"),
    ("mailing list", r"(?i:confirm) [0-9a-f]{20,}\s*$"),
    ("delivery report", r"(?i:warning: message) \S+ (?i:delayed)\b"),
))
#: … anywhere in it, once a word in capitals says a monitoring tool wrote it
_STATES = re.compile(r"\b(?:PROBLEM|RECOVERY|ACKNOWLEDGEMENT)\b.{0,200}?(?:"
                     r"\bis (?:CRITICAL|WARNING|UNKNOWN|UNREACHABLE)\b"
                     r"|\b[Aa]lert\b.{0,200}?\bis (?:DOWN|UP|OK)\b)")
_NOTICE = re.compile(r"\b(?:encrypted|secure) (?:e-?mail|mail|message) notification\b", re.I)
_VERBS = (r"assigned|created|opened|logged|raised|submitted|received|updated|resolved|closed"
          r"|escalated|reopened|commented on|cancell?ed|acknowledged|assigne|cree|creee|ouvert"
          r"|ouverte|mis a jour|resolu|resolue|ferme|fermee|cloture|cloturee|zugewiesen"
          r"|erstellt|eroffnet|aktualisiert|gelost|geschlossen|asignado|creado|actualizado"
          r"|resuelto|cerrado|assegnato|assegnata|creato|creata|aggiornato|risolto|chiuso")
#: subjects robots write, and people sometimes: as written (capitals count), at the start
_HINTS = _one((
    ("monitoring alert", r"(?:Problem|Resolved|Problem resolved)(?: in [\dhms ]+)?: "),
    ("monitoring alert", r"\[(?:Alerting|OK|No Data|Triggered|Recovered|Re-Triggered|Warn"
                         r"|Warning|Critical|Resolved)\]"),
    ("monitoring alert", r"(?:Monitor is (?:DOWN|UP)|(?:DOWN|UP) alert:|[Mm]onit alert\b)"),
    ("ticket notification", r"\[(?:JIRA|GLPI[^\]]{0,20}|Ticket#?\s?\d+"
                            r"|[A-Z][\w.-]{0,30} #\d+)\]"),
))
_DOWN = re.compile(r"\bis (?:CRITICAL|DOWN|UNREACHABLE)\b")
#: the same on the folded Subject (accents and case aside), at the start
_FOLDED_HINTS = _one((
    ("read receipt",
     r"(?:read|lu|gelesen|leido|letto|gelezen|lido|last|laest|not read|non lu|ungelesen"
     r"|no leido|non letto|niet gelezen|read receipt|return receipt|lesebestatigung"
     r"|accuse de lecture|confirmation de lecture) ?:"),
    ("delivery report", r"(?:delivered|remis|zugestellt|entregado|recapitato|bezorgd"
                        r"|delivery receipt) ?:"),
))
_TICKET_WORDS = ("ticket", "incident", "request", "case", "issue", "demande", "anfrage",
                 "vorgang", "caso", "richiesta", "melding", "aanvraag", "inc", "req", "ritm",
                 "chg", "prb", "sctask")
_TICKET = re.compile(
    r"(?:\b(?:ticket|incident|request|case|issue|demande|anfrage|vorgang|caso|richiesta"
    r"|melding|aanvraag)\b\W{0,3}(?:#|no\.?|nr\.?|n|number|nummer|numero)?\W{0,3}"
    r"[a-z]{0,8}[-_]?\d{2,}|\b(?:inc|req|ritm|chg|prb|sctask)\d{5,})\b.{0,80}?"
    r"\b(?:has been|have been|was|is now|is|a ete|wurde|ist|ha sido|e stato|e stata)\s+"
    rf"(?:{_VERBS})\b")


class Words:
    """Whole words or phrases found in one pass (Aho-Corasick), accents and case aside:
    for lists of names that a regular expression would try at every character."""

    def __init__(self, words: Iterable[str]) -> None:
        self.phrases = Phrases([("", 1.0, tuple(words))]).build()

    def first(self, text: str) -> str | None:
        return next((key for _, _, _, _, key in self.phrases.find(flat(text))), None)


def _kind(found: re.Match[str] | None, kinds: tuple[str, ...]) -> str | None:
    return kinds[found.lastindex - 1] if found and found.lastindex else None


def expand(phrase: str) -> list[str]:
    """Every spelling of ``phrase``'s ``{a|b}`` alternatives."""
    parts = re.split(r"\{([^{}]*)\}", phrase)
    options = [[part] if i % 2 == 0 else part.split("|") for i, part in enumerate(parts)]
    return [" ".join("".join(choice).split()) for choice in itertools.product(*options)]


def fold(text: str) -> str:
    """Case and accents aside, in C-speed steps whatever the script (the phrases are in
    Latin letters: other scripts' letters are dropped)."""
    if text.isascii():
        return text.lower()
    for typographic, typed in _TYPED:
        if typographic in text:
            text = text.replace(typographic, typed)
    # accents split off, then dropped with every other non-ASCII character
    return unicodedata.normalize("NFKD", text.casefold()).encode("ascii", "ignore").decode()


def flat(text: str) -> str:
    """Folded, on one line, single spaces: what the automatons read."""
    return " ".join(fold(text).split())


class Phrases:
    """An automaton of phrases, each with its kind and weight."""

    def __init__(self, tables: Iterable[tuple[str, float, tuple[str, ...]]],
                 opening: bool = False) -> None:
        self.automaton = ahocorasick.Automaton()
        self.empty = True
        self.add(tables, opening)

    def add(self, tables: Iterable[tuple[str, float, tuple[str, ...]]],
            opening: bool = False) -> None:
        for kind, weight, phrases in tables:
            for phrase in phrases:
                for variant in expand(phrase):
                    key = flat(variant)
                    if key:
                        self.automaton.add_word(key, (kind, weight, opening, key))
                        self.empty = False

    def build(self) -> Phrases:
        if not self.empty:
            self.automaton.make_automaton()
        return self

    def find(self, text: str) -> Iterator[tuple[int, str, float, bool, str]]:
        """(start, kind, weight, said at an opening only, phrase) for each whole-word hit."""
        if self.empty or not text:
            return
        for end, (kind, weight, opening, key) in self.automaton.iter(text):
            start = end - len(key) + 1
            if key[0].isalnum() and start > 0 and text[start - 1].isalnum():
                continue
            if key[-1].isalnum() and end + 1 < len(text) and text[end + 1].isalnum():
                continue
            yield start, kind, weight, opening, key


_BODY = Phrases(BODY).build()
_BODY.add(STATEMENTS, opening=True)
_BODY.build()
_SUBJECT = Phrases(SUBJECT).build()


def _region(text: str) -> str:
    """The first and last characters of ``text``: what is read of it."""
    if len(text) <= HEAD_CHARS + TAIL_CHARS:
        return text
    return text[:HEAD_CHARS] + "\n" + text[-TAIL_CHARS:]


def own_text(text: str) -> str:
    """What is read of ``text``, up to someone else's words."""
    region = _region(text)
    others = _OTHERS.search(region)
    return region[:others.start()] if others else region


def body_hints(text: str) -> list[Evidence]:
    """The robots' phrases in the sender's own text, a statement weighed by where it
    stands."""
    if next(_BODY.find(flat(_region(text))), None) is None:  # most people: no phrase at all
        return []
    lines = "\n".join(" ".join(line.split()) for line in fold(own_text(text)).split("\n"))
    found: list[Evidence] = []
    for start, kind, weight, opening, key in _BODY.find(lines.replace("\n", " ")):
        if opening:
            before = lines[:start].rstrip(" ")[-1:]
            if before in _QUOTES:
                continue
            if before and before not in _OPENING:
                weight /= 2
        found.append(Evidence(kind, f"says “{key}”", weight, machine=kind in MACHINE_KINDS))
    return found


def subject_format(subject: str) -> Evidence | None:
    """A subject in a robot's own format (Nagios', Alertmanager's, Mailman's…)."""
    found = _FORMATS[0].match(subject)
    if found is None and ("PROBLEM" in subject or "RECOVERY" in subject
                          or "ACKNOWLEDGEMENT" in subject):
        found = _STATES.search(subject)
        if found is not None:
            return Evidence("monitoring alert", f"subject {found.group(0).strip()[:60]}")
    if found is None and "notification" in subject.lower():
        found = _NOTICE.search(subject)
        if found is not None:
            return Evidence("notification robot", f"subject {found.group(0).strip()[:60]}")
    kind = _kind(found, _FORMATS[1])
    if found is None or kind is None:
        return None
    return Evidence(kind, f"subject {found.group(0).strip()[:60]}")


def subject_hints(subject: str) -> list[Evidence]:
    """What the Subject says that robots say, and people sometimes."""
    if not subject:
        return []
    folded = flat(subject)
    found = [Evidence(kind, f"subject “{key}”", weight)
             for _, kind, weight, _, key in _SUBJECT.find(folded)]
    hits = [(_HINTS[0].match(subject), _HINTS[1]), (_FOLDED_HINTS[0].match(folded),
                                                      _FOLDED_HINTS[1])]
    if " is " in subject:
        hits.append((_DOWN.search(subject), ("monitoring alert",)))
    if any(word in folded for word in _TICKET_WORDS):
        hits.append((_TICKET.search(folded), ("ticket notification",)))
    for hit, kinds in hits:
        kind = kinds[0] if len(kinds) == 1 else _kind(hit, kinds)
        if hit is not None and kind is not None:
            found.append(Evidence(kind, f"subject {hit.group(0).strip()[:50]}", 0.5,
                                  machine=True))
    if REPLY_PREFIX.match(subject):
        found.append(Evidence("a person's reply or forward", subject.strip()[:20], -0.5))
    return found
