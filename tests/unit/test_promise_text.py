"""The promised answer time as each language writes it, with the zone for a customer who
may live in another one (``BusinessCalendar.format``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailflow.business_hours import BusinessCalendar, CalendarOptions
from mailflow.clock import FakeClock
from mailflow.config import ConfigError
from mailflow.context import CaseInfo
from mailflow.stage import CaseStatus
from mailflow.stages.acknowledge import AcknowledgeStage
from mailflow.testing import make_context, make_rules, make_stage, run_stage, temporary_store

PARIS = ZoneInfo("Europe/Paris")
WINTER_NOON = dt.datetime(2026, 12, 2, 12, 0, tzinfo=PARIS)  # a Wednesday
SUMMER_MIDNIGHT = dt.datetime(2026, 7, 1, 0, 0, tzinfo=PARIS)  # a Wednesday
NNBSP = "\u202f"  # CLDR's narrow no-break space between an English time and AM/PM


def paris_calendar(**extra: object) -> BusinessCalendar:
    return BusinessCalendar(CalendarOptions.model_validate(
        {"timezone": "Europe/Paris", "country": "FR", **extra}))


def test_french_writes_day_and_month_in_lower_case_without_zone() -> None:
    calendar = paris_calendar()
    assert calendar.language == "fr"
    assert calendar.format(WINTER_NOON, "fr") == "mercredi 2 décembre 2026 à 12:00"


def test_english_gets_the_zone_and_its_offset() -> None:
    text = paris_calendar().format(WINTER_NOON, "en")
    assert text == (f"Wednesday, December 2, 2026 at 12:00{NNBSP}PM"
                    " (Central European Standard Time, GMT+01:00)")


def test_the_zone_named_is_the_one_in_force_that_day() -> None:
    assert paris_calendar().format(SUMMER_MIDNIGHT, "en").endswith(
        "(Central European Summer Time, GMT+02:00)")


@pytest.mark.parametrize(("language", "expected"), [
    ("de", "Mittwoch, 2. Dezember 2026 um 12:00 (Mitteleuropäische Normalzeit, GMT+01:00)"),
    ("es", "miércoles, 2 de diciembre de 2026, 12:00"
           " (hora estándar de Europa central, GMT+01:00)"),
    ("it", "mercoledì 2 dicembre 2026 12:00 (Ora standard dell’Europa centrale, GMT+01:00)"),
    ("nl", "woensdag 2 december 2026 om 12:00 (Midden-Europese standaardtijd, GMT+01:00)"),
    ("en_GB", "Wednesday, 2 December 2026 at 12:00 (Central European Standard Time,"
              " GMT+01:00)"),
])
def test_other_languages_use_their_own_patterns(language: str, expected: str) -> None:
    assert paris_calendar().format(WINTER_NOON, language) == expected


def test_an_unknown_language_falls_back_to_english() -> None:
    calendar = paris_calendar()
    assert calendar.format(WINTER_NOON, "xx-nowhere") == calendar.format(WINTER_NOON, "en")


def test_midnight_is_the_team_s_day_not_utc_s() -> None:
    calendar = paris_calendar()
    # 22:30 UTC on 30 June is already 00:30 on Wednesday 1 July in Paris
    late = dt.datetime(2026, 6, 30, 22, 30, tzinfo=dt.UTC)
    assert calendar.format(late, "fr") == "mercredi 1 juillet 2026 à 00:30"
    assert calendar.format(SUMMER_MIDNIGHT, "fr") == "mercredi 1 juillet 2026 à 00:00"
    assert calendar.format(SUMMER_MIDNIGHT, "de").startswith("Mittwoch, 1. Juli 2026 um 00:00")
    assert calendar.format(SUMMER_MIDNIGHT, "en").startswith(
        f"Wednesday, July 1, 2026 at 12:00{NNBSP}AM")
    # one minute earlier is still Tuesday
    before = SUMMER_MIDNIGHT - dt.timedelta(minutes=1)
    assert calendar.format(before, "fr") == "mardi 30 juin 2026 à 23:59"


def test_the_calendar_s_language_follows_its_country_or_zone() -> None:
    assert paris_calendar(country="DE", timezone="Europe/Berlin").language == "de"
    assert paris_calendar(country=None, timezone="America/New_York").language == "en"
    assert paris_calendar(language="en").language == "en"
    # a calendar in English: the French customer is the one told the zone
    english = paris_calendar(language="en")
    assert english.format(WINTER_NOON, "en").endswith("12:00\u202fPM")
    assert english.format(WINTER_NOON, "fr") == (
        "mercredi 2 décembre 2026 à 12:00 (heure normale d’Europe centrale, UTC+01:00)")


def test_show_zone_always_or_never() -> None:
    assert paris_calendar(show_zone="always").format(WINTER_NOON, "fr").endswith(
        "à 12:00 (heure normale d’Europe centrale, UTC+01:00)")
    assert paris_calendar(show_zone="never").format(WINTER_NOON, "en") == (
        f"Wednesday, December 2, 2026 at 12:00{NNBSP}PM")


def test_a_pattern_per_language_is_used_as_written() -> None:
    calendar = paris_calendar(formats={"en": "EEEE d MMMM y 'at' HH:mm VVVV"})
    assert calendar.format(WINTER_NOON, "en") == "Wednesday 2 December 2026 at 12:00 France Time"
    assert calendar.format(WINTER_NOON, "fr") == "mercredi 2 décembre 2026 à 12:00"


@pytest.mark.parametrize("options", [
    {"language": "klingon-nowhere"},
    {"formats": {"zz-zz": "EEEE"}},
    {"formats": {"en": "EEEE qqqqqq"}},
    {"show_zone": "sometimes"},
])
def test_bad_language_or_pattern_is_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        CalendarOptions.model_validate(options)


def test_each_language_s_style_is_worked_out_once() -> None:
    calendar = paris_calendar()
    calendar.format(WINTER_NOON, "en")
    style = calendar._styles["en"]
    calendar.format(SUMMER_MIDNIGHT, "en")
    assert calendar._styles["en"] is style


async def test_a_german_template_gets_the_promise_in_german(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "ack.fr.txt").write_text(
        "Subject: Reçu\n\nRéponse au plus tard le {{ promised }}.\n", encoding="utf-8")
    (tmp_path / "templates" / "ack.de.txt").write_text(
        "Subject: Erhalten\n\nAntwort spätestens am {{ promised }}.\n", encoding="utf-8")
    ack = make_stage(AcknowledgeStage, {
        "templates": {"fr": "templates/ack.fr.txt", "de": "templates/ack.de.txt"},
        "language_by_recipient": {"kundendienst@example.com": "de"},
        "promise": {level: {"next_business_day_at": "12:00"}
                    for level in ("urgent", "high", "normal", "low")},
    }, rules=make_rules(directory=tmp_path))
    clock = FakeClock(dt.datetime(2026, 12, 1, 15, 0, tzinfo=PARIS).timestamp())  # Tuesday
    raw = (b"From: kunde@client.test\r\nTo: kundendienst@example.com\r\nSubject: Frage\r\n"
           b"Message-ID: <de-1@client.test>\r\n\r\nGuten Tag.\r\n")
    case = CaseInfo(number="SAV-20261201-00001", status=CaseStatus.NEW,
                    customer="kunde@client.test", mailbox="kundendienst@example.com")
    async with temporary_store(tmp_path, clock=clock) as store:
        ctx = make_context(raw, store=store, clock=clock, case=case)
        decision = await run_stage(ack, ctx)
    assert decision.outcome == "ok", decision
    assert decision.notes["language"] == "de"
    assert decision.notes["promised"] == (
        "Mittwoch, 2. Dezember 2026 um 12:00 (Mitteleuropäische Normalzeit, GMT+01:00)")


def test_a_bad_calendar_in_the_rules_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError) as caught:
        make_stage(AcknowledgeStage, {"calendar": {"formats": {"en": "EEEE qqqqqq"}}},
                   rules=make_rules(directory=Path(__file__).resolve().parents[2] / "rules"))
    assert "date pattern for 'en'" in str(caught.value)
