"""Case lifecycle end to end: the real daemon over SMTP, a real next hop.

Chain ``number, deduplicate, acknowledge`` with the shipped rules. The sink
(the next hop) receives the relayed customer messages and, through the
outbox, the acknowledgements (null envelope sender, addressed to the customer).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import sqlite3
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from clirunner import CliResult, run_cli
from conftest import (
    NULL_SENDERS,
    RULES,
    Daemon,
    Received,
    Sink,
    ack_case,
    parse_email,
    rules_with_chain,
)
from mailflow import cases
from mailflow.business_hours import BusinessCalendar, CalendarOptions, PromiseOptions

pytestmark = pytest.mark.slow  # starts the daemon: `pytest -m 'not slow'` leaves it out

CHAIN = "chain: [number, deduplicate, acknowledge]\n"
CUSTOMER = "claire.martin@client.test"
FORMAT = cases.NumberFormat(prefixes=("CASE", "SAV", "CTC", "DEV", "SUP"))
# French writes day and month names in lower case; an English customer is told the zone
FR_DATE = re.compile(r"(?:lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche) \d{1,2} "
                     r"[a-zéû]+ \d{4} à \d\d:\d\d")
EN_DATE = re.compile(r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
                     r"[A-Z][a-z]+ \d{1,2}, \d{4} at \d{1,2}:\d\d\u202f[AP]M "
                     r"\(Central European (?:Standard|Summer) Time, GMT\+0[12]:00\)")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def chain_rules(tmp_path: Path, edits: dict[tuple[str, str], dict[str, Any]] | None = None
                ) -> Path:
    """The shipped rules with the case chain; ``edits[(file, section)]`` merged in."""
    rules = tmp_path / "rules-src"
    shutil.copytree(RULES, rules)
    (rules / "chain.yaml").write_text(CHAIN, encoding="utf-8")
    yaml = YAML()
    for (name, section), changes in (edits or {}).items():
        path = rules / name
        data = yaml.load(path.read_text(encoding="utf-8"))
        data[section].update(changes)
        with open(path, "w", encoding="utf-8") as fh:
            yaml.dump(data, fh)
    return rules


def mail(subject: str = "Question sur ma commande", body: str = "Bonjour, ma commande 4821 "
         "n'est pas arrivée. Merci.", *, message_id: str, sender: str = CUSTOMER,
         to: str = "sav@example.com", headers: str = "",
         content_type: str = "text/plain; charset=utf-8") -> bytes:
    return (f"From: Claire Martin <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: Mon, 23 Nov 2026 09:30:00 +0100\r\nMessage-ID: <{message_id}>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n{headers}\r\n{body}\r\n").encode()



class Flow:
    """One daemon, its sink, and what arrived there."""

    def __init__(self, daemon: Daemon, sink: Sink) -> None:
        self.daemon = daemon
        self.sink = sink
        self.db_path = daemon.tmp / "state" / "mailflow.sqlite3"

    def send(self, data: bytes, mail_from: str = CUSTOMER,
             rcpt_to: list[str] | None = None) -> None:
        code, text = self.daemon.send(data, mail_from, rcpt_to)
        assert code == 250, text

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until the outbox has nothing left to send (so the sink has every ack)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.query("SELECT 1 FROM outbox WHERE state = 'ready' LIMIT 1"):
                return
            time.sleep(0.05)
        raise AssertionError(f"outbox not drained: {self.query('SELECT * FROM outbox')}")

    def acks(self) -> list[tuple[Received, EmailMessage]]:
        self.drain()
        return [(m, parse_email(m.data)) for m in self.sink.messages if m.mail_from in NULL_SENDERS
                and parse_email(m.data)["Auto-Submitted"] == "auto-replied"]

    def acks_for(self, message_id: str) -> list[tuple[Received, EmailMessage]]:
        return [(r, a) for r, a in self.acks() if a["In-Reply-To"] == f"<{message_id}>"]

    def the_ack(self, message_id: str) -> tuple[Received, EmailMessage]:
        found = self.acks_for(message_id)
        assert len(found) == 1, f"{len(found)} acks for <{message_id}>"
        return found[0]

    def relayed(self, message_id: str) -> list[tuple[Received, EmailMessage]]:
        out = []
        for m in self.sink.messages:
            msg = parse_email(m.data)
            if msg["Message-ID"] == f"<{message_id}>" and m.mail_from not in NULL_SENDERS:
                out.append((m, msg))
        return out

    def case_of(self, message_id: str) -> str:
        found = self.relayed(message_id)
        assert found, f"<{message_id}> not relayed"
        values = found[-1][1].get_all("X-Mailflow-Case")
        assert values is not None and len(values) == 1, values
        return str(values[0])

    def events(self, event: str, **match: object) -> list[dict[str, Any]]:
        found = []
        for line in self.daemon.log.splitlines():
            if not line.startswith("{"):
                continue
            entry = json.loads(line)
            if entry.get("event") == event and all(entry.get(k) == v for k, v in match.items()):
                found.append(entry)
        return found

    def queue_id(self, message_id: str) -> str:
        (entry,) = [e for e in self.events("message") if e.get("message_id") == message_id][-1:]
        return str(entry["queue_id"])

    def suppressed(self, message_id: str) -> str:
        """Why no ack was sent for the latest transaction of ``message_id``."""
        queue_id = self.queue_id(message_id)
        (entry,) = self.events("ack_suppressed", queue_id=queue_id)
        return str(entry["reason"])


@pytest.fixture
def flow(daemon_factory: Any, sink: Sink, tmp_path: Path) -> Flow:
    return Flow(daemon_factory(rules=chain_rules(tmp_path)), sink)


def calendar() -> BusinessCalendar:
    data = YAML(typ="safe").load((RULES / "calendars.yaml").read_text(encoding="utf-8"))
    return BusinessCalendar(CalendarOptions.model_validate(data["calendars"]["default"]))


def promised_texts(before: float, after: float, language: str) -> set[str]:
    cal = calendar()
    noon = PromiseOptions(next_business_day_at="12:00")
    return {cal.format(cal.promise(dt.datetime.fromtimestamp(t, cal.zone), noon), language)
            for t in (before, after)}


def body_of(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


# ---------------------------------------------------------------------------
# new cases and their acknowledgement
# ---------------------------------------------------------------------------


def test_new_case_is_numbered_and_acknowledged_in_french(flow: Flow) -> None:
    before = time.time()
    flow.send(mail(message_id="new-1@client.test"))
    after = time.time()
    case = flow.case_of("new-1@client.test")
    today = dt.datetime.fromtimestamp(before, calendar().zone).strftime("%Y%m%d")
    assert re.fullmatch(rf"SAV-{today}-\d{{5}}-\d", case), case
    assert FORMAT.valid(case)
    (relayed, _), = flow.relayed("new-1@client.test")
    assert relayed.rcpt_tos == ["sav@example.com"]
    assert relayed.data.endswith(mail(message_id="new-1@client.test"))  # only headers added

    received, ack = flow.the_ack("new-1@client.test")
    assert received.mail_from in NULL_SENDERS
    assert received.rcpt_tos == [CUSTOMER]
    assert ack["To"].addresses[0].addr_spec == CUSTOMER
    assert ack["From"].addresses[0].addr_spec == "sav@example.com"
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["X-Auto-Response-Suppress"] == "All"
    assert ack["Precedence"] == "bulk"
    assert ack["X-Mailflow-Loop"]
    assert ack_case(ack) == case
    assert ack["In-Reply-To"] == "<new-1@client.test>"
    assert "<new-1@client.test>" in ack["References"]
    own_id = ack["Message-ID"]
    assert own_id and own_id != "<new-1@client.test>" and own_id.endswith("@mailflow.test>")
    assert case in ack["Subject"]
    assert "Question sur ma commande" in ack["Subject"]
    body = body_of(ack)
    assert case in body
    found = FR_DATE.findall(body)
    assert found and set(found) & promised_texts(before, after, "fr"), (found, body)
    # the case is in the store, open, with its customer
    row = flow.query("SELECT status, customer, mailbox FROM cases WHERE number = ?", case)
    assert row == [("open", CUSTOMER, "sav@example.com")]


def test_support_gets_an_english_acknowledgement(flow: Flow) -> None:
    before = time.time()
    flow.send(mail("Cannot log in", "Hello, I cannot log in to my account. Thanks.",
                   message_id="en-1@client.test", to="support@example.com"),
              rcpt_to=["support@example.com"])
    after = time.time()
    case = flow.case_of("en-1@client.test")
    assert case.startswith("SUP-") and FORMAT.valid(case)
    _, ack = flow.the_ack("en-1@client.test")
    assert ack["From"].addresses[0].addr_spec == "support@example.com"
    assert case in ack["Subject"] and "We received your message" in ack["Subject"]
    body = body_of(ack)
    assert case in body
    assert set(EN_DATE.findall(body)) & promised_texts(before, after, "en"), body
    assert not FR_DATE.search(body)


def test_each_mailbox_has_its_prefix_and_numbers_follow(flow: Flow) -> None:
    numbers = []
    for i, box in enumerate(["sav", "contact", "devis", "sav"]):
        flow.send(mail(f"Sujet {i}", f"Texte différent numéro {i}.", message_id=f"p{i}@c.test",
                       to=f"{box}@example.com", sender=f"client{i}@client.test"),
                  mail_from=f"client{i}@client.test", rcpt_to=[f"{box}@example.com"])
        numbers.append(flow.case_of(f"p{i}@c.test"))
    prefixes = [n.split("-")[0] for n in numbers]
    assert prefixes == ["SAV", "CTC", "DEV", "SAV"]
    assert int(numbers[3].split("-")[2]) == int(numbers[0].split("-")[2]) + 1
    assert all(FORMAT.valid(n) for n in numbers)
    assert len(flow.acks()) == 4


# ---------------------------------------------------------------------------
# follow-ups
# ---------------------------------------------------------------------------


def test_followup_by_in_reply_to_or_references(flow: Flow) -> None:
    flow.send(mail(message_id="f-1@client.test"))
    case = flow.case_of("f-1@client.test")
    _, ack = flow.the_ack("f-1@client.test")
    ack_id = ack["Message-ID"]

    # a reply to our acknowledgement
    flow.send(mail("Re: Question", "Le numéro de suivi ne marche pas.",
                   message_id="f-2@client.test",
                   headers=f"In-Reply-To: {ack_id}\r\nReferences: <f-1@client.test> {ack_id}\r\n"))
    # References only, naming the customer's first message, from another address of hers
    flow.send(mail("Encore moi", "Autre précision importante.", message_id="f-3@client.test",
                   sender="claire.perso@client.test",
                   headers="References: <unknown@else.test> <f-1@client.test>\r\n"),
              mail_from="claire.perso@client.test")
    # a reply to her own follow-up
    flow.send(mail("Re: Encore moi", "Et une dernière chose.", message_id="f-4@client.test",
                   headers="In-Reply-To: <f-3@client.test>\r\n"))
    for message_id in ("f-2@client.test", "f-3@client.test", "f-4@client.test"):
        assert flow.case_of(message_id) == case
        assert flow.relayed(message_id)[0][1]["X-Mailflow-Duplicate"] is None
        assert flow.acks_for(message_id) == []
        assert flow.suppressed(message_id) == "follow-up on an existing case"
    assert len(flow.acks()) == 1
    assert flow.query("SELECT count(*) FROM cases") == [(1,)]


SUBJECT_PREFIXES = ["Re: ", "RE: ", "TR: ", "Fwd: ", "AW: ", "SV: ", "=?utf-8?q?R=C3=A9f_:?= ",
                    "RE: TR: ", "Re: Fwd: AW: "]


def test_followup_by_number_in_subject_under_any_prefix(flow: Flow) -> None:
    flow.send(mail(message_id="s-0@client.test"))
    case = flow.case_of("s-0@client.test")
    for i, prefix in enumerate(SUBJECT_PREFIXES, 1):
        subject = f"{prefix}[{case}] Question sur ma commande" if i % 2 else \
            f"{prefix}Dossier {case.lower()}"
        flow.send(mail(subject, f"Relance numéro {i}, toujours rien.",
                       message_id=f"s-{i}@client.test", to="contact@example.com"),
                  rcpt_to=["contact@example.com"])
        assert flow.case_of(f"s-{i}@client.test") == case, subject
        assert flow.suppressed(f"s-{i}@client.test") == "follow-up on an existing case"
    assert len(flow.acks()) == 1
    assert flow.query("SELECT count(*) FROM cases") == [(1,)]


def test_wrong_check_digit_or_stranger_opens_a_new_case(flow: Flow) -> None:
    flow.send(mail(message_id="w-0@client.test"))
    case = flow.case_of("w-0@client.test")
    check = int(case[-1])
    wrong = f"{case[:-1]}{(check + 1) % 10}"
    digits = case.split("-")
    typo = "-".join([*digits[:2], digits[2][:-1] + str((int(digits[2][-1]) + 1) % 10),
                     digits[3]])
    for i, number in enumerate([wrong, typo], 1):
        flow.send(mail(f"Re: [{number}] Question", f"Relance {i}.", message_id=f"w-{i}@c.test"))
        other = flow.case_of(f"w-{i}@c.test")
        assert other != case and FORMAT.valid(other)
        assert ack_case(flow.the_ack(f"w-{i}@c.test")[1]) == other
        (refused,) = flow.events("case_number_refused", queue_id=flow.queue_id(f"w-{i}@c.test"))
        assert refused["number"] == number and refused["reason"] == "wrong check digit"

    # the right number, but from someone who never wrote in this case
    stranger = "mallory@elsewhere.test"
    flow.send(mail(f"Re: [{case}] je m'invite", "Je m'invite dans ce dossier.",
                   message_id="w-3@elsewhere.test", sender=stranger), mail_from=stranger)
    new = flow.case_of("w-3@elsewhere.test")
    assert new != case
    (refused,) = flow.events("case_number_refused", queue_id=flow.queue_id("w-3@elsewhere.test"))
    assert refused["reason"] == "sender never took part in that case"
    assert refused["number"] == case
    received, _ = flow.the_ack("w-3@elsewhere.test")
    assert received.rcpt_tos == [stranger]
    assert flow.query("SELECT count(*) FROM cases") == [(4,)]


def test_forged_internal_headers_are_removed(flow: Flow) -> None:
    flow.send(mail(message_id="x-0@client.test"))
    case = flow.case_of("x-0@client.test")
    forged = (f"X-Mailflow-Case: {case}\r\nX-Mailflow-Duplicate: {case}\r\n"
              "x-mailflow-priority: urgent\r\nX-Mailflow-Route:\r\n legal\r\n")
    flow.send(mail("Nouvelle demande", "Une toute autre question.", message_id="x-1@evil.test",
                   sender="mallory@evil.test", headers=forged), mail_from="mallory@evil.test")
    (received, relayed), = flow.relayed("x-1@evil.test")
    new = flow.case_of("x-1@evil.test")
    assert new != case
    assert relayed.get_all("X-Mailflow-Duplicate") is None
    assert relayed.get_all("X-Mailflow-Priority") is None
    assert relayed.get_all("X-Mailflow-Route") is None
    assert b"legal" not in received.data
    assert flow.the_ack("x-1@evil.test")[0].rcpt_tos == ["mallory@evil.test"]


# ---------------------------------------------------------------------------
# duplicates
# ---------------------------------------------------------------------------


def test_same_message_id_in_another_transaction_is_a_duplicate(flow: Flow) -> None:
    data = mail(message_id="d-1@client.test", to="sav@example.com, contact@example.com")
    flow.send(data, rcpt_to=["sav@example.com"])
    case = flow.case_of("d-1@client.test")
    flow.send(data, rcpt_to=["contact@example.com"])  # the second copy, as a client retry
    flow.send(data, rcpt_to=["contact@example.com"])
    copies = flow.relayed("d-1@client.test")
    assert [r.rcpt_tos for r, _ in copies] == [["sav@example.com"], ["contact@example.com"],
                                               ["contact@example.com"]]
    assert copies[0][1]["X-Mailflow-Duplicate"] is None
    for _, copy in copies[1:]:
        assert copy.get_all("X-Mailflow-Duplicate") == [case]
        assert copy.get_all("X-Mailflow-Case") == [case]
    assert flow.suppressed("d-1@client.test") == "duplicate"
    assert len(flow.acks_for("d-1@client.test")) == 1
    assert flow.query("SELECT count(*) FROM cases") == [(1,)]


def test_duplicate_discarded_when_rules_say_so(daemon_factory: Any, sink: Sink,
                                                tmp_path: Path) -> None:
    rules = chain_rules(tmp_path, {("cases.yaml", "deduplicate"): {"action": "discard"}})
    flow = Flow(daemon_factory(rules=rules), sink)
    data = mail(message_id="dd-1@client.test")
    flow.send(data)
    flow.send(data, rcpt_to=["contact@example.com"])  # accepted (250) but not relayed
    assert [r.rcpt_tos for r, _ in flow.relayed("dd-1@client.test")] == [["sav@example.com"]]
    (entry,) = flow.events("duplicate", action="discard")
    assert entry["kind"] == "copy"
    assert len(flow.acks()) == 1
    state = flow.query("SELECT state FROM messages WHERE queue_id = ?", entry["queue_id"])
    assert state == [("discard",)]


def test_one_transaction_to_two_mailboxes_is_one_case(flow: Flow) -> None:
    flow.send(mail(message_id="two@client.test", to="sav@example.com, contact@example.com"),
              rcpt_to=["sav@example.com", "contact@example.com"])
    (received, relayed), = flow.relayed("two@client.test")
    assert received.rcpt_tos == ["sav@example.com", "contact@example.com"]
    assert relayed["X-Mailflow-Case"].startswith("SAV-")
    assert relayed["X-Mailflow-Duplicate"] is None
    assert len(flow.acks()) == 1


def test_resend_with_new_message_id_is_a_duplicate(flow: Flow) -> None:
    text = "Bonjour,\r\n\r\nJe n'ai toujours pas reçu ma commande 5512.\r\n"
    flow.send(mail("Commande 5512", text + "\r\n-- \r\nClaire\r\n", message_id="r-1@client.test"))
    case = flow.case_of("r-1@client.test")
    # sent again (new Message-ID), another signature, more spaces, to another mailbox
    flow.send(mail("Commande 5512", text.replace("ma commande", "ma  commande") +
                   "--\r\nClaire Martin, Lyon\r\n", message_id="r-2@client.test",
                   to="contact@example.com"), rcpt_to=["contact@example.com"])
    (_, resent), = flow.relayed("r-2@client.test")
    assert resent["X-Mailflow-Duplicate"] == case
    assert resent["X-Mailflow-Case"] == case
    assert flow.suppressed("r-2@client.test") == "duplicate"
    assert flow.events("duplicate", kind="resend")
    # the same text from someone else is not a resend
    flow.send(mail("Commande 5512", text, message_id="r-3@other.test", sender="bob@other.test"),
              mail_from="bob@other.test")
    assert flow.case_of("r-3@other.test") != case
    assert len(flow.acks()) == 2


def test_messages_without_text_are_not_resends(flow: Flow) -> None:
    """Two attachment-only messages (no text) from one sender are two cases."""
    for i, name in enumerate(["facture.pdf", "photo.jpg"]):
        body = ("--B\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Disposition: attachment; filename={name}\r\n"
                f"Content-Transfer-Encoding: base64\r\n\r\nAAEC{i}w==\r\n--B--")
        flow.send(mail(f"Pièce jointe {i}", body, message_id=f"att-{i}@client.test",
                       content_type='multipart/mixed; boundary="B"'))
    assert flow.case_of("att-0@client.test") != flow.case_of("att-1@client.test")
    assert len(flow.acks()) == 2


# ---------------------------------------------------------------------------
# who gets an acknowledgement, and who never does
# ---------------------------------------------------------------------------


def test_web_form_ack_goes_to_the_customer(flow: Flow) -> None:
    form = ("From: Formulaire du site <web@example.com>\r\nTo: contact@example.com\r\n"
            "Subject: [Formulaire contact] Nouvelle demande\r\nMessage-ID: <form-1@example.com>\r\n"
            "Reply-To: sophie.roux@client.test\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "\r\nNom : Sophie Roux\r\nE-mail : sophie.roux@client.test\r\n\r\n"
            "Demande :\r\nJe suis prélevée deux fois.\r\n").encode()
    flow.send(form, mail_from="web@example.com", rcpt_to=["contact@example.com"])
    received, ack = flow.the_ack("form-1@example.com")
    assert received.rcpt_tos == ["sophie.roux@client.test"]
    assert ack["To"].addresses[0].addr_spec == "sophie.roux@client.test"
    assert ack["To"].addresses[0].display_name == "Sophie Roux"
    # no Reply-To: the form's "E-mail :" field
    second = form.replace(b"Reply-To: sophie.roux@client.test\r\n", b"").replace(
        b"form-1@", b"form-2@").replace(b"sophie.roux@", b"paul.durand@").replace(
        b"deux fois", b"trois fois")
    flow.send(second, mail_from="web@example.com", rcpt_to=["contact@example.com"])
    received, _ = flow.the_ack("form-2@example.com")
    assert received.rcpt_tos == ["paul.durand@client.test"]
    customers = flow.query("SELECT customer FROM cases ORDER BY created_at")
    assert customers == [("sophie.roux@client.test",), ("paul.durand@client.test",)]


ROBOTS: list[tuple[str, str, str, str]] = [
    # (name, envelope sender, extra headers, expected reason)
    ("auto-replied", CUSTOMER, "Auto-Submitted: auto-replied\r\n",
     "Auto-Submitted: auto-replied"),
    ("auto-generated", CUSTOMER, "Auto-Submitted: auto-generated\r\n",
     "Auto-Submitted: auto-generated"),
    ("bulk", CUSTOMER, "Precedence: bulk\r\n", "Precedence: bulk"),
    ("list", CUSTOMER, "Precedence: list\r\n", "Precedence: list"),
    ("junk", CUSTOMER, "Precedence: junk\r\n", "Precedence: junk"),
    ("list-id", CUSTOMER, "List-Id: <news.shop.test>\r\n", "mailing list (List-Id)"),
    ("list-unsub", CUSTOMER, "List-Unsubscribe: <mailto:u@shop.test>\r\n",
     "mailing list (List-Unsubscribe)"),
    ("xars-all", CUSTOMER, "X-Auto-Response-Suppress: All\r\n", "X-Auto-Response-Suppress: All"),
    ("xars-oof", CUSTOMER, "X-Auto-Response-Suppress: OOF\r\n", "X-Auto-Response-Suppress: OOF"),
    ("xars-ar", CUSTOMER, "X-Auto-Response-Suppress: DR, AutoReply\r\n",
     "X-Auto-Response-Suppress: DR, AutoReply"),
    ("x-loop", CUSTOMER, "X-Loop: helpdesk@client.test\r\n", "auto-reply marker (X-Loop)"),
    ("our-loop", CUSTOMER, "X-Mailflow-Loop: mailflow.test\r\n",
     "auto-reply marker (X-Mailflow-Loop)"),
    ("mailer-daemon", "MAILER-DAEMON@mx.client.test", "", "robot sender (mailer-daemon)"),
    ("noreply", "noreply@shop.test", "", "robot sender (noreply)"),
    ("no-reply", "no-reply@shop.test", "", "robot sender (no-reply)"),
    ("noreply-suffix", "noreply-notifications@forge.test", "",
     "robot sender (noreply-notifications)"),
    ("postmaster", "postmaster@client.test", "", "robot sender (postmaster)"),
    ("own-address", "facturation@example.com", "", "one of our own addresses"),
    ("own-domain", "agent.dupont@example.com", "", "one of our own addresses"),
]


def test_robots_lists_and_ourselves_are_never_acknowledged(flow: Flow) -> None:
    for i, (name, sender, headers, _) in enumerate(ROBOTS):
        flow.send(mail(f"Message {name}", f"Texte automatique {name} {i}.",
                       message_id=f"robot-{name}@robot.test", sender=sender, headers=headers),
                  mail_from=sender)
    report = ("--B\r\nContent-Type: text/plain\r\n\r\nRead: Question\r\n--B\r\n"
              "Content-Type: message/disposition-notification\r\n\r\n"
              "Disposition: manual-action/MDN-sent-manually; displayed\r\n--B--")
    flow.send(mail("Lu : Question", report, message_id="robot-mdn@robot.test",
                   content_type='multipart/report; report-type=disposition-notification; '
                                'boundary="B"'))
    flow.send(mail("Une vraie question", "Bonjour, une vraie question.",
                   message_id="person@client.test"))
    for name, _, _, reason in ROBOTS:
        message_id = f"robot-{name}@robot.test"
        assert flow.case_of(message_id), name  # relayed, with a case
        assert flow.suppressed(message_id) == reason, name
    assert flow.suppressed("robot-mdn@robot.test") == (
        "read receipt (multipart/report; report-type=disposition-notification)")
    acks = flow.acks()
    assert [a["In-Reply-To"] for _, a in acks] == ["<person@client.test>"]


def test_null_sender_is_relayed_but_never_acknowledged(flow: Flow) -> None:
    flow.send(mail("Notification", "Un message sans expéditeur d'enveloppe.",
                   message_id="null@client.test"), mail_from="")
    (received,) = [m for m in flow.sink.messages
                   if parse_email(m.data)["Message-ID"] == "<null@client.test>"]
    assert received.mail_from in NULL_SENDERS
    assert flow.suppressed("null@client.test") == "null sender"
    assert flow.acks() == []


def test_address_whose_ack_bounced_is_left_alone(flow: Flow) -> None:
    flow.send(mail(message_id="b-1@client.test", sender="gone@client.test"),
              mail_from="gone@client.test")
    _, ack = flow.the_ack("b-1@client.test")
    dsn = ("--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
           "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.test\r\n"
           "\r\nFinal-Recipient: rfc822; gone@client.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
           "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
           f"From: sav@example.com\r\nTo: gone@client.test\r\nMessage-ID: {ack['Message-ID']}\r\n"
           "--B--")
    flow.send(mail("Undelivered Mail Returned to Sender", dsn, message_id="dsn-1@mx.test",
                   sender="MAILER-DAEMON@mx.client.test",
                   headers="Auto-Submitted: auto-replied\r\n",
                   content_type='multipart/report; report-type=delivery-status; boundary="B"'),
              mail_from="MAILER-DAEMON@mx.client.test")
    assert flow.events("ack_bounce_recorded", address="gone@client.test")
    flow.send(mail("Autre sujet", "Une nouvelle question, différente.",
                   message_id="b-2@client.test", sender="gone@client.test"),
              mail_from="gone@client.test")
    assert flow.case_of("b-2@client.test") != flow.case_of("b-1@client.test")
    assert flow.suppressed("b-2@client.test") == \
        "an acknowledgement to this address bounced recently"
    # somebody else still gets theirs
    flow.send(mail(message_id="b-3@client.test"))
    flow.the_ack("b-3@client.test")
    assert len(flow.acks()) == 2


def test_limit_per_address_per_day(flow: Flow) -> None:
    for i in range(7):
        flow.send(mail(f"Question {i}", f"Question numéro {i}, toute différente.",
                       message_id=f"l-{i}@client.test"))
    reasons = [flow.suppressed(f"l-{i}@client.test") for i in (5, 6)]
    assert reasons == ["limit per address per day"] * 2
    assert len({flow.case_of(f"l-{i}@client.test") for i in range(7)}) == 7
    assert len(flow.acks()) == 5


def test_global_ceiling(daemon_factory: Any, sink: Sink, tmp_path: Path) -> None:
    rules = chain_rules(tmp_path, {("acknowledge.yaml", "acknowledge"): {
        "limits": {"per_case": 1, "per_address_per_day": 5, "global_per_hour": 3}}})
    flow = Flow(daemon_factory(rules=rules), sink)
    for i in range(5):
        flow.send(mail(f"Q{i}", f"Question {i}.", message_id=f"g-{i}@c{i}.test",
                       sender=f"client@c{i}.test"), mail_from=f"client@c{i}.test")
    assert [flow.suppressed(f"g-{i}@c{i}.test") for i in (3, 4)] == [
        "global ceiling (3 per hour)"] * 2
    assert len(flow.acks()) == 3


def test_header_injection_through_merge_fields_is_impossible(flow: Flow) -> None:
    # "Hello\r\nBcc: victim@evil.test\r\nX-Injected: yes" as RFC 2047 words, in the
    # Subject and in the display name
    subject = "=?utf-8?b?SGVsbG8NCkJjYzogdmljdGltQGV2aWwudGVzdA0KWC1JbmplY3RlZDogeWVz?="
    name = "=?utf-8?q?Eve=0D=0ABcc=3A_victim2=40evil=2Etest=0A=0AX-Body=3A_1?="
    data = mail(subject, "Bonjour, une question.", message_id="inj@client.test").replace(
        b"From: Claire Martin <", f"From: {name} <".encode())
    flow.send(data)
    received, ack = flow.the_ack("inj@client.test")
    assert received.rcpt_tos == [CUSTOMER]
    head = received.data.split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"^(?:Bcc|X-Injected|X-Body):", head, re.IGNORECASE | re.MULTILINE)
    assert ack.get_all("Bcc") is None and ack.get_all("X-Injected") is None
    assert len(ack.get_all("Subject") or []) == 1
    assert "Bcc: victim@evil.test" in ack["Subject"]  # kept as text, on one line
    assert "\n" not in ack["Subject"] and "\r" not in ack["Subject"]
    assert [a.addr_spec for a in ack["To"].addresses] == [CUSTOMER]


def test_very_long_subject_gives_a_sane_ack_subject(flow: Flow) -> None:
    words = "\r\n ".join(" ".join(f"mot{i}" for i in range(j, j + 10))
                          for j in range(0, 400, 10))  # folded, as real senders do
    flow.send(mail(words, "Bonjour, un long sujet.", message_id="long@client.test"))
    received, ack = flow.the_ack("long@client.test")
    assert len(ack["Subject"]) < 220
    assert flow.case_of("long@client.test") in ack["Subject"]
    head = received.data.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 998


# ---------------------------------------------------------------------------
# closed cases, refusals downstream
# ---------------------------------------------------------------------------


def cases_cli(daemon: Daemon, *args: str) -> CliResult:
    """``mailflow cases ARGS...`` on the daemon's own store (its configuration), in-process."""
    return run_cli("cases", *args, "--config", str(daemon.config_path))


def test_reply_to_a_closed_case_reopens_it(flow: Flow) -> None:
    flow.send(mail(message_id="c-1@client.test"))
    case = flow.case_of("c-1@client.test")
    done = cases_cli(flow.daemon, "close", case)
    assert done.returncode == 0, done.stderr
    assert flow.query("SELECT status FROM cases WHERE number = ?", case) == [("closed",)]
    flow.send(mail(f"Re: [{case}] Question", "Finalement, ce n'est pas réglé.",
                   message_id="c-2@client.test"))
    assert flow.case_of("c-2@client.test") == case
    shown = cases_cli(flow.daemon, "show", case, "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["status"] == "open"
    assert [m["message_id"] for m in data["messages"] if m["role"] == "customer"] == [
        "c-1@client.test", "c-2@client.test"]
    assert flow.events("message", message_id="c-2@client.test")
    (decision,) = [e for e in flow.events("ack_suppressed")
                   if e["queue_id"] == flow.queue_id("c-2@client.test")]
    assert decision["reason"] == "follow-up on an existing case"
    assert len(flow.acks()) == 1


def test_refused_downstream_then_retried_is_acknowledged_once(flow: Flow) -> None:
    data = mail(message_id="retry@client.test")
    flow.sink.handler.data_reply = "451 4.3.0 busy"
    code, _ = flow.daemon.send(data)
    assert code == 451
    flow.sink.handler.data_reply = "250 2.0.0 Ok"
    flow.send(data)  # the client tries again
    case = flow.case_of("retry@client.test")
    (_, relayed), = flow.relayed("retry@client.test")
    assert relayed["X-Mailflow-Duplicate"] is None
    assert ack_case(flow.the_ack("retry@client.test")[1]) == case
    assert flow.query("SELECT number FROM cases") == [(case,)]


def test_reply_to_a_closed_case_opens_a_linked_case_where_its_route_says_so(
        daemon_factory: Any, sink: Sink, tmp_path: Path) -> None:
    # the shipped rules: closed sales cases stay closed (on_closed_by_route: {sales: new})
    rules = rules_with_chain(tmp_path, ["number", "deduplicate", "prioritise", "route",
                                        "acknowledge"])
    flow = Flow(daemon_factory(rules=rules), sink)
    flow.send(mail("Demande de devis", message_id="q-1@client.test", to="devis@example.com"),
              rcpt_to=["devis@example.com"])
    case = flow.case_of("q-1@client.test")
    assert flow.query("SELECT route FROM cases WHERE number = ?", case) == [("sales",)]
    assert cases_cli(flow.daemon, "close", case).returncode == 0
    flow.send(mail(f"RE: [{case}] Demande de devis", "Finalement, une autre question.",
                   message_id="q-2@client.test", to="devis@example.com"),
              rcpt_to=["devis@example.com"])
    linked = flow.case_of("q-2@client.test")
    assert linked != case
    assert flow.query("SELECT parent, status FROM cases WHERE number = ?", linked) == [
        (case, "open")]
    assert flow.query("SELECT status FROM cases WHERE number = ?", case) == [("closed",)]
    assert len(flow.acks_for("q-2@client.test")) == 1  # the new case is acknowledged
