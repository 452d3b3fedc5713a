"""The Grafana dashboard and the Prometheus alert rules only use what the daemon exports.

A dashboard panel or an alert on a metric nobody exports stays silently empty,
so every ``mailflow_*`` name in their expressions must be a series that a real
daemon registry (the framework's metrics plus the shipped stages') shows on
/metrics, with the suffixes prometheus_client gives it, and every label they
group or filter by must be one of that series' labels.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from mailflow.config import load_settings
from mailflow.host import DaemonHost
from mailflow.metrics import MetricFactory, Metrics
from mailflow.plugins import collect_for_host
from mailflow.runtime import load_runtime
from mailflow.store import open_store

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "mailflow-dashboard.json"
ALERTS = REPO / "deploy" / "prometheus" / "mailflow-alerts.yml"

METRIC = re.compile(r"mailflow_[a-z0-9_]+")
# labels Prometheus adds at scrape time, and the histogram bucket bound
TARGET_LABELS = {"instance", "job"}
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
SELECTOR = re.compile(r"\{([^{}]*)\}")
LEGEND = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
RATE_OF = re.compile(r"\b(?:rate|irate|increase)\s*\(\s*(mailflow_[a-z0-9_]+)")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Sample name -> label names, as a daemon's /metrics shows them."""
    registry = CollectorRegistry()
    Metrics(registry)
    state = tmp_path_factory.mktemp("state")
    settings = load_settings(None, {"rules": str(REPO / "rules"), "state_dir": str(state)})
    factory = MetricFactory(registry)
    runtime = load_runtime(settings, factory)
    # and the plugins' housekeeping (the open-cases gauge), as the daemon asks them
    host = DaemonHost(settings=settings, store=open_store(settings.store_url),
                      metrics=factory, rules=lambda: runtime.rules)
    collect_for_host(runtime.pm, "mailflow_housekeeping", host.for_plugin)
    # prometheus_client only exposes a labelled metric once a label set exists
    for collector in list(registry._collector_to_names):
        labelnames = getattr(collector, "_labelnames", ())
        if labelnames:
            collector.labels(*["x"] * len(labelnames))
    samples: dict[str, set[str]] = {}
    text = generate_latest(registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def alert_rules() -> list[dict[str, Any]]:
    data = YAML(typ="safe").load(ALERTS.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("groups"), list), \
        f"{ALERTS.name}: expected a mapping with a 'groups' list"
    return [rule for group in data["groups"] for rule in group.get("rules") or []]


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels") or [])


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(where, expr, legendFormat) for every panel target and query variable."""
    found = []
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets") or []:
            found.append((f"panel {panel.get('title')!r} target {target.get('refId')}",
                          target.get("expr", ""), target.get("legendFormat", "")))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        if variable.get("type") == "query" and isinstance(query, str):
            found.append((f"variable {variable['name']!r}", query, ""))
    return found


def alert_exprs(rules: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(f"alert {rule.get('alert')!r}", str(rule.get("expr", "")), "") for rule in rules]


def used_labels(expr: str, legend: str) -> set[str]:
    labels: set[str] = set()
    for group in GROUPING.findall(expr):
        labels.update(name.strip() for name in group.split(",") if name.strip())
    for selector in SELECTOR.findall(expr):
        labels.update(MATCHER.findall(selector))
    labels.update(LEGEND.findall(legend))
    return labels


def check_exprs(exprs: list[tuple[str, str, str]], exported: dict[str, set[str]]) -> list[str]:
    problems = []
    for where, expr, legend in exprs:
        names = set(METRIC.findall(expr))
        for name in sorted(names - exported.keys()):
            problems.append(f"{where}: {name} is not exported by the daemon")
        if "histogram_quantile" in expr:
            for name in sorted(names):
                if not name.endswith("_bucket"):
                    problems.append(f"{where}: histogram_quantile over {name}, not a _bucket")
        for name in RATE_OF.findall(expr):
            if not name.endswith(("_total", "_bucket", "_sum", "_count")):
                problems.append(f"{where}: rate/increase of {name}, which is not a counter")
        allowed = set(TARGET_LABELS)
        for name in names & exported.keys():
            allowed |= exported[name]
        for label in sorted(used_labels(expr, legend) - allowed):
            problems.append(f"{where}: label {label!r} is not a label of {sorted(names)}")
    return problems


def test_exported_names_look_like_prometheus_client(exported: dict[str, set[str]]) -> None:
    # guards the fixture itself: labelled series and the stages' metrics are there
    assert "mailflow_messages_total" in exported
    assert "mailflow_stage_duration_seconds_bucket" in exported
    assert "mailflow_cases_total" in exported
    assert "mailflow_acks_suppressed_total" in exported
    assert exported["mailflow_stage_duration_seconds_bucket"] >= {"stage", "le"}


def test_dashboard_uses_only_exported_metrics(dashboard: dict[str, Any],
                                              exported: dict[str, set[str]]) -> None:
    exprs = dashboard_exprs(dashboard)
    assert exprs, "the dashboard has no queries"
    problems = check_exprs(exprs, exported)
    assert not problems, "\n".join(problems)


def test_alerts_use_only_exported_metrics(alert_rules: list[dict[str, Any]],
                                          exported: dict[str, set[str]]) -> None:
    problems = check_exprs(alert_exprs(alert_rules), exported)
    assert not problems, "\n".join(problems)


def test_alert_rules_are_well_formed(alert_rules: list[dict[str, Any]]) -> None:
    assert alert_rules, f"{ALERTS.name} has no rules"
    names = [rule.get("alert") for rule in alert_rules]
    assert len(names) == len(set(names)), f"duplicate alert names: {names}"
    for rule in alert_rules:
        where = f"{ALERTS.name}: rule {rule.get('alert')!r}"
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels",
                             "annotations"}, f"{where}: unknown keys {sorted(rule)}"
        assert isinstance(rule.get("alert"), str) and re.fullmatch(
            r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"]), f"{where}: bad alert name"
        assert isinstance(rule.get("expr"), str) and METRIC.search(rule["expr"]), \
            f"{where}: expr must query a mailflow metric"
        assert re.fullmatch(r"(\d+[smhdwy])+", str(rule.get("for", ""))), \
            f"{where}: 'for' must be a duration"
        assert isinstance(rule.get("labels"), dict) and rule["labels"].get("severity") in (
            "critical", "warning", "info"), f"{where}: labels.severity missing"
        annotations = rule.get("annotations")
        assert isinstance(annotations, dict) and annotations.get("summary") \
            and annotations.get("description"), f"{where}: summary/description missing"


def test_alerts_cover_what_operations_expect(alert_rules: list[dict[str, Any]]) -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules}
    joined = "\n".join(exprs.values())
    for metric in ("mailflow_healthy", "mailflow_store_errors_total", "mailflow_outbox_pending",
                   "mailflow_outbox_failures_total", "mailflow_smtp_replies_total",
                   "mailflow_stage_failures_total", "mailflow_acks_suppressed_total"):
        assert metric in joined, f"no alert on {metric}"
    for metric in ("mailflow_scheduler_heartbeat_timestamp_seconds",
                   "mailflow_scheduler_lag_seconds", "mailflow_sla_breaches_total",
                   "mailflow_outbox_oldest_age_seconds"):
        assert metric in joined, f"no alert on {metric}"
    assert 'reason="global ceiling"' in joined
    unhealthy = next(rule for rule in alert_rules if "mailflow_healthy" in rule["expr"])
    assert re.search(r"mailflow_healthy\s*==\s*0", unhealthy["expr"])
    assert unhealthy["for"] == "2m"


def test_dashboard_is_importable(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "mailflow"
    assert dashboard["schemaVersion"] == 39
    assert any(i.get("name") == "DS_PROMETHEUS" and i.get("pluginId") == "prometheus"
               for i in dashboard.get("__inputs", []))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = [p for p in all_panels(dashboard["panels"]) if p.get("type") != "row"]
    assert len(panels) >= 10
    ids = [p["id"] for p in all_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        where = f"panel {panel.get('title')!r}"
        assert panel.get("title"), f"{where}: no title"
        assert panel.get("gridPos"), f"{where}: no gridPos"
        assert panel.get("datasource", {}).get("uid") == "${DS_PROMETHEUS}", where
        targets = panel.get("targets")
        assert targets, f"{where}: no targets"
        for target in targets:
            assert target.get("expr"), f"{where}: target without expr"
            assert target.get("datasource", {}).get("uid") == "${DS_PROMETHEUS}", where


def test_dashboard_shows_what_supervisors_asked_for(dashboard: dict[str, Any]) -> None:
    joined = "\n".join(expr for _, expr, _ in dashboard_exprs(dashboard))
    for needle in ("mailflow_messages_total", "mailflow_smtp_replies_total",
                   "mailflow_acks_total", "mailflow_acks_suppressed_total",
                   "mailflow_cases_total", "mailflow_duplicates_total",
                   "mailflow_priority_total", "mailflow_routed_total",
                   "mailflow_outbox_pending", "mailflow_outbox_failures_total",
                   "mailflow_message_duration_seconds_bucket",
                   "mailflow_relay_duration_seconds_bucket",
                   "mailflow_stage_duration_seconds_bucket",
                   "mailflow_stage_failures_total", "mailflow_store_errors_total",
                   "mailflow_healthy", "mailflow_smtp_sessions",
                   # what supervisors act on (issue 13)
                   "mailflow_first_response_seconds_bucket", "mailflow_response_seconds_bucket",
                   "mailflow_first_responses_total", "mailflow_sla_warnings_total",
                   "mailflow_sla_breaches_total", "mailflow_agent_replies_total",
                   "mailflow_agent_response_seconds_bucket", "mailflow_escalations_total",
                   "mailflow_escalation_reminders_total", "mailflow_escalation_supervisor_total",
                   "mailflow_expert_answer_seconds_bucket", "mailflow_cases_open",
                   "mailflow_messages_by_direction_total", "mailflow_timers_due",
                   "mailflow_scheduler_lag_seconds",
                   "mailflow_scheduler_heartbeat_timestamp_seconds",
                   "mailflow_outbox_oldest_age_seconds"):
        assert needle in joined, f"the dashboard does not show {needle}"
    # every daemon on a shared database exports the same open-case figure: never summed
    # across daemons
    for _, expr, _ in dashboard_exprs(dashboard):
        if "mailflow_cases_open{" in expr:
            assert "max without (instance, job) (mailflow_cases_open{" in expr, expr
    # the success rate: in time over the first responses that had a deadline
    assert 'in_time="yes"' in joined and 'in_time=~"yes|no"' in joined


def test_every_panel_says_what_it_answers(dashboard: dict[str, Any]) -> None:
    for panel in all_panels(dashboard["panels"]):
        if panel.get("type") != "row" and panel["id"] > 28:  # the supervisors' panels
            assert "?" in panel.get("description", ""), panel["title"]
