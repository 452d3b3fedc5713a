"""Durations, business-time arithmetic, the rules' calendars and SLA deadline computation."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from ruamel.yaml import YAML

from clirunner import run_cli
from mailflow.business_hours import BusinessCalendar, CalendarOptions
from mailflow.calendars import Calendars, CalendarsSection
from mailflow.config import ConfigError, Model
from mailflow.deadlines import Deadline
from mailflow.durations import Duration, DurationField, parse_duration
from mailflow.rules import RuleSet, load_rules
from mailflow.stages.sla import NextBusinessDay, SlaOptions, deadline, timer_times

RULES = Path(__file__).resolve().parents[2] / "rules"


def shipped() -> BusinessCalendar:
    data = YAML(typ="safe").load((RULES / "calendars.yaml").read_text(encoding="utf-8"))
    return BusinessCalendar(CalendarOptions.model_validate(data["calendars"]["default"]))


CAL = shipped()  # Paris; Mon-Thu 09:00-12:30, 13:30-18:00; Fri until 17:00; FR holidays


def at(*args: int) -> float:
    return dt.datetime(*args, tzinfo=CAL.zone).timestamp()  # type: ignore[misc]


def local(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, CAL.zone)


# -- durations ------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("90s", Duration(seconds=90)), ("30m", Duration(seconds=1800)),
    ("4h", Duration(seconds=14400)), ("2d", Duration(seconds=172800)),
    ("1.5h", Duration(seconds=5400)), ("2bh", Duration(business_hours=2)),
    ("0.5bh", Duration(business_hours=0.5)), ("1bd", Duration(business_days=1)),
    (" 3BD ", Duration(business_days=3)),
])
def test_parse_duration(text: str, expected: Duration) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(str(expected)) == expected  # written back as the rules write it


@pytest.mark.parametrize("text", ["", "4", "h", "4x", "-2h", "0m", "1.5bd", "4 hours", "2bh3"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=f"'{re.escape(text)}'"):
        parse_duration(text)


def test_a_duration_is_one_amount() -> None:
    with pytest.raises(ValueError):
        Duration(seconds=60, business_hours=1)
    with pytest.raises(ValueError):
        Duration()


class _Options(Model):
    delay: DurationField


def test_duration_field_reads_text_and_explains_mistakes() -> None:
    assert _Options.model_validate({"delay": "2bh"}).delay == Duration(business_hours=2)
    assert _Options.model_validate({"delay": "2bh"}).model_dump() == {"delay": "2bh"}
    with pytest.raises(ValidationError, match="'2 days' is not a duration like 90s"):
        _Options.model_validate({"delay": "2 days"})
    with pytest.raises(ValidationError, match="is not a duration"):
        _Options.model_validate({"delay": 5})


# -- business-time arithmetic ---------------------------------------------------


def test_plain_time_counts_nights() -> None:
    friday_4pm = at(2026, 11, 20, 16, 0)
    assert CAL.add(friday_4pm, parse_duration("4h")) == friday_4pm + 4 * 3600


@pytest.mark.parametrize(("start", "text", "expected"), [
    ((2026, 11, 23, 11, 30), "2bh", (2026, 11, 23, 14, 30)),  # across lunch
    ((2026, 11, 23, 17, 0), "2bh", (2026, 11, 24, 10, 0)),    # overnight
    ((2026, 11, 20, 16, 0), "2bh", (2026, 11, 23, 10, 0)),    # Friday closes at 17:00
    ((2026, 11, 21, 10, 0), "2bh", (2026, 11, 23, 11, 0)),    # from a Saturday
    ((2026, 11, 23, 22, 0), "30m", (2026, 11, 23, 22, 30)),   # plain: at night all the same
    ((2026, 11, 20, 10, 0), "1bd", (2026, 11, 23, 10, 0)),    # a Friday: the Monday
    ((2026, 11, 10, 10, 0), "1bd", (2026, 11, 12, 10, 0)),    # before 11 November (holiday)
    ((2026, 11, 19, 17, 30), "1bd", (2026, 11, 23, 9, 0)),    # Friday 17:30 is closed
    ((2026, 12, 23, 15, 0), "1bd", (2026, 12, 28, 15, 0)),    # company day off, Christmas
])
def test_add(start: tuple[int, ...], text: str, expected: tuple[int, ...]) -> None:
    assert local(CAL.add(at(*start), parse_duration(text))) == dt.datetime(
        *expected, tzinfo=CAL.zone)  # type: ignore[misc]


def test_business_hours_across_a_change_to_summer_time() -> None:
    # Friday 27 March 2026 16:00 CET; clocks go forward on Sunday 29 March
    end = CAL.add(at(2026, 3, 27, 16, 0), parse_duration("2bh"))
    assert local(end) == dt.datetime(2026, 3, 30, 10, 0, tzinfo=CAL.zone)
    assert dt.datetime.fromtimestamp(end, dt.UTC).hour == 8  # CEST: UTC+2
    days = CAL.add(at(2026, 3, 27, 10, 0), parse_duration("1bd"))
    assert days - at(2026, 3, 27, 10, 0) == 3 * 86400 - 3600  # the night one hour short
    assert local(CAL.add(at(2026, 3, 29, 0, 0), parse_duration("4h"))).hour == 5


def test_next_open_and_is_open() -> None:
    open_now = at(2026, 11, 23, 10, 15)
    assert CAL.is_open(open_now) and CAL.next_open(open_now) == open_now
    assert not CAL.is_open(at(2026, 11, 23, 22, 0))
    assert local(CAL.next_open(at(2026, 11, 23, 22, 0))) == local(at(2026, 11, 24, 9, 0))
    assert local(CAL.next_open(at(2026, 11, 23, 12, 45))) == local(at(2026, 11, 23, 13, 30))
    holiday = at(2026, 11, 11, 10, 0)  # Armistice, a Wednesday
    assert not CAL.is_open(holiday)
    assert local(CAL.next_open(holiday)) == local(at(2026, 11, 12, 9, 0))
    assert local(CAL.next_open(at(2026, 11, 20, 17, 0))) == local(at(2026, 11, 23, 9, 0))
    assert not CAL.is_open(at(2026, 11, 23, 18, 0))  # a span's end is closed


def test_a_calendar_without_hours_says_so() -> None:
    closed = BusinessCalendar(CalendarOptions(hours={}))
    with pytest.raises(ValueError, match="no working hours"):
        closed.next_open(at(2026, 11, 23, 10, 0))


# -- calendars in the rules -----------------------------------------------------


def rules(tmp_path: Path, **files: str) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    for name, text in {"chain.yaml": "chain: [headers]\n", **files}.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_calendars_section(tmp_path: Path) -> None:
    loaded = load_rules(rules(tmp_path, **{"calendars.yaml": (
        "calendars:\n  default: {timezone: Europe/Paris, country: FR}\n"
        "  us: {timezone: America/New_York, country: US}\n")}))
    calendars = loaded.calendars
    assert calendars.default is calendars.get() is calendars.get("default")
    assert calendars.get("us").options.timezone == "America/New_York"
    assert "calendars" not in loaded.sections
    with pytest.raises(KeyError, match=r"no calendar 'eu'.*known: default, us"):
        calendars.get("eu")


def test_calendar_mistakes_are_located(tmp_path: Path) -> None:
    folder = rules(tmp_path, **{"calendars.yaml": (
        "calendars:\n  default:\n    timezone: Europe/Pariss\n"
        "    hours: {monday: ['9-12']}\n")})
    with pytest.raises(ConfigError) as info:
        load_rules(folder)
    found = sorted(str(p) for p in info.value.problems)
    assert found[0].startswith(f"{folder / 'calendars.yaml'}:3:15: ")
    assert "unknown time zone 'Europe/Pariss'" in found[0]
    assert found[1].startswith(f"{folder / 'calendars.yaml'}:4:") and "9-12" in found[1]


def test_without_a_section_the_default_is_the_built_in_calendar(tmp_path: Path) -> None:
    assert load_rules(rules(tmp_path)).calendars.default.options == CalendarOptions()


def test_the_old_inline_ack_calendar_stands_for_the_default(tmp_path: Path) -> None:
    loaded = load_rules(rules(tmp_path, **{"acknowledge.yaml": (
        "acknowledge:\n  calendar: {timezone: Europe/Brussels, country: BE}\n")}))
    assert loaded.calendars.default.options.timezone == "Europe/Brussels"


def test_calendars_are_named_sensibly() -> None:
    calendars = Calendars()
    assert calendars.get(None) is calendars.default and "default" in calendars
    with pytest.raises(ValidationError, match="not a calendar name"):
        CalendarsSection.model_validate({"a b": {}})


# -- deadlines ------------------------------------------------------------------


def test_deadline_of_each_target_form() -> None:
    received = at(2026, 11, 20, 16, 0)  # a Friday afternoon
    assert local(deadline(CAL, received, parse_duration("2bh"))) == local(
        at(2026, 11, 23, 10, 0))
    noon = NextBusinessDay(next_business_day_at="12:00")
    assert local(deadline(CAL, received, noon)) == local(at(2026, 11, 23, 12, 0))


def test_timers_wait_for_the_next_opening() -> None:
    start = at(2026, 11, 23, 17, 0)
    due = start + 4 * 3600  # a plain 4h deadline at 21:00
    warn, breach = timer_times(CAL, start, due, parse_duration("30m"))
    assert local(breach) == local(at(2026, 11, 24, 9, 0))
    assert warn is None  # 20:30 also waits for 09:00: a warning with the breach is none
    warn, breach = timer_times(CAL, at(2026, 11, 23, 9, 0), at(2026, 11, 23, 14, 0),
                               parse_duration("1h"))
    assert warn is not None and local(warn) == local(at(2026, 11, 23, 13, 30))  # not lunch
    assert breach == at(2026, 11, 23, 14, 0)


def test_sla_options_per_route_and_errors() -> None:
    options = SlaOptions.model_validate({
        "priorities": {"urgent": {"first_response": "2bh", "update": "4bh"},
                       "high": {"first_response": "4bh"}, "low": {"first_response": "3bd"},
                       "normal": {"first_response": {"next_business_day_at": "12:00"}}},
        "routes": {"sales": {"urgent": {"first_response": "1bh"}}}})
    sales = options.targets("urgent", "sales")
    assert sales.first_response == Duration(business_hours=1)
    assert sales.update == Duration(business_hours=4)  # inherited
    assert options.targets("urgent", "sav").first_response == Duration(business_hours=2)
    with pytest.raises(ValidationError, match="unknown priority 'critical'"):
        SlaOptions.model_validate({"priorities": {"critical": {"first_response": "1bh"}}})
    with pytest.raises(ValidationError, match="not a duration"):
        SlaOptions.model_validate({"priorities": {"urgent": {"first_response": "soon"}}})
    with pytest.raises(ValidationError, match="warn_before is plain time"):
        SlaOptions.model_validate({"priorities": {"urgent": {"first_response": "2bh",
                                                             "warn_before": "1bh"}}})


@pytest.mark.parametrize(("met", "breached", "cancelled", "state"), [
    (None, None, None, "pending"), (50.0, None, None, "met"), (150.0, None, None, "breached"),
    (None, 100.0, None, "breached"), (150.0, 100.0, None, "breached"),
    (None, None, 80.0, "cancelled"),
])
def test_deadline_state(met: float | None, breached: float | None, cancelled: float | None,
                        state: str) -> None:
    row = Deadline("C-1", "first_response", 0.0, 100.0, None, met, breached, cancelled)
    assert row.state == state


# -- acknowledge and the shared calendar ------------------------------------------


def test_acknowledge_refers_to_a_calendar_and_still_reads_the_old_form() -> None:
    from structlog.testing import capture_logs

    from mailflow.stages.acknowledge import AcknowledgeStage
    from mailflow.testing import make_stage

    ack = make_stage(AcknowledgeStage, {"templates": {"fr": "templates/ack.fr.txt"}},
                     rules=_rules_with_templates())
    assert ack.calendar is ack.env.calendars.default
    with capture_logs() as logs:
        old = make_stage(AcknowledgeStage, {"templates": {"fr": "templates/ack.fr.txt"},
                                            "calendar": {"timezone": "Europe/Brussels"}},
                         rules=_rules_with_templates())
    assert old.calendar.options.timezone == "Europe/Brussels"
    assert any(e["event"] == "deprecated_setting" and e["setting"] == "acknowledge.calendar"
               for e in logs)
    with pytest.raises(ValueError, match="no calendar 'us'"):
        make_stage(AcknowledgeStage, {"templates": {"fr": "templates/ack.fr.txt"},
                                      "calendar": "us"}, rules=_rules_with_templates())


def _rules_with_templates() -> RuleSet:
    from mailflow.testing import make_rules

    return make_rules(directory=RULES)


# -- the other stages' time zone ------------------------------------------------


@pytest.mark.parametrize("stage_name", ["number", "route"])
def test_stages_take_the_default_calendar_s_zone_unless_told(tmp_path: Path,
                                                           stage_name: str) -> None:
    from mailflow.stages.number import NumberStage
    from mailflow.stages.route import RouteStage
    from mailflow.testing import make_stage

    cls = {"number": NumberStage, "route": RouteStage}[stage_name]
    base = {"route": {"default": "accueil", "teams": {"accueil": {
        "addresses": ["contact@example.com"]}}}}.get(stage_name, {})
    loaded = load_rules(rules(tmp_path, **{"calendars.yaml": (
        "calendars:\n  default: {timezone: America/Montreal, country: CA}\n"
        "local_domains: [example.com]\n")}))
    stage = make_stage(cls, base, rules=loaded)
    assert str(stage.zone) == "America/Montreal"
    own = make_stage(cls, {**base, "timezone": "Asia/Tokyo"}, rules=loaded)
    assert str(own.zone) == "Asia/Tokyo"


def test_a_broken_inline_ack_calendar_is_left_to_the_stage(tmp_path: Path) -> None:
    loaded = load_rules(rules(tmp_path, **{"acknowledge.yaml": (
        "acknowledge:\n  calendar: {timezone: Mars/Olympus}\n")}))
    assert loaded.calendars.default.options == CalendarOptions()
    assert not loaded.calendars.configured


# -- mailflow try ---------------------------------------------------------------


def _try(tmp_path: Path, extra: str = "") -> dict[str, Any]:
    eml = tmp_path / "q.eml"
    eml.write_bytes((f"From: Claire <claire@client.test>\r\nTo: sav@example.com\r\n"
                     f"Subject: Commande en retard\r\nMessage-ID: <q@client.test>\r\n{extra}"
                     "\r\nBonjour, ma commande 4821 n'est pas arrivée.\r\n").encode())
    # run_cli puts the test process's logging back afterwards: a logger left writing to
    # this test's captured output would break the tests after it
    result = run_cli("try", "--json", str(eml), "--rules", str(RULES),
                     "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_try_shows_the_deadlines_the_case_would_get(tmp_path: Path) -> None:
    report = _try(tmp_path)
    notes = {d["stage"]: d["notes"] for d in report["decisions"]}
    assert notes["sla"]["calendar"] == "default (Europe/Paris)"
    timers = {t["kind"]: t["due"] for t in report["timers"]}
    assert set(timers) >= {"sla.warn", "sla.breach"}
    breach = local(timers["sla.breach"])
    assert notes["sla"]["first_response"] == breach.strftime("%Y-%m-%d %H:%M %Z")
    (listed,) = [t for t in report["timers"] if t["kind"] == "sla.breach"]
    assert listed["due_local"] == breach.strftime("%Y-%m-%d %H:%M %Z")  # as timers list says
    # the acknowledgement promises that very instant (normal priority: noon, an open hour)
    assert notes["acknowledge"]["promised"] == CAL.format(breach, "fr")
    robot = _try(tmp_path, "Auto-Submitted: auto-replied\r\n")
    sla = {d["stage"]: d["notes"] for d in robot["decisions"]}["sla"]
    assert sla["deadline"] is None and "automatic mail" in sla["because"]
    assert not [t for t in robot["timers"] if t["kind"].startswith("sla.")]


def test_auto_close_per_route() -> None:
    options = SlaOptions.model_validate({"auto_close_after": "5bd",
                                         "auto_close_after_by_route": {"sales": "10bd",
                                                                       "legal": None}})
    assert options.auto_close("sav") == Duration(business_days=5)
    assert options.auto_close(None) == Duration(business_days=5)
    assert options.auto_close("sales") == Duration(business_days=10)
    assert options.auto_close("legal") is None
    assert SlaOptions().auto_close("sales") is None
