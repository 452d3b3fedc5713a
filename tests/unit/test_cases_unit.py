"""Unit tests of the case lifecycle helpers: numbers, resend text, business calendar, robots.

No daemon here: `mailflow.cases`, `mailflow.business_hours` and `mailflow.automatic`
are exercised directly, with small messages parsed by `mailflow.message.parse_message`
exactly as the daemon parses them.
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from ruamel.yaml import YAML

from mailflow import cases
from mailflow.acks import not_to_write
from mailflow.automatic import SHIPPED
from mailflow.business_hours import BusinessCalendar, CalendarOptions, PromiseOptions
from mailflow.message import Envelope, Message, parse_message

RULES = Path(__file__).resolve().parents[2] / "rules"
PARIS = ZoneInfo("Europe/Paris")
FORMAT = cases.NumberFormat(prefixes=("CASE", "SAV", "CTC", "DEV", "SUP"))
NOON = PromiseOptions(next_business_day_at="12:00")


def paris(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=PARIS)  # type: ignore[misc]


# ---------------------------------------------------------------------------
# Case numbers and their check digit
# ---------------------------------------------------------------------------


def test_number_format_and_check_digit() -> None:
    number = FORMAT.format("SAV", paris(2026, 11, 23, 10, 0), 1)
    assert number == "SAV-20261123-00001-3"
    assert FORMAT.valid(number)
    assert FORMAT.sequence_name("SAV", paris(2026, 11, 23)) == "SAV-20261123"
    undated = cases.NumberFormat(prefixes=("CASE",), date_format="", digits=6)
    plain = undated.format("CASE", paris(2026, 1, 1), 42)
    assert plain.startswith("CASE-000042-") and undated.valid(plain)
    assert undated.pattern().search(f"Re: {plain}").group(0) == plain  # type: ignore[union-attr]


def _digit_positions(number: str) -> list[int]:
    return [i for i, ch in enumerate(number) if ch.isdigit()]


@pytest.mark.parametrize("sequence", [1, 2, 9, 10, 99, 12345, 99999])
def test_check_digit_catches_every_single_digit_typo(sequence: int) -> None:
    number = FORMAT.format("SAV", paris(2026, 11, 23), sequence)
    assert FORMAT.valid(number)
    for pos in _digit_positions(number):
        for digit in "0123456789":
            if digit == number[pos]:
                continue
            typo = number[:pos] + digit + number[pos + 1:]
            assert not FORMAT.valid(typo), f"{typo} (typo of {number}) passes the check"


@pytest.mark.parametrize("sequence", [1, 17, 305, 4821, 90817])
def test_check_digit_catches_every_adjacent_swap(sequence: int) -> None:
    number = FORMAT.format("CTC", paris(2026, 12, 31), sequence)
    positions = _digit_positions(number)
    swaps = 0
    for a, b in itertools.pairwise(positions):
        if number[a] == number[b]:
            continue
        chars = list(number)
        chars[a], chars[b] = chars[b], chars[a]
        swapped = "".join(chars)
        assert not FORMAT.valid(swapped), f"{swapped} (swap in {number}) passes the check"
        swaps += 1
    assert swaps >= 3


def test_check_digit_rejects_junk() -> None:
    assert not FORMAT.valid("SAV")
    assert not FORMAT.valid("SAV-1")


@pytest.mark.parametrize("prefix", [
    "Re: ", "RE: ", "re:", "TR: ", "Tr : ", "Fwd: ", "FW: ", "AW: ", "SV: ", "Réf : ",
    "RE: TR: ", "Re: Fwd: AW: SV: ", "Réf : RE : ", "[EXT] Re: ", "",
])
def test_pattern_finds_the_number_after_any_reply_prefix(prefix: str) -> None:
    number = FORMAT.format("SAV", paris(2026, 11, 23), 7)
    pattern = FORMAT.pattern()
    for subject in (f"{prefix}[{number}] Ma commande", f"{prefix}Ma commande ({number})",
                    f"{prefix}{number.lower()} ma commande", f"{prefix}dossier n°{number}"):
        assert cases.first_match([subject], pattern) == [number], subject


def test_pattern_ignores_lookalikes() -> None:
    pattern = FORMAT.pattern()
    number = FORMAT.format("SAV", paris(2026, 11, 23), 7)
    assert cases.first_match([f"XSAV-{number[4:]}"], pattern) == []
    assert cases.first_match([f"{number}7"], pattern) == []
    assert cases.first_match(["FOO-20261123-00007-1", "commande 4821"], pattern) == []
    other = FORMAT.format("DEV", paris(2026, 11, 23), 8)
    assert cases.first_match([f"Re: {number} et {other}"], pattern) == [number, other]


def test_message_ids() -> None:
    assert cases.message_ids("<a@b> <c.d@e>\t<f@g>") == ["a@b", "c.d@e", "f@g"]
    assert cases.message_ids("no brackets") == []


# ---------------------------------------------------------------------------
# Resends: the text a human wrote
# ---------------------------------------------------------------------------

FIRST = "Bonjour,\n\nMa commande 4821 n'est pas arrivée.\nMerci de vérifier.\n"


@pytest.mark.parametrize("variant", [
    FIRST,
    "  Bonjour,\n\n\nMa   commande 4821 n'est pas ARRIVÉE.\r\nMerci de vérifier.  \n",
    FIRST + "\n-- \nClaire Martin\nTél. 06 00 00 00 00\n",
    FIRST + "--\nClaire\n",
    FIRST + "\nLe 20 nov. 2026 à 10:00, Service client a écrit :\n> Votre dossier\n> SAV-1\n",
    FIRST + "\nOn Fri, Nov 20, 2026 at 10:00 AM Support wrote:\n> Hello\n",
    FIRST + "\n-----Original Message-----\nFrom: sav@example.com\nSent: Friday\n\nTexte\n",
    FIRST + "\n-------- Message d'origine --------\nDe : sav@example.com\n\nTexte\n",
    FIRST + "\nDe : Service client <sav@example.com>\nEnvoyé : vendredi\nObjet : RE\n",
    "> ancienne citation\n" + FIRST + "> autre citation\n",
])
def test_normalised_text_ignores_quotes_signatures_and_spacing(variant: str) -> None:
    assert cases.normalised_text(variant) == cases.normalised_text(FIRST)
    assert cases.fingerprint(variant) == cases.fingerprint(FIRST)


def test_normalised_text_keeps_what_differs() -> None:
    assert cases.normalised_text(FIRST) == (
        "bonjour, ma commande 4821 n'est pas arrivée. merci de vérifier.")
    other = FIRST.replace("4821", "4822")
    assert cases.fingerprint(other) != cases.fingerprint(FIRST)


def test_no_fingerprint_without_text() -> None:
    # an attachment-only message, or one that is only a signature or quoted history,
    # has no text of its own: two of them are not "the same text resent"
    for empty in ("", "   \n\n", "-- \nClaire Martin\n", "> cité\n> encore\n"):
        assert cases.normalised_text(empty) == ""
        assert cases.fingerprint(empty) == ""


# ---------------------------------------------------------------------------
# Business calendar and promised answer times
# ---------------------------------------------------------------------------


def shipped_calendar() -> BusinessCalendar:
    data = YAML(typ="safe").load((RULES / "calendars.yaml").read_text(encoding="utf-8"))
    return BusinessCalendar(CalendarOptions.model_validate(data["calendars"]["default"]))


def plain_calendar(**extra: object) -> BusinessCalendar:
    return BusinessCalendar(CalendarOptions.model_validate({"timezone": "Europe/Paris",
                                                             "country": "FR", **extra}))


@pytest.mark.parametrize(("received", "hours", "expected"), [
    (paris(2026, 11, 23, 10, 0), 2, paris(2026, 11, 23, 12, 0)),  # Monday morning
    (paris(2026, 11, 23, 12, 0), 2, paris(2026, 11, 23, 15, 0)),  # over lunch
    (paris(2026, 11, 23, 12, 45), 1, paris(2026, 11, 23, 14, 30)),  # received at lunch
    (paris(2026, 11, 23, 7, 0), 2, paris(2026, 11, 23, 11, 0)),  # before opening
    (paris(2026, 11, 23, 20, 0), 2, paris(2026, 11, 24, 11, 0)),  # after closing
    (paris(2026, 11, 20, 16, 0), 2, paris(2026, 11, 23, 10, 0)),  # Friday (17:00) -> Monday
    (paris(2026, 11, 21, 11, 0), 4, paris(2026, 11, 23, 14, 0)),  # Saturday: 3.5 h + 0.5 h
    (paris(2026, 12, 23, 17, 0), 2, paris(2026, 12, 28, 10, 0)),  # 24 extra, 25 Noël, weekend
    (paris(2026, 12, 30, 17, 30), 1, paris(2027, 1, 4, 9, 30)),  # 31 extra, 1 Jan, weekend
    (paris(2026, 11, 20, 16, 30), 24, paris(2026, 11, 25, 17, 30)),  # over days
])
def test_sliding_promise(received: dt.datetime, hours: float, expected: dt.datetime) -> None:
    calendar = shipped_calendar()
    promised = calendar.promise(received, PromiseOptions(sliding_hours=hours))
    assert promised == expected
    assert promised.tzinfo is not None and promised.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(("received", "expected"), [
    (paris(2026, 11, 23, 15, 0), paris(2026, 11, 24, 12, 0)),  # Monday -> Tuesday
    (paris(2026, 11, 20, 9, 0), paris(2026, 11, 23, 12, 0)),  # Friday -> Monday
    (paris(2026, 11, 21, 9, 0), paris(2026, 11, 23, 12, 0)),  # Saturday -> Monday
    (paris(2026, 11, 22, 23, 59), paris(2026, 11, 23, 12, 0)),  # Sunday night -> Monday
    (paris(2026, 12, 23, 9, 0), paris(2026, 12, 28, 12, 0)),  # over Christmas
    (paris(2026, 12, 30, 9, 0), paris(2027, 1, 4, 12, 0)),  # over New Year
    (paris(2026, 5, 13, 10, 0), paris(2026, 5, 15, 12, 0)),  # Ascension (14 May)
    (paris(2026, 3, 27, 10, 0), paris(2026, 3, 30, 12, 0)),  # over the DST change
])
def test_scheduled_promise(received: dt.datetime, expected: dt.datetime) -> None:
    promised = shipped_calendar().promise(received, NOON)
    assert promised == expected
    assert promised.utcoffset() == expected.utcoffset()


def test_received_in_utc_is_judged_in_the_team_time_zone() -> None:
    # Friday 23:30 UTC is already Saturday 00:30 in Paris: next business day is Monday
    received = dt.datetime(2026, 11, 20, 23, 30, tzinfo=dt.UTC)
    assert shipped_calendar().promise(received, NOON) == paris(2026, 11, 23, 12, 0)


def test_public_and_extra_holidays() -> None:
    shipped = shipped_calendar()
    assert not shipped.is_business_day(dt.date(2026, 12, 25))  # Noël (holidays package)
    assert not shipped.is_business_day(dt.date(2026, 12, 24))  # extra holiday in the rules
    assert not shipped.is_business_day(dt.date(2026, 7, 14))  # Fête nationale
    assert not shipped.is_business_day(dt.date(2026, 11, 21))  # Saturday
    assert shipped.is_business_day(dt.date(2026, 12, 23))
    plain = plain_calendar()
    assert plain.is_business_day(dt.date(2026, 12, 24))
    assert not plain.is_business_day(dt.date(2026, 12, 25))
    assert plain.promise(paris(2026, 12, 23, 9), NOON) == paris(2026, 12, 24, 12, 0)
    extra = plain_calendar(extra_holidays=["2026-11-24"])
    assert extra.promise(paris(2026, 11, 23, 9), NOON) == paris(2026, 11, 25, 12, 0)
    nowhere = plain_calendar(country=None)
    assert nowhere.is_business_day(dt.date(2026, 12, 25))


def test_calendar_without_working_hours_is_an_error() -> None:
    calendar = plain_calendar(hours={})
    with pytest.raises(ValueError):
        calendar.promise(paris(2026, 11, 23, 9), NOON)
    with pytest.raises(ValueError):
        calendar.promise(paris(2026, 11, 23, 9), PromiseOptions(sliding_hours=1))


def test_calendar_options_are_checked() -> None:
    with pytest.raises(ValueError):
        CalendarOptions.model_validate({"timezone": "Mars/Olympus"})
    with pytest.raises(ValueError):
        CalendarOptions.model_validate({"hours": {"funday": ["09:00-12:00"]}})
    with pytest.raises(ValueError):
        CalendarOptions.model_validate({"hours": {"monday": ["12:00-09:00"]}})
    with pytest.raises(ValueError):
        CalendarOptions.model_validate({"country": "XX"})
    with pytest.raises(ValueError):
        PromiseOptions.model_validate({})
    with pytest.raises(ValueError):
        PromiseOptions.model_validate({"sliding_hours": 2, "next_business_day_at": "12:00"})
    with pytest.raises(ValueError):
        PromiseOptions.model_validate({"next_business_day_at": "midi"})


def test_format_in_french_and_english() -> None:
    # more in test_promise_text.py: other languages, zones, midnight
    calendar = shipped_calendar()
    when = paris(2026, 11, 24, 12, 0)
    assert calendar.format(when, "fr") == "mardi 24 novembre 2026 à 12:00"
    assert calendar.format(when, "en") == ("Tuesday, November 24, 2026 at 12:00\u202fPM"
                                           " (Central European Standard Time, GMT+01:00)")
    # shown in the team's time zone, whatever zone the value is in
    utc = dt.datetime(2026, 12, 28, 9, 0, tzinfo=dt.UTC)
    assert calendar.format(utc, "fr") == "lundi 28 décembre 2026 à 10:00"


# ---------------------------------------------------------------------------
# When robots must stay silent
# ---------------------------------------------------------------------------

OWN = {"sav@example.com", "contact@example.com", "noreply@example.com"}
LOCAL = {"example.com"}


def message(headers: str = "", *, mail_from: str = "claire@client.test",
            content_type: str = "text/plain; charset=utf-8",
            body: str = "Bonjour, une question.") -> Message:
    head = (f"From: Claire <claire@client.test>\r\nTo: sav@example.com\r\nSubject: Question\r\n"
            f"Message-ID: <q1@client.test>\r\nContent-Type: {content_type}\r\n{headers}")
    raw = f"{head}\r\n{body}\r\n".encode()
    return parse_message(raw, Envelope(mail_from=mail_from, rcpt_to=("sav@example.com",)))


def robot_address(address: str) -> str | None:
    found = SHIPPED.address(address)
    return found.why if found else None


def why(msg: Message, recipient: str = "claire@client.test") -> str | None:
    return not_to_write(SHIPPED.judge(msg), recipient, OWN, LOCAL, SHIPPED)


def test_a_person_gets_an_answer() -> None:
    assert why(message()) is None
    assert why(message("Auto-Submitted: no\r\n")) is None
    assert why(message("Auto-Submitted: No (a person wrote this)\r\n")) is None
    assert why(message("Precedence: first-class\r\n")) is None
    assert why(message("X-Auto-Response-Suppress: DR, RN, NRN\r\n")) is None


@pytest.mark.parametrize(("headers", "reason"), [
    ("Auto-Submitted: auto-replied\r\n", "Auto-Submitted: auto-replied"),
    ("Auto-Submitted: auto-generated\r\n", "Auto-Submitted: auto-generated"),
    ("Auto-Submitted: auto-notified (vacation)\r\n", "Auto-Submitted: auto-notified"),
    ("AUTO-SUBMITTED: Auto-Replied\r\n", "Auto-Submitted: auto-replied"),
    ("Precedence: bulk\r\n", "Precedence: bulk"),
    ("Precedence: list\r\n", "Precedence: list"),
    ("Precedence: junk\r\n", "Precedence: junk"),
    ("Precedence: auto_reply\r\n", "Precedence: auto_reply"),
    ("X-Precedence: bulk\r\n", "X-Precedence: bulk"),
    ("List-Id: <news.fournisseur.test>\r\n", "mailing list (List-Id)"),
    ("List-Unsubscribe: <mailto:u@list.test>\r\n", "mailing list (List-Unsubscribe)"),
    ("List-Post: <mailto:l@list.test>\r\n", "mailing list (List-Post)"),
    ("Mailing-List: contact l@list.test\r\n", "mailing list (Mailing-List)"),
    ("X-Auto-Response-Suppress: All\r\n", "X-Auto-Response-Suppress: All"),
    ("X-Auto-Response-Suppress: OOF\r\n", "X-Auto-Response-Suppress: OOF"),
    ("X-Auto-Response-Suppress: DR, AutoReply\r\n", "X-Auto-Response-Suppress: DR, AutoReply"),
    ("X-Loop: helpdesk@client.test\r\n", "auto-reply marker (X-Loop)"),
    ("X-Autoreply: yes\r\n", "auto-reply marker (X-Autoreply)"),
    ("X-Autorespond: yes\r\n", "auto-reply marker (X-Autorespond)"),
    ("X-Mailflow-Loop: mailflow.test\r\n", "auto-reply marker (X-Mailflow-Loop)"),
])
def test_robot_headers(headers: str, reason: str) -> None:
    assert why(message(headers)) == reason


def test_null_sender() -> None:
    assert why(message(mail_from="")) == "null sender"


def test_delivery_report() -> None:
    report = message(content_type='multipart/report; report-type=delivery-status; boundary="B"',
                     body="--B\r\nContent-Type: text/plain\r\n\r\nnot delivered\r\n--B--")
    assert why(report) == "delivery report (multipart/report; report-type=delivery-status)"


@pytest.mark.parametrize(("address", "reason"), [
    ("MAILER-DAEMON@mx.client.test", "robot sender (mailer-daemon)"),
    ("postmaster@client.test", "robot sender (postmaster)"),
    ("noreply@plateforme.test", "robot sender (noreply)"),
    ("no-reply@plateforme.test", "robot sender (no-reply)"),
    ("donotreply@plateforme.test", "robot sender (donotreply)"),
    ("ne-pas-repondre@impots.test", "robot sender (ne-pas-repondre)"),
    ("noreply-notifications@forge.test", "robot sender (noreply-notifications)"),
    ("no-reply+42@plateforme.test", "robot sender (no-reply+42)"),
    ("owner-liste@lists.test", "mailing-list sender"),
    ("liste-request@lists.test", "mailing-list sender"),
])
def test_robot_senders(address: str, reason: str) -> None:
    msg = message(mail_from=address)
    assert why(msg, address) == reason
    assert robot_address(address) == reason


@pytest.mark.parametrize("address", ["claire@client.test", "noreplying.fan@client.test",
                                     "rootbeer@client.test", "no@client.test"])
def test_people_are_not_robots(address: str) -> None:
    assert robot_address(address) is None


def test_robot_envelope_sender_even_when_the_customer_is_elsewhere() -> None:
    # a platform relaying for a customer: the envelope sender is a robot's
    msg = message(mail_from="no-reply@plateforme.test")
    assert why(msg, "claire@client.test") == "robot sender (no-reply)"


@pytest.mark.parametrize("address", ["sav@example.com", "noreply@example.com",
                                     "agent.dupont@example.com", "SAV@EXAMPLE.COM"])
def test_our_own_addresses(address: str) -> None:
    msg = message(mail_from="claire@client.test")
    assert why(msg, address) in ("one of our own addresses", "robot sender (noreply)")


def test_no_usable_address() -> None:
    assert why(message(), "") == "no usable address"
    assert why(message(), "claire") == "no usable address"
