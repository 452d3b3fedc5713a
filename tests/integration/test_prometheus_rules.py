"""The alert rules, checked and unit-tested by Prometheus' own ``promtool``.

``promtool check rules`` parses every expression and template; ``promtool test rules``
runs deploy/prometheus/mailflow-alerts.test.yml: input series for which each alert must
fire (labels and rendered annotations compared) and others for which it must stay
silent. That every alert has both kinds of case is checked here, so a new alert
without its tests fails too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from prometheus import promtool, unavailable

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "mailflow-alerts.yml"
TESTS = REPO / "deploy" / "prometheus" / "mailflow-alerts.test.yml"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def _promtool() -> None:
    problem = unavailable()
    if problem is not None:  # make test installs it: a failure, never a skip
        pytest.fail(problem)


def load(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


def alert_names() -> list[str]:
    return [rule["alert"] for group in load(RULES)["groups"] for rule in group["rules"]
            if "alert" in rule]


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = promtool("test", "rules", TESTS.name, cwd=TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for group in load(TESTS)["tests"]:
        for case in group.get("alert_rule_test") or []:
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    names = set(alert_names())
    assert names - firing == set(), f"never shown firing: {sorted(names - firing)}"
    assert names - silent == set(), f"never shown silent: {sorted(names - silent)}"
    assert (firing | silent) - names == set(), "tests of alerts that do not exist"


def test_a_broken_alert_fails_its_unit_tests(tmp_path: Path) -> None:
    # the unit tests compare what fires: a threshold changed in the rules is caught
    # (the alert's own group of tests, on the shipped rules then on the broken ones)
    text = RULES.read_text(encoding="utf-8")
    needle = "mailflow_outbox_oldest_age_seconds) > 900"
    assert needle in text
    (tmp_path / "shipped.yml").write_text(text, encoding="utf-8")
    (tmp_path / "broken.yml").write_text(text.replace(needle, needle + "0"), encoding="utf-8")
    tests = load(TESTS)
    tests["tests"] = [group for group in tests["tests"]
                      if group["name"] == "MailflowOutboxOldestTooOld"]
    outcomes = {}
    for rules in ("shipped.yml", "broken.yml"):
        tests["rule_files"] = [rules]
        with open(tmp_path / f"{rules}.test.yml", "w", encoding="utf-8") as fh:
            YAML(typ="safe").dump(tests, fh)
        outcomes[rules] = promtool("test", "rules", f"{rules}.test.yml", cwd=tmp_path)
    assert outcomes["shipped.yml"].returncode == 0, outcomes["shipped.yml"].stdout
    broken = outcomes["broken.yml"]
    assert broken.returncode != 0
    assert "MailflowOutboxOldestTooOld" in broken.stdout + broken.stderr
