"""The shipped signs and the rules' own, put together in the order they are asked.

First what decides alone (weight 1), the most telling first: RFC 3834's headers, the
rules' own decisive signs, a report's structure (DSN, read receipt, ARF, TLS, DMARC),
a robot's header (vendor, helpdesk, list manager, bulk mailer), a robot's address or
name in the From (or the original author a group or list names), a subject marker or
a robot's subject format. Then the hints, each too weak alone, weighed together: the
Subject's and the body's wording, a role or a mail system's address, a sending
service's headers, a ``Return-Path`` kept in the message, the rules' weaker signs.
Per source (subject, body, sender, envelope) the strongest hint counts; a reply or
forward prefix and a person's mail client count against. The body is read only when
the rest already points to a robot: wording alone never decides.
"""

from __future__ import annotations

from email.utils import parseaddr

from mailflow.automatic import wording
from mailflow.automatic.headers import HeaderSigns, header_map
from mailflow.automatic.markers import SubjectMarkers
from mailflow.automatic.own import AutomaticRules, OwnSigns
from mailflow.automatic.reports import report
from mailflow.automatic.rfc3834 import standard_headers
from mailflow.automatic.senders import Senders
from mailflow.automatic.verdict import Automatic, Evidence
from mailflow.message import Message

#: the most a body's wording weighs (a robot's statement about itself, and more)
BODY_MOST = 1.25
#: wording alone (the Subject's and the body's, no structure agreeing) decides from here
WORDING_ALONE = 1.25
#: what a robot's statement about itself gains from a second phrase beside it
_SECOND_PHRASE = 0.5

#: a Subject is read on so many characters (a robot's is short; a hostile one is not)
SUBJECT_CHARS = 400
#: sources whose hints add up (each is a different header or rule); elsewhere the
#: strongest hint of the source counts
_ADDING = frozenset({"headers", "rules"})


class Signs:
    """The shipped signs and the rules' additions, compiled once per (re)load."""

    def __init__(self, rules: AutomaticRules | None = None) -> None:
        rules = rules or AutomaticRules()
        self.markers = SubjectMarkers(rules.languages, rules.subjects)
        self.senders = Senders(rules.senders)
        self.header_signs = HeaderSigns(rules.headers)
        self.own = OwnSigns(rules.signs)

    def sender(self, address: str) -> Automatic | None:
        """``address`` is a robot's, judging by its local part or domain."""
        found = self.senders.sender(address)
        return found.verdict() if found else None

    def decisive(self, message: Message, headers: dict[str, list[str]],
                 author: tuple[str, str], own: list[Evidence]) -> Automatic | None:
        """A sign that decides alone, in the order of the module's docstring."""
        name, address = author
        subject = message.subject[:SUBJECT_CHARS]
        for sign in own:
            if sign.weight >= 1:
                return sign.verdict()
        found = (report(message.content_type, (headers.get("content-type") or [""])[0],
                        message.part_types, message.attachments, subject, address,
                        tls="tls-report-domain" in headers)
                 or self.header_signs.decisive(headers, (h.name for h in message.headers)))
        if found is not None:
            return found.verdict()
        raw_from = (headers.get("from") or [""])[0]
        if raw_from and not address and ("<>" in raw_from.replace(" ", "")
                                         or "@" not in raw_from):
            return Automatic("From names no address", "From names no address")
        found = self.senders.name(name) if name else None
        for other in (address, *_relayed(headers)):
            if found is None and other:
                found = self.senders.sender(other)
        found = found or self.markers.search(subject) or wording.subject_format(subject)
        return found.verdict() if found is not None else None

    def weighed(self, message: Message, headers: dict[str, list[str]],
                author: tuple[str, str], own: list[Evidence],
                envelope: bool) -> Automatic | None:
        """The hints together: an automatic verdict when they reach 1."""
        name, address = author
        sources: dict[str, list[Evidence]] = {
            "subject": wording.subject_hints(message.subject[:SUBJECT_CHARS]),
            "headers": self.header_signs.hints(headers),
            "rules": [e for e in own if e.weight < 1],
            "sender": [e for e in (self.senders.weak_sender(address) if address else None,
                                   self.senders.weak_name(name) if name else None) if e],
            "envelope": self._envelope_hints(message, headers, envelope),
        }
        total, _ = _score(sources)
        if total > 0 and total + BODY_MOST >= 1:  # the body only beside another hint
            sources["body"] = wording.body_hints(message.text)
        if "message/rfc822" in message.part_types and any(
                e.kind == "delivery report" and e.weight > 0
                for hints in sources.values() for e in hints):
            sources["returned"] = [Evidence("delivery report", "the message returned", 0.25)]
        total, agreeing = _score(sources)
        if total < 1 or (total < WORDING_ALONE and not agreeing):
            return None
        positive = [e for hints in sources.values() for e in hints if e.weight > 0]
        kinds: dict[str, float] = {}
        for hint in positive:
            kinds[hint.kind] = kinds.get(hint.kind, 0) + hint.weight
        kind = max(kinds, key=lambda k: kinds[k])
        seen = "; ".join(dict.fromkeys(e.detail for e in sorted(positive, key=lambda e: -e.weight)))
        return Automatic(kind, f"{kind} ({seen[:200]})")

    def _envelope_hints(self, message: Message, headers: dict[str, list[str]],
                        envelope: bool) -> list[Evidence]:
        """The envelope sender's hints, and those of a ``Return-Path`` the message kept (a
        hop before saw that envelope: ``<>``, a bounce address, a sending service's)."""
        found: list[Evidence] = []
        author = _author(headers)[1]
        mail_from = message.envelope.mail_from.lower()
        if envelope and mail_from and mail_from != author:
            hint = self.senders.weak_sender(mail_from)
            if hint is not None:
                found.append(hint)
        for value in headers.get("return-path", ())[:1]:
            path = address_of(value)[1] or value.strip().strip("<>").strip()
            if not path or value.replace(" ", "") == "<>":
                found.append(Evidence("null sender", "Return-Path: <>", 0.5))
                continue
            if path.lower() in (author, mail_from):  # the same address, said again
                continue
            robot = self.senders.sender(path)
            if robot is not None:
                found.append(Evidence(robot.kind, f"Return-Path {robot.detail}", 0.5))
            hint = self.senders.weak_sender(path)
            if hint is not None:
                found.append(hint)
        return found

    def judge(self, message: Message, envelope: bool = True) -> Automatic | None:
        """The message's verdict: its content first, then (``envelope``) its envelope
        sender, then the hints together."""
        headers = header_map((h.name, h.value) for h in message.headers)
        standard = standard_headers(headers, (h.name for h in message.headers))
        if standard is not None:
            return standard
        name, address = _author(headers)
        own = self.own.evidence(message, headers, address) if self.own.signs else []
        found = self.decisive(message, headers, (name, address), own)
        if found is None and envelope and message.envelope.mail_from:
            found = self.sender(message.envelope.mail_from)
        return found or self.weighed(message, headers, (name, address), own, envelope)


def address_of(value: str) -> tuple[str, str]:
    """(display name, address) of one mailbox, in linear time: the address in angle
    brackets, else the word with an ``@``; parseaddr for what is stranger."""
    lt = value.rfind("<")
    if lt >= 0:
        gt = value.find(">", lt)
        if gt > lt:
            return value[:lt].strip().strip('"').strip(), value[lt + 1:gt].strip()
    words = value.split()
    if len(words) == 1 and "@" in words[0] and '"' not in value:
        return "", words[0]
    try:
        return parseaddr(value)
    except Exception:  # a hostile header must not stop the judgement
        return "", ""


def _author(headers: dict[str, list[str]]) -> tuple[str, str]:
    """The From's display name and address (lower-cased): ('', '') without."""
    values = headers.get("from")
    if not values:
        return "", ""
    name, address = address_of(values[0])
    return name, address.lower()


def _relayed(headers: dict[str, list[str]]) -> list[str]:
    """The addresses a relay keeps of the original author or sender: a list's
    ``Sender`` (``owner-…``, ``…-bounces``), a group's ``X-Original-Sender``."""
    found = []
    for name in ("sender", "x-original-sender", "x-original-from"):
        for value in headers.get(name, ())[:1]:
            address = address_of(value)[1]
            if address:
                found.append(address.lower())
    return found


def _score(sources: dict[str, list[Evidence]]) -> tuple[float, bool]:
    """The hints' weight, and whether the structure agrees (anything but wording).

    Per source the strongest hint counts (headers and rules: their sum; the body: a
    robot's statement about itself and a second phrase), plus whatever counts against."""
    total, agreeing = 0.0, False
    for source, hints in sources.items():
        positive = [e for e in hints if e.weight > 0]
        if positive:
            strongest = max(positive, key=lambda e: e.weight)
            if source in _ADDING:
                total += sum(e.weight for e in positive)
            else:
                total += strongest.weight
            if source == "body" and strongest.weight >= 0.75 and len(
                    {e.detail for e in positive}) > 1:
                total += _SECOND_PHRASE
            agreeing = agreeing or source not in ("subject", "body") or any(
                e.machine for e in positive)
        total += sum(e.weight for e in hints if e.weight < 0)
    return total, agreeing
