"""Series that start at zero, in the real daemon with pre-forked workers (prometheus_client's
multiprocess mode): the label values the rules make known are on /metrics at 0 from the
start, whether a built-in stage, a third-party stage (``Stage.known_labels``) or a
plugin's hook (``mailflow_known_labels``, tests/fixtures/labels_plugin) declares them; a
message counts once, across the workers; a SIGHUP reload that brings a new route, a new
reason and a new kind starts their series too, and keeps what was counted.
"""

from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from conftest import FULL_CHAIN, REPO, Daemon, Sink, full_chain_rules
from traffic import TRUSTED, customer_case, paris

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PLUGIN_DIR = REPO / "tests" / "fixtures" / "labels_plugin"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(d: Daemon) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics",
                                timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())): float(s.value)
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def edit(path: Path, change: Any) -> None:
    yaml = YAML()
    data = yaml.load(path.read_text(encoding="utf-8"))
    change(data)
    with open(path, "w", encoding="utf-8") as fh:
        yaml.dump(data, fh)


def test_known_series_start_at_zero_in_every_worker_and_at_each_reload(
        daemon_factory: Any, tmp_path: Path, sink: Sink) -> None:
    rules = full_chain_rules(tmp_path / "rules-src",
                             FULL_CHAIN.replace("]", ", fixture_seen]"),
                             fixture_refusals={"reasons": ["listed"]},
                             fixture_seen={"kinds": ["plain"]})
    d: Daemon = daemon_factory(config={"trusted_networks": TRUSTED, "workers": 2,
                                       "plugin_dirs": [str(PLUGIN_DIR)]},
                               rules=rules, test_clock=paris(2026, 11, 23, 10, 0))
    d.wait_for_log('"event": "ready"')
    found = samples(d)
    expected = [  # (name, labels): one of each kind of declaration
        ("mailflow_messages_total", {"verdict": "quarantine"}),  # the framework's
        ("mailflow_smtp_rejections_total", {"reason": "relay_denied"}),
        ("mailflow_outbox_failures_total", {"kind": "ack", "outcome": "failed"}),
        ("mailflow_timers_fired_total", {"kind": "escalate.remind"}),
        ("mailflow_stage_failures_total", {"stage": "fixture_seen", "outcome": "timeout"}),
        ("mailflow_routed_total", {"route": "sav"}),  # a built-in stage's
        ("mailflow_sla_breaches_total", {"route": "legal", "priority": "urgent"}),
        ("mailflow_cases_open", {"route": "sales", "priority": "low", "status": "open"}),
        ("mailflow_agent_replies_total", {"agent": "alice"}),
        ("mailflow_fixture_seen_total", {"kind": "plain"}),  # a third-party stage's
        ("mailflow_fixture_refusals_total", {"reason": "listed"}),  # a plugin hook's
    ]
    for name, labels in expected:
        assert value(found, name, **labels) == 0.0, (name, labels)
    assert value(found, "mailflow_routed_total", route="retours") is None

    customer_case(d, sink, "claire.martin@client.test", "sav@example.com", "q-1@client.test")
    d.settle()
    found = samples(d)
    assert value(found, "mailflow_routed_total", route="sav") == 1.0  # once, not per worker
    assert value(found, "mailflow_fixture_seen_total", kind="plain") == 1.0
    assert value(found, "mailflow_routed_total", route="sales") == 0.0

    def new_team(data: Any) -> None:
        data["route"]["teams"]["retours"] = {"addresses": ["retours@example.com"]}

    edit(d.rules / "route.yaml", new_team)
    edit(d.rules / "fixture_refusals.yaml",
         lambda data: data["fixture_refusals"]["reasons"].append("late"))
    edit(d.rules / "fixture_seen.yaml",
         lambda data: data["fixture_seen"]["kinds"].append("html"))
    d.signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while value(found, "mailflow_config_reloads_total", result="ok") != 2.0:  # both workers
        assert time.monotonic() < deadline, d.log[-3000:]
        time.sleep(0.2)
        found = samples(d)
    for name, labels in [("mailflow_routed_total", {"route": "retours"}),
                         ("mailflow_sla_warnings_total", {"route": "retours", "priority": "high"}),
                         ("mailflow_first_responses_total",
                          {"route": "retours", "priority": "normal", "in_time": "yes"}),
                         ("mailflow_fixture_refusals_total", {"reason": "late"}),
                         ("mailflow_fixture_seen_total", {"kind": "html"})]:
        assert value(found, name, **labels) == 0.0, (name, labels)
    assert value(found, "mailflow_routed_total", route="sav") == 1.0  # kept across the reload
    assert "known_labels" not in d.log  # no declaration failed or named a wrong label
