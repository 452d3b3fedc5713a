#!/usr/bin/env python3
"""Distinct customer mail for the benchmark: what real traffic costs mailflow.

Postfix's smtp-source sends one message again and again: after the first, every
message is a copy (no case, no acknowledgement, no timer). This generator writes
what the shipped rules (rules/*.yaml) see in a day: customers at many outside
domains asking about orders, deliveries, invoices, returns and quotes, in French
or English, each with their own address, Message-ID, subject and text; follow-ups
in the same thread, copies sent twice, angry or urgent mail, a few legal notices,
and automatic mail (out-of-office, bounces, newsletters). Seeded: the same seed
gives the same bytes. Each message carries a label (its kind, whether mailflow
should acknowledge it or escalate it), so a run can check what the daemon did.

    .venv/bin/python bench/mailgen.py --count 50000 --size 10240 --out /tmp/mail
    (a Maildir: new/0000001.mailgen …, with labels.jsonl beside cur/ new/ tmp/)
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import json
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

# its sibling modules, also when imported by path (tests) or run as a script
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import mailrobots
from mailmime import HTML_FROM, Draft, Padding, Text, address, attachment, fill, header, pdf
from mailpeople import AGENTS, EN, FR, Person, message_id, person
from mailtext import (
    AGENT,
    CONTEXT,
    MAILBOXES,
    REPLY_PREFIXES,
    TOPICS,
    ZONES,
    Facts,
    attribution,
    customer_text,
    deck,
    facts,
    followup_text,
    invoice_lines,
    signoff,
)

KINDS = ("new", "followup", "copy", "urgent", "legal", "auto-reply", "bounce", "newsletter")
#: the default mix: new questions, follow-ups, copies, urgent words, legal notices
#: (escalated to the lawyer), automatic mail (never acknowledged)
SHARES = {"new": 0.69, "followup": 0.12, "copy": 0.05, "urgent": 0.05, "legal": 0.01,
          "auto-reply": 0.03, "bounce": 0.03, "newsletter": 0.02}
ACKED = frozenset({"new", "urgent", "legal"})  # a new case from a customer
WINDOW = 2000  # a copy repeats one of the last WINDOW messages (about a day and a half)
START = datetime(2026, 3, 2, 8, 30, tzinfo=ZoneInfo("Europe/Paris"))


@dataclass(frozen=True)
class Label:
    """What a message is, and what mailflow should do with it."""

    index: int
    kind: str
    ack: bool  # mailflow should acknowledge it (a new case from a customer)
    escalation: bool  # escalate.yaml's legal-notice rule should forward it to the lawyer
    mail_from: str  # the envelope; "" for a bounce's null sender
    rcpt_to: str
    message_id: str
    subject: str
    language: str
    size: int
    eight_bit: bool = False  # a text/plain part in 8bit: BODY=8BITMIME
    parent: int | None = None  # follow-up: the message it answers; copy: the one it repeats
    file: str = ""  # its file name, once written to a folder


@dataclass(frozen=True)
class Mail:
    label: Label
    data: bytes  # CRLF line ends, as on the wire (not dot-stuffed)


@dataclass(frozen=True)
class Thread:
    """What a follow-up needs of an earlier customer message."""

    index: int
    who: Facts
    person: Person
    topic: str
    mailbox: str
    subject: str  # the thread's first subject, without reply prefixes
    message_id: str
    references: tuple[str, ...]
    lead: tuple[str, ...]
    date: datetime


def shares_from(values: Mapping[str, float] | None) -> dict[str, float]:
    """The mix, normalised to 1: SHARES overridden by ``values``."""
    merged = {**SHARES, **(values or {})}
    unknown = set(merged) - set(KINDS)
    if unknown or any(v < 0 for v in merged.values()) or not sum(merged.values()):
        raise ValueError(f"shares: kinds are {', '.join(KINDS)}, each >= 0, not all 0")
    total = sum(merged.values())
    return {kind: merged.get(kind, 0.0) / total for kind in KINDS}


class Generator:
    """Seeded: the same arguments give the same messages, in the same order.

    ``gap``: a follow-up or a copy refers to a message at least this many places
    earlier, so that (sent in order by a few dozen sessions) its parent is through
    the daemon first; bench/load.py also waits for the parent's reply to be sure.
    Only the last WINDOW messages are kept (for copies): ``stream`` a big folder."""

    def __init__(self, seed: int = 1, size: int = 10240,
                 shares: Mapping[str, float] | None = None, gap: int = 50,
                 start: datetime = START) -> None:
        self.rng = random.Random(seed)
        self.size, self.gap, self.clock = size, gap, start
        self.shares = shares_from(shares)
        self.count = 0
        self.recent: dict[int, Mail] = {}  # the last WINDOW messages, what copies repeat
        self.threads: list[Thread] = []
        self.thread_at: list[int] = []  # the threads' indices, for bisect
        self.taken: set[str] = set()  # addresses, Message-IDs, subjects: each once
        self.owed: Counter[str] = Counter()  # follow-ups and copies put off by ``gap``

    def generate(self, count: int) -> list[Mail]:
        return list(self.stream(count))

    def stream(self, count: int) -> Iterator[Mail]:
        for _ in range(count):
            yield self.next()

    def next(self) -> Mail:
        rng, index = self.rng, self.count
        self.clock += timedelta(seconds=rng.randint(5, 120))
        kind = rng.choices(KINDS, weights=[self.shares[k] for k in KINDS])[0]
        ready = bisect.bisect_right(self.thread_at, index - self.gap)
        oldest = bisect.bisect_left(self.thread_at, index - WINDOW) if kind == "copy" else 0
        if kind in ("followup", "copy") and oldest >= ready:
            self.owed[kind] += 1  # nothing old enough to answer or to send again yet:
            kind = "new"  # a new message now, and this kind in place of a later new one
        elif kind == "new" and ready and +self.owed:
            kind = min(+self.owed)
            self.owed[kind] -= 1
            oldest = bisect.bisect_left(self.thread_at, index - WINDOW) if kind == "copy" else 0
        parent = (self.threads[rng.randrange(oldest, ready)] if kind in ("followup", "copy")
                  else None)
        if kind == "copy" and parent is not None:
            first = self.recent[parent.index]
            mail = Mail(dataclasses.replace(first.label, index=index, kind="copy", ack=False,
                                            escalation=False, parent=parent.index), first.data)
        else:
            draft = (self.followup(index, parent) if parent is not None
                     else mailrobots.build(self, kind) if kind in mailrobots.KINDS
                     else self.customer(index, kind))
            data = fill(draft, self.size, self.boundary())
            mail = Mail(Label(index, kind, kind in ACKED, kind == "legal", draft.mail_from,
                              draft.rcpt_to, draft.message_id, draft.subject, draft.language,
                              len(data), b"Content-Transfer-Encoding: 8bit" in data,
                              parent.index if parent is not None else None), data)
        self.count += 1
        self.recent[index] = mail
        self.recent.pop(index - WINDOW, None)
        return mail

    # -- who writes, and the headers every client writes ----------------------------

    def unique(self, *candidates: str, more: Callable[[int], str] | None = None) -> str:
        """The first candidate not taken yet; then ``more(2)``, ``more(3)``… (by default
        the last candidate numbered)."""
        numbered = more or (lambda number: f"{candidates[-1]} ({number})")
        found = next((c for c in candidates if c not in self.taken), None)
        number = 2
        while found is None:
            found = numbered(number) if numbered(number) not in self.taken else None
            number += 1
        self.taken.add(found)
        return found

    def person(self, language: str) -> Person:
        return person(self.rng, language, self.unique)

    def message_id(self, domain: str) -> str:
        return message_id(self.rng, domain, self.unique)

    def boundary(self) -> str:
        return f"----=_Part_{self.rng.randint(10**5, 10**6)}_{self.rng.getrandbits(40):x}"

    def head(self, sender: str, author: str, rcpt: str, subject: str, message_id: str,
             language: str, extra: Sequence[str] = ()) -> list[str]:
        """The headers as the company's MX relays them: its Received line on top."""
        rng = self.rng
        date = format_datetime(self.clock.astimezone(ZONES[language]))
        domain = sender.rpartition("@")[2]
        host = domain if domain.startswith(("smtp", "em.")) else f"smtp.{domain}"
        received = (f"Received: from {host} ({host} "
                    f"[{rng.choice(['192.0.2', '198.51.100', '203.0.113'])}."
                    f"{rng.randint(1, 254)}])\r\n\tby mx1.example.com (Postfix) with ESMTPS id "
                    f"4{rng.getrandbits(40):X}\r\n\tfor <{rcpt}>; {date}")
        agent = rng.choice(AGENTS)
        return [received, f"From: {author}", f"To: {rcpt}", header("Subject", subject),
                f"Date: {date}", f"Message-ID: {message_id}", *extra,
                *([f"User-Agent: {agent}"] if agent else [])]

    # -- customers ------------------------------------------------------------------

    def customer(self, index: int, kind: str) -> Draft:
        rng = self.rng
        language = FR if kind == "legal" or rng.random() < 0.75 else EN
        person = self.person(language)
        topics = ["delivery", "damaged", "invoice"] if kind == "legal" else list(TOPICS)
        topic = rng.choice(topics)
        mailbox = MAILBOXES[topic][language == EN]
        who = facts(rng, language, person.name, person.company)
        subject, lead = customer_text(rng, who, topic, kind)
        subject = self.unique(subject, f"{subject} - {who.slots['order']}",
                              f"{subject} ({person.name})")
        message_id = self.message_id(person.domain)
        self.remember(Thread(index, who, person, topic, mailbox, subject, message_id, (),
                             tuple(lead), self.clock))
        return self.letter(person, who, mailbox, subject, message_id, lead, [])

    def followup(self, index: int, parent: Thread) -> Draft:
        """The same customer again, in the thread: ``Re:``, In-Reply-To, References, and
        the earlier message quoted below."""
        rng, who, person = self.rng, parent.who, parent.person
        subject = self.unique(*(p.format(s=parent.subject)
                                for p in REPLY_PREFIXES[who.language]))
        message_id = self.message_id(person.domain)
        references = (*parent.references, parent.message_id)[-8:]
        lead = followup_text(rng, who, parent.topic)
        self.remember(dataclasses.replace(parent, index=index, message_id=message_id,
                                          references=references, lead=tuple(lead),
                                          date=self.clock))
        quoted = [attribution(who.language, parent.date, f"{person.name} <{person.address}>")]
        refs = "\r\n ".join(references)
        return self.letter(person, who, parent.mailbox, subject, message_id, lead, quoted,
                           [f"In-Reply-To: {parent.message_id}", f"References: {refs}"],
                           parent.lead)

    def remember(self, thread: Thread) -> None:
        self.threads.append(thread)
        self.thread_at.append(thread.index)

    def letter(self, person: Person, who: Facts, mailbox: str, subject: str,
               message_id: str, lead: Sequence[str], quote_head: Sequence[str],
               extra: Sequence[str] = (), quote: Sequence[str] = ()) -> Draft:
        """A customer's message: ``lead``, the sign-off, then ``quote`` (with the line
        ``quote_head`` above it) and what ``story`` adds to reach the size."""
        rng = self.rng
        html = rng.random() < 0.3 and self.size >= HTML_FROM
        text = Text("quoted-printable" if html or rng.random() < 0.6 else "8bit", html)
        text.add(text.lead, *lead)
        text.add(text.tail, *signoff(rng, who, person.phone))
        text.add(text.after, *quote_head)
        text.add(text.after, *quote, quoted=True)
        head = self.head(person.address, address(person.name, person.address), mailbox,
                         subject, message_id, who.language, extra)
        draft = Draft(head, text, self.story(who, mailbox), person.address, mailbox,
                      message_id, subject, who.language)
        kind = rng.choice(("invoice", "statement"))
        draft.attach = lambda raw: attachment(
            f"{kind}-{who.slots['invoice']}.pdf", "application/pdf",
            pdf(f"{who.slots['invoice']} - {who.name}", invoice_lines(rng, who), raw))
        return draft

    def story(self, who: Facts, mailbox: str) -> Padding:
        """More of what a customer writes (their story, then the earlier exchange with
        the service quoted below the signature, going back in time): what pads a
        message to its size."""
        rng = self.rng
        mine, theirs = deck(rng, who, CONTEXT), deck(rng, who, AGENT)
        for _ in range(rng.randint(1, 4)):
            yield "pad", " ".join(next(mine) for _ in range(rng.randint(1, 3))), False
        service = f"{'Service client' if who.language == FR else 'Customer Service'} <{mailbox}>"
        when = self.clock
        while True:
            when -= timedelta(days=rng.randint(1, 6), minutes=rng.randint(0, 600))
            yield "after", attribution(who.language, when, service), False
            for _ in range(rng.randint(1, 3)):
                yield "after", next(theirs), True
            when -= timedelta(hours=rng.randint(2, 30))
            yield "after", attribution(who.language, when, who.name), False
            for _ in range(rng.randint(1, 3)):
                yield "after", next(mine), True


def write(mails: Iterable[Mail], folder: Path, maildir: bool = True) -> list[Label]:
    """The messages as files (a Maildir's ``new/``, LF line ends as Maildir wants, or
    ``NNNNNNN.eml`` in ``folder``) with ``labels.jsonl`` beside them, in order; their
    labels, with their file names."""
    target = folder / "new" if maildir else folder
    for sub in (("cur", "new", "tmp") if maildir else ()):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with (folder / "labels.jsonl").open("w", encoding="utf-8") as labels:
        for mail in mails:
            name = f"{mail.label.index + 1:07d}." + ("mailgen" if maildir else "eml")
            (target / name).write_bytes(mail.data.replace(b"\r\n", b"\n"))
            label = dataclasses.replace(mail.label, file=str(target.relative_to(folder) / name))
            labels.write(json.dumps(dataclasses.asdict(label), ensure_ascii=False) + "\n")
            written.append(label)
    return written


def read(folder: Path) -> list[Mail]:
    """What ``write`` wrote, in order, with CRLF line ends again."""
    mails = []
    for line in (folder / "labels.jsonl").read_text(encoding="utf-8").splitlines():
        label = Label(**json.loads(line))
        data = (folder / label.file).read_bytes().replace(b"\r\n", b"\n")
        mails.append(Mail(label, data.replace(b"\n", b"\r\n")))
    return mails


def summary(labels: Sequence[Label]) -> str:
    kinds = Counter(label.kind for label in labels)
    sizes = sorted(label.size for label in labels)
    return (f"{len(labels)} messages: " + ", ".join(f"{kinds[k]} {k}" for k in KINDS)
            + f"; acknowledgements expected {sum(label.ack for label in labels)}, escalations"
            f" {sum(label.escalation for label in labels)}; size median"
            f" {sizes[len(sizes) // 2]} bytes" if labels else "no messages")


def share(value: str) -> tuple[str, float]:
    kind, _, fraction = value.partition("=")
    if kind not in KINDS:
        raise argparse.ArgumentTypeError(f"{kind}: one of {', '.join(KINDS)}")
    return kind, float(fraction)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=10240, help="target bytes a message")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--share", type=share, action="append", default=[],
                        help=f"KIND=FRACTION, repeatable (defaults: {SHARES})")
    parser.add_argument("--gap", type=int, default=50, help="follow-ups and copies refer to "
                        "a message at least this many places earlier")
    parser.add_argument("--out", type=Path, required=True, help="folder to write")
    parser.add_argument("--eml", action="store_true", help="NNNNNNN.eml files, not a Maildir")
    args = parser.parse_args(argv)
    generator = Generator(args.seed, args.size, dict(args.share), args.gap)
    labels = write(generator.stream(args.count), args.out, maildir=not args.eml)
    print(f"{args.out}: {summary(labels)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
