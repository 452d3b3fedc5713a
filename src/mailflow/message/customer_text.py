"""The customer's own text: the body without quoted history, reply attributions,
forwarded or original-message blocks, signature and disclaimers.

What reads the customer's words (resend fingerprints; later the language guess,
suggested answers, the sentiment score) reads this, computed once per message
(`Message.customer_text`), never the whole body: a long quoted history would
outweigh a one-line complaint.

Written here, not taken from a library. mail-parser-reply 1.36 and
email-reply-parser 0.5.12 were tried on the examples of
``tests/unit/test_customer_text.py`` and on ../shared (1,009 messages): both
have super-linear regexes (mail-parser-reply: 4.5 s on one 20 KB line
``On x x x…``; email-reply-parser: over 20 s on 3,000 lines starting ``On``),
neither keeps an answer written below or between the quotes (Thunderbird's
``Le … a écrit :`` above them), nor knows a Gmail attribution wrapped over two
lines in French or a French disclaimer; email-reply-parser knows English only
and drops a sentence beginning with ``From:``. quotequail only finds where a
quote starts.

Linear time: the input is cut at `MAX_CHARS`; each line is classified on at
most `_LINE_CAP` characters by string tests and anchored regexes without
nested quantifiers; every look ahead or back spans a few lines.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import ahocorasick

#: longer input is cut first: a customer writes less, and the work stays bounded
MAX_CHARS = 100_000
_LINE_CAP = 400  # a line is classified on its first characters only

Reason = Literal["quote", "attribution", "history", "signature", "closing", "disclaimer",
                 "over cap"]


@dataclass(frozen=True)
class Cut:
    """Lines ``start`` to ``end`` (excluded, 0-based) were removed, and why."""

    reason: Reason
    start: int
    end: int
    first_line: str  # the first line cut, shortened, for a dry run's display


@dataclass(frozen=True)
class CustomerText:
    text: str
    cuts: tuple[Cut, ...] = ()


def customer_text(text: str) -> str:
    """The customer's own words in ``text`` (a decoded body); '' when there are none."""
    return split_customer_text(text).text


def split_customer_text(text: str) -> CustomerText:
    """The customer's own text and what was cut; never raises."""
    try:
        return _split(text)
    except Exception:  # a bug here must not stop a message: keep every word
        return CustomerText(text[:MAX_CHARS] if isinstance(text, str) else "")


# --- line patterns (matched on a stripped line of at most _LINE_CAP characters) ------

_SEPARATOR = re.compile(
    r"[-_=*]{2,}[ \t]*(?:original message|original nachricht|message d'origine|forwarded message"
    r"|message transf[ée]r[ée]|ursprüngliche nachricht|weitergeleitete nachricht"
    r"|mensaje original|mensaje reenviado|messaggio originale|messaggio inoltrato"
    r"|oorspronkelijk bericht|doorgestuurd bericht)[ \t]*[-_=*]*"
    r"|(?:begin forwarded message|début du message réexpédié"
    r"|anfang der weitergeleiteten nachricht|inicio del mensaje reenviado)[ \t]*:")
_RULE = re.compile(r"[-_=*]{5,}")  # a bare line above an Outlook header block
_HEADER = re.compile(
    r"\*{0,2}(from|de|von|da|van|sent|envoyé|envoye|gesendet|enviado|inviato|date|datum"
    r"|fecha|to|à|a|an|para|cc|subject|objet|sujet|betreff|asunto|oggetto)\*{0,2}"
    r"[ \t\xa0\u202f]*:")
_FROM = frozenset({"from", "de", "von", "da", "van"})
_SENT = frozenset({"sent", "envoyé", "envoye", "gesendet", "enviado", "inviato", "date",
                   "datum", "fecha"})
_OPENER = re.compile(r"(?:-{2,}[ \t]*)?(?:on|at|le|am|el|il|op|em|den)[ \t]")
_VERBS = ("wrote", "writes", "a écrit", "a ecrit", "schrieb", "escribió", "escribio",
          "ha scritto", "schreef", "escreveu", "skrev")
_YEAR_OR_TIME = re.compile(r"(?<!\d)(?:19|20)\d\d(?!\d)|\d[:h]\d\d")
_TIME = re.compile(r"\d[:h]\d\d")
_MOBILE = re.compile(
    r"(?:sent from (?:my|outlook|mail for|yahoo|samsung|the )|sent with |get outlook for "
    r"|envoyé (?:de mon|depuis (?:mon|outlook|l'application|yahoo)|à partir de)"
    r"|envoye (?:de mon|depuis)|télécharger outlook pour |obtenir outlook pour "
    r"|von meinem |gesendet (?:von meinem|von mail für|mit )|enviado desde (?:mi|outlook)"
    r"|inviato da )")
_CLOSING = re.compile(
    r"(?i:(?:bien |très |tres )?cordialement|bien à vous|(?:sincères |meilleures |cordiales )?"
    r"salutations(?: distinguées)?|bonne (?:journée|soirée|fin de journée)|merci(?: d'avance"
    r"| par avance| beaucoup| encore)?|(?:best |kind |warm |warmest )?regards|best(?: wishes)?"
    r"|(?:many )?thanks(?: in advance)?|thank you(?: in advance)?|cheers|sincerely"
    r"|yours (?:sincerely|faithfully|truly)|mit freundlichen grüßen|(?:viele |beste |liebe "
    r"|freundliche )?grüße|mfg|gruß|(?:un )?saludos?(?: cordiales)?|atentamente"
    r"|(?:cordiali|distinti) saluti)[ \t,.!]*(?:[A-ZÀ-Ý][^\s,.!?;:]*(?:[ \t]+[A-ZÀ-Ý]"
    r"[^\s,.!?;:]*){0,3})?")
_DISCLAIMERS = (
    # English (after "e-mail" became "email", curly apostrophes straight)
    "this email and any attachment", "this message and any attachment",
    "this email is confidential", "this message is confidential",
    "this email may contain confidential", "this message may contain confidential",
    "this email contains confidential", "this message contains confidential",
    "if you are not the intended recipient", "if you have received this email in error",
    "if you have received this message in error", "intended solely for the use",
    "confidentiality notice",
    "think before you print", "consider the environment before printing",
    "please consider the environment", "this email originated from outside",
    # French
    "ce message et toutes les pièces jointes", "ce message et ses pièces jointes",
    "ce courriel et toutes les pièces jointes", "ce courriel et ses pièces jointes",
    "ce message est confidentiel", "ce courriel est confidentiel",
    "ce message peut contenir des informations confidentielles",
    "si vous n'êtes pas le destinataire", "si vous avez reçu ce message par erreur",
    "si vous avez reçu ce courriel par erreur", "pensez à l'environnement avant d'imprimer",
    "avant d'imprimer ce message", "avant d'imprimer ce mail", "avant d'imprimer ce courriel",
    "n'imprimez ce message", "n'imprimez ce mail", "n'imprimez ce courriel",
    # German, Spanish
    "diese email enthält vertrauliche", "diese email kann vertrauliche",
    "diese nachricht enthält vertrauliche", "ausschließlich für den adressaten bestimmt",
    "nicht der bestimmungsgemäße adressat", "wenn sie nicht der richtige adressat",
    "bitte denken sie an die umwelt", "este mensaje y sus anexos", "este mensaje es confidencial",
    "antes de imprimir este mensaje", "antes de imprimir este correo",
)


def _automaton(phrases: Sequence[str]) -> ahocorasick.Automaton:
    """Every phrase in one automaton: a line is read once, not once a phrase (49)."""
    automaton = ahocorasick.Automaton()
    for phrase in phrases:
        automaton.add_word(phrase, phrase)
    automaton.make_automaton()
    return automaton


_DISCLAIMER_PHRASES = _automaton(_DISCLAIMERS)


def _disclaims(key: str) -> bool:
    return next(_DISCLAIMER_PHRASES.iter(key), None) is not None


def _key(line: str) -> str:
    """A line as the patterns see it: bounded, stripped, lowercased, spelt one way."""
    low = line[:_LINE_CAP].strip().lower()
    if "’" in low:
        low = low.replace("’", "'")
    return low.replace("e-mail", "email") if "e-mail" in low else low


def _attribution(low: str, *, quoted_next: bool) -> bool:
    """"On … wrote:", "Le … a écrit :", "Am … schrieb …:", "El … escribió:" (``low`` is
    one or a few joined lines). Before a quote a date or an address is enough; before
    unquoted text (then everything after goes) a time or an address is asked for, so
    that a sentence like "Le 3 juin 2024, le livreur a écrit :" stays."""
    if not low.endswith(":") or len(low) > _LINE_CAP:
        return False
    for verb in _VERBS:
        at = low.rfind(verb)
        if at > 0 and not low[at - 1].isalnum() and len(low) - at <= 150:
            break
    else:
        return False
    if not _OPENER.match(low):  # "X <x@y> wrote:" only just above a quote
        return quoted_next and "@" in low and len(low) - at - len(verb) <= 2
    evidence = _YEAR_OR_TIME if quoted_next else _TIME
    return "@" in low or evidence.search(low) is not None


def _header_block(keys: Sequence[str], i: int) -> bool:
    """``From:`` or ``De :`` with a ``Sent:``/``Date:`` line, or two more header lines,
    in the next few lines: an Outlook header block, not one sentence beginning "From:"."""
    names: list[str] = []
    for key in keys[i:i + 6]:
        if not key:
            continue
        match = _HEADER.match(key)
        if match is None:
            break
        names.append(match.group(1))
    if len(names) < 2 or names[0] not in _FROM:
        return False
    return bool(_SENT.intersection(names[1:])) or len(names) >= 3


def _signature_like(key: str) -> bool:
    """A name, a title, a phone number, an address: not a question, not a sentence."""
    if len(key) > 80 or "?" in key or key.startswith(("ps", "p.s")):
        return False
    return len(key.split()) <= 4 or any(c.isdigit() for c in key) or "@" in key \
        or "www." in key or "://" in key or not any(c.isalpha() for c in key)


def _next_nonblank(keys: Sequence[str], j: int) -> int:
    for k in range(j, min(j + 4, len(keys))):
        if keys[k]:
            return k
    return len(keys)


class _Keys(Sequence[str]):
    """The lines' keys (:func:`_key`), each worked out when first looked at: the lines
    after a history or signature cut are never looked at."""

    __slots__ = ("_keys", "_lines")

    def __init__(self, lines: list[str]) -> None:
        self._lines = lines
        self._keys: list[str | None] = [None] * len(lines)

    def __len__(self) -> int:
        return len(self._lines)

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self._lines)))]
        key = self._keys[i]
        if key is None:
            key = self._keys[i] = _key(self._lines[i])
        return key


def _split(text: str) -> CustomerText:
    over = len(text) > MAX_CHARS
    text = text[:MAX_CHARS]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    keys = _Keys(lines)
    n = len(lines)
    why: list[Reason | None] = [None] * n
    spoken = False  # a line of the customer's was kept before this one
    rest: tuple[int, Reason] | None = None  # every line from there on is cut, and why

    i = 0
    while i < n:
        key = keys[i]
        if not key:
            i += 1
            continue
        if key.startswith(">") or _wrapped_quote(lines, keys, i):
            why[i] = "quote"
            i += 1
            continue
        attribution = _attribution_span(keys, i)
        if attribution:
            after = _next_nonblank(keys, i + attribution)
            if after < n and keys[after].startswith(">"):
                for k in range(i, after):
                    why[k] = "attribution"
                i = after
                continue
        if attribution or _SEPARATOR.fullmatch(key) or (
                key[0] in "*dfv" and _header_block(keys, i)):
            start = i
            for k in range(i - 1, max(i - 4, -1), -1):  # a rule line above goes too
                if keys[k] and _RULE.fullmatch(keys[k]):
                    start = k
                elif keys[k]:
                    break
            rest = (start, "history")
            break
        if key == "--" or (_MOBILE.match(key) and len(key.split()) <= 10):
            rest = (i, "signature")
            break
        if _disclaims(key):
            if spoken:
                rest = (i, "disclaimer")
                break
            while i < n and keys[i]:  # a banner above the text: only its paragraph
                why[i] = "disclaimer"
                i += 1
            continue
        spoken = True
        i += 1
    if rest is not None:
        for k in range(rest[0], n):
            why[k] = why[k] or rest[1]
    _cut_closing(lines, keys, why)
    return _assemble(lines, why, over)


def _attribution_span(keys: Sequence[str], i: int) -> int:
    """How many lines (1 to 3) make the attribution starting at line ``i``; 0: none.
    Gmail wraps a long one ("… Service client <" / "sav@example.com> a écrit :")."""
    joined = keys[i]
    for span in range(1, 4):
        if span > 1:
            if i + span - 1 >= len(keys) or not keys[i + span - 1] or \
                    not _OPENER.match(keys[i]) or len(joined) > _LINE_CAP:
                return 0
            joined = f"{joined} {keys[i + span - 1]}"
        if joined.endswith(":"):
            after = _next_nonblank(keys, i + span)
            quoted_next = after < len(keys) and keys[after].startswith(">")
            return span if _attribution(joined, quoted_next=quoted_next) else 0
    return 0


def _wrapped_quote(lines: list[str], keys: Sequence[str], i: int) -> bool:
    """A quoted line that lost its ``>`` when its long line was wrapped, between two quoted
    lines: short and starting in lower case (an inline answer starts a sentence)."""
    return 0 < i < len(lines) - 1 and keys[i - 1].startswith(">") and \
        keys[i + 1].startswith(">") and len(lines[i - 1]) >= 60 and len(keys[i]) <= 40 and \
        keys[i][0].isalpha() and lines[i].lstrip()[0].islower()


def _cut_closing(lines: list[str], keys: Sequence[str], why: list[Reason | None]) -> None:
    """A closing ("Cordialement,", "Best regards") followed by signature-like lines only,
    at the end of what is kept, with text of the customer's above it: never a question."""
    seen = 0
    for k in range(len(lines) - 1, -1, -1):
        if why[k] is not None or not keys[k]:
            continue
        if _CLOSING.fullmatch(lines[k][:_LINE_CAP].strip()):
            if any(why[j] is None and keys[j] for j in range(k)):
                for j in range(k, len(lines)):
                    if why[j] is None and keys[j]:
                        why[j] = "closing"
            return
        seen += 1
        if seen > 15 or not _signature_like(keys[k]):
            return


def _assemble(lines: list[str], why: list[Reason | None], over: bool) -> CustomerText:
    kept: list[str] = []
    cuts: list[Cut] = []
    gap = False  # lines were cut since the last kept one
    spoke = False  # a non-blank line was kept since the last cut
    run: list[Any] | None = None  # the cut being grown: [reason, start, end, first line]
    for k, line in enumerate(lines):
        reason = why[k]
        if reason is None:
            blank = not line.strip()
            if blank and (not kept or (gap and not kept[-1].strip())):
                continue  # no blank line first, nor twice around a cut
            kept.append(line.rstrip())
            gap = False
            spoke = spoke or not blank
            continue
        gap = True
        if run is not None and run[0] == reason and not spoke:  # one cut across blank lines
            run[2] = k + 1
        elif line.strip():
            if run is not None:
                cuts.append(Cut(*run))
            run = [reason, k, k + 1, line.strip()[:80]]
            spoke = False
    if run is not None:
        cuts.append(Cut(*run))
    if over:
        cuts.append(Cut("over cap", len(lines), len(lines), f"after {MAX_CHARS} characters"))
    return CustomerText("\n".join(kept).strip("\n"), tuple(cuts))
