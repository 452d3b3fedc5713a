"""../shared/realmail and ../shared/realmail2 through the real daemon with the shipped
rules: 615 and 372 real messages from other projects' public test fixtures, each sent to
``sav@example.com`` (one daemon per folder).

Every message is relayed with its original bytes after our headers (bare CR or LF made
CRLF, forged ``X-Mailflow-*`` removed), nothing crashes, and for the labelled ones
(``index.json``): no acknowledgement for ``auto`` (bounces, out-of-office replies,
lists, robots), one for ``human`` unless it is a copy or a follow-up of an earlier one
(named below, with the reason the daemon gave). The suite prints, per folder: automatic
acknowledged, people missed, and the sign that decided for each automatic message.

The envelope, so that the per-address limits and the resend window do not decide: the
file's ``mail_from`` where the peer's test gives one, else its From address; a sender
shared by several files made distinct per file by a numbered subdomain (the local part
kept: robot local parts stay robot local parts); a sender of our own domain moved to a
subdomain of it; the global acks-per-minute breaker raised for the run.
One file of realmail2 has an encoded word for its From's local part
(``=?UTF-16?B?//492Enc?=``); sent as the envelope sender, its acknowledgement goes to the
decoded address: the run matches acks by the decoded form too.

Collected only where ../shared/realmail exists (see tests/conftest.py); realmail2 where
it exists too.
"""

from __future__ import annotations

import collections
import contextlib
import email
import email.header
import email.utils
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_corpora import CLEAR_REPLY, crlf, relayed_copy, stuff

from conftest import REALMAIL, SHARED, Daemon, Sink, full_chain_rules, is_ack, parse_email, report
from mailflow.automatic import SHIPPED
from mailflow.message import Envelope, parse_message
from mailflow.wire import normalize_newlines, strip_internal_headers
from rawsmtp import RawClient

pytestmark = pytest.mark.slow  # starts the daemon: `pytest -m 'not slow'` leaves it out

#: the folders and how many messages each holds
CORPORA = {"realmail": 615, "realmail2": 372}
#: people who get no acknowledgement, and why that is right: each answers an earlier
#: message of the folder (its In-Reply-To), so it joins that message's case; file: (the
#: reason the daemon logs, the earlier file it answers). realmail2's two other people
#: once not acknowledged (mu's "multimime" and "signed") kept a ``Return-Path: <>`` from
#: a hop before: alone, that no longer makes a message automatic.
FOLLOW_UPS = {"realmail2": {
    # RFC 2822's A.2 example: Mary's reply to John, then John's reply to Mary
    "imap_tools__tests-messages-rfc2822-example06.eml": (
        "follow-up on an existing case", "imap_tools__tests-messages-rfc2822-example01.eml"),
    "imap_tools__tests-messages-rfc2822-example07.eml": (
        "follow-up on an existing case", "imap_tools__tests-messages-rfc2822-example06.eml"),
    # notmuch's thread test: Daniel's answer to Alice's "child message"
    "notmuch__test-corpora-threading-ghost-root-grand-child2": (
        "follow-up on an existing case", "notmuch__test-corpora-threading-ghost-root-child"),
}}

CRLF = b"\r\n"
LOCAL_DOMAINS = ("example.com",)
NO_DOMAIN = "realmail.test"  # for a From with a local part only (`MAILER-DAEMON`)
_ACK_ID = re.compile(rb"^Message-ID: <ack\.", re.M | re.I)
_DOT_ATOM = re.compile(r"[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*")


@dataclass
class Entry:
    file: str
    expect: str | None
    sender: str
    same_as: str | None
    code: int = 0
    reply: bytes = b""
    relayed: bool = False
    acks: list[bytes] = field(default_factory=list)  # as the next hop got them
    automatic: str | None = None  # the daemon's verdict, "sign: why"
    suppressed: str | None = None  # why no acknowledgement, as the daemon logged it


def _from_address(raw: bytes) -> str:
    """The From address as the file has it (UTF-8 headers of RFC 6532 kept)."""
    head = raw.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    parsed = email.message_from_string(head.decode("utf-8", "replace") + "\n\n")
    return email.utils.parseaddr(str(parsed.get("From", "")))[1]


def envelopes(index: list[dict[str, Any]], folder: Path = REALMAIL) -> list[Entry]:
    """One distinct envelope sender per file, as the module docstring says."""
    chosen = []
    for item in index:
        given = item.get("mail_from")
        sender = given if given is not None else _from_address(
            (folder / item["file"]).read_bytes())
        if sender and "@" not in sender:
            sender = f"{sender}@{NO_DOMAIN}"
        sender = sender.rstrip(".")  # `someone@yahoo.com.`: a From, not a mailbox
        local, at, domain = sender.rpartition("@")
        # a From's `power quadrant system@…` is quoted to be a mailbox
        if at and not _DOT_ATOM.fullmatch(local) and not local.startswith('"'):
            sender = f'"{local}"@{domain}'
        chosen.append(sender)
    shared = collections.Counter(s.lower() for s in chosen if s)
    entries = []
    for n, (item, sender) in enumerate(zip(index, chosen, strict=True)):
        local, _, domain = sender.rpartition("@")
        if sender and (shared[sender.lower()] > 1 or domain.lower() in LOCAL_DOMAINS):
            sender = f"{local}@f{n}.{domain}"
        entries.append(Entry(item["file"], item.get("expect"), sender,
                             item.get("same_message_id_as")))
    return entries


def _key(address: str) -> str:
    """An address to match an ack's recipient by, quoting aside, and an encoded word in
    the local part decoded (realmail2's ``=?UTF-16?B?//492Enc?=`` From, sent as the
    envelope, gets its ack at the decoded address: see the module docstring)."""
    local, _, domain = address.rpartition("@")
    local = local.strip('"')
    if local.startswith("=?"):
        with contextlib.suppress(Exception):
            local = str(email.header.make_header(email.header.decode_header(local)))
    return (local + "@" + domain).lower()


def send_one(client: RawClient, entry: Entry, raw: bytes, sink: Sink) -> None:
    before = len(sink.messages)
    options = b" SMTPUTF8" if not entry.sender.isascii() else b""
    # a file kept with Unix line ends is sent as an MTA sends it (CRLF); one written with
    # CRLF goes as it is, its stray bare CR or LF left for mailflow to normalise
    data = raw if CRLF in raw else crlf(raw)
    data = data if data.endswith((b"\n", b"\r")) else data + CRLF
    code, text = client.cmd(b"MAIL FROM:<" + entry.sender.encode() + b">" + options)
    assert code == 250, (entry.file, entry.sender, code, text)
    code, text = client.cmd(b"RCPT TO:<sav@example.com>")
    assert code == 250, (entry.file, code, text)
    code, text = client.cmd(b"DATA")
    assert code == 354, (entry.file, code, text)
    client.send(stuff(data))
    code, text = client.reply()
    assert CLEAR_REPLY.match(b"%d %s" % (code, text)), (entry.file, code, text)
    entry.code, entry.reply = code, text
    if code == 250:
        expected, _ = strip_internal_headers(normalize_newlines(
            data if data.endswith(CRLF) else data + CRLF))
        entry.relayed = relayed_copy(sink, before, expected) is not None


@dataclass
class Run:
    name: str
    folder: Path
    entries: list[Entry]
    seconds: float
    log: str


def _verdicts(entries: list[Entry], log: str) -> None:
    """Each entry's automatic verdict and suppression reason, from the daemon's log: one
    ``message`` line per accepted message, in the order they were sent (one at a time),
    and its ``ack_suppressed`` line by the same queue id."""
    events = [json.loads(line) for line in log.splitlines()
              if line.startswith("{") and ('"message"' in line or '"ack_suppressed"' in line)]
    lines = [e for e in events if e.get("event") == "message"]
    accepted = [e for e in entries if e.code == 250]
    assert len(lines) == len(accepted), (len(lines), len(accepted))
    reasons = {e.get("queue_id"): e.get("reason") for e in events
               if e.get("event") == "ack_suppressed"}
    for entry, line in zip(accepted, lines, strict=True):
        assert line.get("mail_from") == entry.sender, (entry.file, line.get("mail_from"))
        entry.automatic = line.get("automatic")
        entry.suppressed = reasons.get(line.get("queue_id"))


@pytest.fixture(scope="module", params=[name for name in CORPORA if (SHARED / name).is_dir()])
def realmail_run(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    name: str = request.param
    folder = SHARED / name
    tmp = tmp_path_factory.mktemp(name)
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))["messages"]
    entries = envelopes(index, folder)
    sink = Sink(long_lines=True)  # real mail has lines over 1,000 octets
    sink.start()
    rules = full_chain_rules(tmp / "rules",
                             acknowledge={"limits": {"global_per_minute": 100000,
                                                        "global_per_hour": 100000}})
    # one file has a 160 KB run of bare-LF lines: sent as it is, one SMTP line longer
    # than the default limit (64 KiB, which gets a clear 500): raised, so that mailflow's
    # own normalising of bare line ends is what the run proves
    daemon = Daemon(tmp / "d", f"smtp://127.0.0.1:{sink.port}",
                    {"smtp": {"max_line_length": 1 << 20}}, rules=rules)
    started = time.monotonic()
    try:
        daemon.start()
        client = RawClient(daemon.port, timeout=60)
        client.greet()
        for entry in entries:
            send_one(client, entry, (folder / entry.file).read_bytes(), sink)
            if entry.code != 250:  # a refused transaction: start clean
                client.cmd(b"RSET")
        client.cmd(b"QUIT")
        daemon.settle(timeout=60)
        by_sender = {_key(e.sender): e for e in entries if e.sender}
        for received in sink.messages:
            # relayed real mail may not parse with the strict policy: acks only
            if not _ACK_ID.search(received.data.split(b"\r\n\r\n", 1)[0]):
                continue
            msg = parse_email(received.data)
            if is_ack(received, msg):
                for rcpt in received.rcpt_tos:
                    target = by_sender.get(_key(rcpt))
                    assert target is not None, f"an ack to a stranger: {rcpt}"
                    target.acks.append(received.data)
        seconds = time.monotonic() - started
    finally:
        daemon.stop()
        sink.stop()
    _verdicts(entries, daemon.log)
    yield Run(name, folder, entries, seconds, daemon.log)


def _reasons(log: str) -> collections.Counter[str]:
    found = re.findall(r'"event": "ack_suppressed"[^\n]*?"reason": "([^"]*)"', log)
    found += re.findall(r'"reason": "([^"]*)"[^\n]*?"event": "ack_suppressed"', log)
    return collections.Counter(r.split(" (")[0].split(":")[0] for r in found)


def _missed(run: Run) -> list[Entry]:
    """People's messages that got no acknowledgement (realmail's copies of another file,
    by the peer's reused Message-ID, aside)."""
    return [e for e in run.entries if e.expect == "human" and not e.acks and not e.same_as]


def test_realmail_figures(realmail_run: Run) -> None:
    """Every message relayed as received, no traceback; the figures printed: automatic
    acknowledged, people missed, and the sign that decided for each automatic message."""
    entries, tag = realmail_run.entries, f"[{realmail_run.name}]"
    assert len(entries) == CORPORA[realmail_run.name]
    refused = [(e.file, e.code, e.reply) for e in entries if e.code != 250]
    not_relayed = [e.file for e in entries if e.code == 250 and not e.relayed]
    auto = [e for e in entries if e.expect == "auto"]
    human = [e for e in entries if e.expect == "human"]
    acked_auto = [e.file for e in auto if e.acks]
    missed = _missed(realmail_run)
    report(f"{tag} {len(entries)} messages in {realmail_run.seconds:.1f} s: "
           f"{sum(e.code == 250 for e in entries)} accepted, "
           f"{sum(e.relayed for e in entries)} relayed as received; "
           f"automatic acknowledged: {len(acked_auto)} of {len(auto)}; "
           f"people missed: {len(missed) - len(FOLLOW_UPS.get(realmail_run.name, {}))} of "
           f"{len(human)} (and {len(FOLLOW_UPS.get(realmail_run.name, {}))} follow-ups or "
           f"copies, rightly not acknowledged); unlabelled acknowledged: "
           f"{sum(bool(e.acks) for e in entries if e.expect is None)} of "
           f"{sum(e.expect is None for e in entries)}")
    report(f"{tag} suppressions by reason: " + ", ".join(
        f"{reason}: {n}" for reason, n in _reasons(realmail_run.log).most_common()))
    signs = collections.Counter((e.automatic or "none").split(":")[0] for e in auto)
    report(f"{tag} automatic messages by the sign that decided: " + ", ".join(
        f"{sign} {n}" for sign, n in signs.most_common()))
    for entry in auto:
        report(f"{tag}   {entry.file[:60]:60}  {(entry.automatic or 'NOT AUTOMATIC')[:110]}")
    for name in acked_auto:
        report(f"{tag} automatic, acknowledged: {name}")
    for entry in missed:
        report(f"{tag} a person's, not acknowledged: {entry.file} ({entry.suppressed})")
    assert not refused, refused
    assert not not_relayed, not_relayed
    for bad in ("Traceback", "message_failed", "smtp_session_error", "outbox_error"):
        assert bad not in realmail_run.log, bad


def test_no_automatic_message_acknowledged(realmail_run: Run) -> None:
    acked = [e.file for e in realmail_run.entries if e.expect == "auto" and e.acks]
    assert acked == []
    unseen = [e.file for e in realmail_run.entries if e.expect == "auto" and not e.automatic]
    assert unseen == []  # each known as automatic, by a sign that the log names


def test_every_persons_message_acknowledged(realmail_run: Run) -> None:
    """A person's message gets its one acknowledgement, unless it is a copy of another
    file (realmail's fixtures reuse the Message-ID: mailflow treats it as a copy) or a
    follow-up of an earlier message of the folder (FOLLOW_UPS: it joins that case)."""
    wrong = [e.file for e in realmail_run.entries
             if e.expect == "human" and not e.same_as and e.acks and len(e.acks) != 1]
    assert wrong == []
    missed = {e.file: e.suppressed for e in _missed(realmail_run)}
    assert missed == {file: reason for file, (reason, _) in
                      FOLLOW_UPS.get(realmail_run.name, {}).items()}


def test_follow_ups_answer_an_earlier_message(realmail_run: Run) -> None:
    """Each of FOLLOW_UPS names the earlier file it answers, and does: its In-Reply-To
    is that file's Message-ID, and that file was sent before it."""
    for file, (_, earlier) in FOLLOW_UPS.get(realmail_run.name, {}).items():
        neutral = Envelope(mail_from="someone@client.test", rcpt_to=("sav@example.com",))
        this = parse_message((realmail_run.folder / file).read_bytes(), neutral)
        that = parse_message((realmail_run.folder / earlier).read_bytes(), neutral)
        assert that.message_id in this.message_ids("In-Reply-To"), (file, earlier)
        assert [e.file for e in realmail_run.entries].index(earlier) < [
            e.file for e in realmail_run.entries].index(file)


def test_acks_thread_raw(realmail_run: Run) -> None:
    """Every ack's In-Reply-To is the customer's Message-ID as written, on one line,
    never an encoded word: Outlook's and Exchange's 100-character ids included."""
    threaded = 0
    for entry in realmail_run.entries:
        if not entry.acks:
            continue
        original = parse_message((realmail_run.folder / entry.file).read_bytes(),
                                 Envelope(mail_from=entry.sender, rcpt_to=("sav@example.com",)))
        for data in entry.acks:
            head = data.split(CRLF + CRLF, 1)[0]
            found = re.search(rb"^In-Reply-To:(.*(?:\r\n[ \t].*)*)", head, re.M | re.I)
            if not original.message_id:
                assert found is None, entry.file
                continue
            assert found is not None, entry.file
            written = found.group(1)
            assert b"=?" not in written and CRLF not in written, (entry.file, written)
            assert written.strip() == b"<" + original.message_id.encode() + b">", (
                entry.file, written)
            threaded += 1
    report(f"[{realmail_run.name}] {threaded} acknowledgements, each In-Reply-To the "
           "customer's Message-ID written raw")
    assert threaded > (200 if realmail_run.name == "realmail" else 40)


@pytest.mark.parametrize("name", [name for name in CORPORA if (SHARED / name).is_dir()])
def test_robots_known_by_the_message_itself(name: str) -> None:
    """Whatever envelope a robot's message arrives with, its headers, content, From,
    Subject or wording give it away (the one exception is a Sieve test whose only sign
    is its envelope sender); no person's message is taken for a robot's."""
    folder = SHARED / name
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))["messages"]
    neutral = Envelope(mail_from="someone@client.test", rcpt_to=("sav@example.com",))
    unknown, mistaken = [], []
    for item in index:
        if item.get("expect") is None:
            continue
        found = SHIPPED.by_content(parse_message((folder / item["file"]).read_bytes(), neutral))
        if item["expect"] == "auto" and not found:
            unknown.append(item["file"])
        if item["expect"] == "human" and found:
            mistaken.append((item["file"], found))
    autos = sum(item.get("expect") == "auto" for item in index)
    people = sum(item.get("expect") == "human" for item in index)
    report(f"[{name}] automatic messages known by the message alone: "
           f"{autos - len(unknown)} of {autos}; people taken for robots: "
           f"{len(mistaken)} of {people}")
    assert unknown == (["pigeonhole__vacation-No-reply-to-system-address.eml"]
                       if name == "realmail" else [])
    assert mistaken == []
