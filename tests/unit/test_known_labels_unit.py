"""Series that start at zero: the metric factory's declarations, what the framework and the
built-in stages declare for the shipped rules, and that they are the values the code
counts with (read from its source, so a new reason or kind not declared fails here).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry

from conftest import FULL_CHAIN, REPO, full_chain_rules
from mailflow.acks import SUPPRESSED
from mailflow.config import load_settings
from mailflow.hookspecs import hookimpl
from mailflow.known_labels import OUTBOX_KINDS, REFUSALS, declared_labels
from mailflow.metrics import KnownLabels, MetricFactory, Metrics
from mailflow.runtime import Runtime, load_runtime
from mailflow.stats.upkeep import Upkeep
from mailflow.values import Verdict

SRC = REPO / "src" / "mailflow"
LABELS_PLUGIN = REPO / "tests" / "fixtures" / "labels_plugin"


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for family in registry.collect()
            for s in family.samples if s.name == name}


def runtime_of(tmp_path: Path, factory: MetricFactory, chain: str = FULL_CHAIN,
               config: dict[str, Any] | None = None,
               plugins: Iterable[tuple[str, object]] = (), **sections: Any) -> Runtime:
    rules = full_chain_rules(tmp_path / "rules", chain, **sections)
    settings = load_settings(None, {"rules": str(rules), "state_dir": str(tmp_path / "state"),
                                    **(config or {})})
    return load_runtime(settings, factory, plugins=list(plugins))


def no_host(plugin: str) -> Any:
    """The host a plugin's hook gets: these plugins read only their options."""
    return None


def daemon_factory() -> tuple[MetricFactory, Metrics]:
    """A factory as the daemon's: the framework's metrics adopted."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    factory = MetricFactory(registry)
    factory.adopt(vars(metrics).values())
    return factory, metrics


def test_declarations_add_up_label_by_label_and_reach_metrics_made_later() -> None:
    factory = MetricFactory()
    factory.counter("mailflow_sent_total", "", ["kind", "outcome"])
    # one party knows the kinds, another the outcomes: the series are every combination
    assert factory.declare([KnownLabels.of("mailflow_sent_total", kind=["ack"]),
                            KnownLabels.of("mailflow_sent_total", outcome=["retry", "failed"]),
                            KnownLabels.of("mailflow_sent_total", kind=["ack", "reminder"]),
                            KnownLabels.of("mailflow_later_total", reason=["late"])]) == []
    assert samples(factory.registry, "mailflow_sent_total") == {
        (("kind", k), ("outcome", o)): 0.0 for k in ("ack", "reminder")
        for o in ("retry", "failed")}
    assert factory.known("mailflow_sent_total") == {"kind": ("ack", "reminder"),
                                                    "outcome": ("retry", "failed")}
    # a metric made after its declaration gets its series when it is made
    assert samples(factory.registry, "mailflow_later_total") == {}
    factory.counter("mailflow_later_total", "", ["reason"]).labels(reason="other").inc()
    assert samples(factory.registry, "mailflow_later_total") == {
        (("reason", "late"),): 0.0, (("reason", "other"),): 1.0}
    # declared again (a reload): what was counted stays
    factory.declare([KnownLabels.of("mailflow_later_total", reason=["late", "new"])])
    assert samples(factory.registry, "mailflow_later_total")[(("reason", "other"),)] == 1.0
    assert (("reason", "new"),) in samples(factory.registry, "mailflow_later_total")


def test_a_label_the_metric_has_not_is_reported_not_raised() -> None:
    factory = MetricFactory()
    factory.counter("mailflow_one_total", "", ["kind", "outcome"])
    factory.counter("mailflow_plain_total", "")
    problems = factory.declare([KnownLabels.of("mailflow_one_total", kind=["a"]),
                                KnownLabels.of("mailflow_plain_total", kind=["a"])])
    assert len(problems) == 2 and problems[0].startswith("mailflow_one_total: "), problems
    assert samples(factory.registry, "mailflow_one_total") == {}


def test_the_framework_metrics_are_declared_by_name() -> None:
    factory, _ = daemon_factory()
    assert factory.declare([KnownLabels.of("mailflow_messages_total", verdict=["deliver"]),
                            KnownLabels.of("mailflow_outbox_failures_total", kind=["ack"],
                                           outcome=["retry"])]) == []
    assert samples(factory.registry, "mailflow_messages_total") == {
        (("verdict", "deliver"),): 0.0}
    assert samples(factory.registry, "mailflow_outbox_failures_total") == {
        (("kind", "ack"), ("outcome", "retry")): 0.0}


def test_the_shipped_rules_declare_every_route_priority_reason_and_kind(tmp_path: Path) -> None:
    factory, _ = daemon_factory()
    with_answers = FULL_CHAIN.replace("acknowledge,", "acknowledge, answers,")
    runtime = runtime_of(tmp_path, factory, with_answers)
    Upkeep(SimpleNamespace(store=None, metrics=factory))  # type: ignore[arg-type]  # its gauge
    declared = list(declared_labels(runtime, no_host))
    assert factory.declare(declared) == []
    made = set(factory._made)
    assert {k.metric for k in declared} <= made, {k.metric for k in declared} - made
    routes = ("accueil", "sav", "sales", "billing", "support", "legal", "account-manager")
    levels = ("urgent", "high", "normal", "low")
    assert factory.known("mailflow_routed_total") == {"route": routes}
    for name in ("mailflow_sla_breaches_total", "mailflow_first_response_seconds"):
        assert factory.known(name) == {"route": routes, "priority": levels}, name
    assert factory.known("mailflow_cases_open")["status"] == ("open",)
    assert factory.known("mailflow_escalations_total") == {"rule": ("legal-notice",)}
    assert set(factory.known("mailflow_agent_replies_total")["agent"]) >= {
        "alice", "bruno", "chloe", "lea.garnier", "other"}
    assert factory.known("mailflow_stage_duration_seconds")["stage"] == runtime.chain.names
    assert set(factory.known("mailflow_timers_fired_total")["kind"]) == set(
        runtime.timer_handlers)
    # every outbox kind the code writes is among those declared (read from the source)
    assert written_kinds() <= set(factory.known("mailflow_outbox_sent_total")["kind"]), \
        written_kinds() - set(factory.known("mailflow_outbox_sent_total")["kind"])


def test_without_route_and_prioritise_the_statistics_know_none(tmp_path: Path) -> None:
    factory, _ = daemon_factory()
    runtime = runtime_of(tmp_path, factory, "chain: [number, statistics]\n")
    assert factory.declare(declared_labels(runtime, no_host)) == []
    assert factory.known("mailflow_first_responses_total") == {
        "route": ("none",), "priority": ("none",), "in_time": ("yes", "no", "none")}


def test_a_plugin_hook_and_a_third_party_stage_declare_theirs(tmp_path: Path) -> None:
    factory, _ = daemon_factory()

    class Broken:  # a plugin whose declaration fails: logged, the others still apply
        @staticmethod
        @hookimpl
        def mailflow_known_labels() -> Iterable[KnownLabels]:
            raise RuntimeError("boom")

    runtime = runtime_of(tmp_path, factory, FULL_CHAIN.replace("]", ", fixture_seen]"),
                         config={"plugin_dirs": [str(LABELS_PLUGIN)]},
                         plugins=[("broken", Broken())],
                         fixture_refusals={"reasons": ["listed", "late"]},
                         fixture_seen={"kinds": ["plain", "html"]})
    declared = list(declared_labels(runtime, no_host))
    assert factory.declare(declared) == []
    assert factory.known("mailflow_fixture_seen_total") == {"kind": ("plain", "html")}
    assert samples(factory.registry, "mailflow_fixture_seen_total") == {
        (("kind", "plain"),): 0.0, (("kind", "html"),): 0.0}
    # the hook's counter is made by the plugin's startup, after the declaration
    assert factory.known("mailflow_fixture_refusals_total") == {"reason": ("listed", "late")}
    factory.counter("mailflow_fixture_refusals_total", "", ["reason"])
    assert len(samples(factory.registry, "mailflow_fixture_refusals_total")) == 2


# -- the values declared are those the code counts with --------------------------------


def constants(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)}


def parsed(relative: str) -> ast.Module:
    return ast.parse((SRC / relative).read_text(encoding="utf-8"))


def written_kinds() -> set[str]:
    """The kinds of the mail the code writes: ``write(..., kind="…")``,
    ``OutgoingMail("…", …)`` and the SLA notices' ``_mail(…, "sla-…", …)``."""
    kinds: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name == "write":
                kinds |= {k.value.value for k in node.keywords if k.arg == "kind"
                          and isinstance(k.value, ast.Constant)}
            elif name == "OutgoingMail" and node.args:
                kinds |= constants(node.args[0])
            elif name == "_mail":
                kinds |= {c for arg in node.args for c in constants(arg) if c.startswith("sla-")}
    assert {"ack", "bounce", "relay", "escalation", "sla-breach"} <= kinds, kinds
    return kinds


def test_the_refusals_declared_are_those_the_smtp_side_counts() -> None:
    text = (SRC / "smtp_handler.py").read_text(encoding="utf-8")
    counted = set(re.findall(r'_refused\("(\w+)"', text)) | set(
        re.findall(r'rejections\.labels\(reason="(\w+)"\)', text))
    assert len(counted) >= 7 and counted <= set(REFUSALS), counted - set(REFUSALS)


def test_the_verdicts_declared_are_those_the_pipeline_counts(tmp_path: Path) -> None:
    counted = {c for node in ast.walk(parsed("pipeline.py")) if isinstance(node, ast.Call)
               and getattr(node.func, "id", "") == "Outcome" and len(node.args) == 2
               for c in constants(node.args[1])}
    factory, _ = daemon_factory()
    factory.declare(declared_labels(runtime_of(tmp_path, factory), no_host))
    declared = set(factory.known("mailflow_messages_total")["verdict"])
    assert {"deliver", "rejected-downstream", "tempfail-downstream"} <= counted <= declared
    assert {v.value for v in Verdict} <= declared


def test_the_acknowledgement_reasons_declared_are_those_the_stage_gives() -> None:
    given: set[str] = set()
    for node in [*ast.walk(parsed("stages/acknowledge.py")), *ast.walk(parsed("acks.py"))]:
        if isinstance(node, ast.FunctionDef) and node.name in (
                "_static_reason", "_limit_reason", "not_to_write", "limit_reason"):
            given |= {text for r in ast.walk(node) if isinstance(r, ast.Return | ast.Assign)
                      for text in [reason_text(r.value)] if text}
    labels = {reason.split(" (")[0].split(":")[0] for reason in given}  # as _suppress makes
    labels.discard("no case")  # a chain without `number` before it: a mistake, not a reason
    assert len(labels) >= 7 and labels <= set(SUPPRESSED), labels - set(SUPPRESSED)


def reason_text(node: ast.expr | None) -> str:
    """A reason's text as written: a string, or an f-string's leading words."""
    if isinstance(node, ast.JoinedStr) and node.values:
        node = node.values[0]
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""


def test_the_reply_outcomes_declared_are_those_the_stage_counts(tmp_path: Path) -> None:
    counted = {k.value.value for node in ast.walk(parsed("stages/replies.py"))
               if isinstance(node, ast.Call) for k in node.keywords
               if k.arg == "outcome" and isinstance(k.value, ast.Constant)}
    factory, _ = daemon_factory()
    factory.declare(declared_labels(runtime_of(tmp_path, factory), no_host))
    assert counted == set(factory.known("mailflow_replies_total")["outcome"])
    assert set(OUTBOX_KINDS) <= written_kinds()
