"""Who may import whom: the layering the design relies on, read from the code's imports.

- The framework (SMTP side, reception, pipeline, chain, scheduler, daemon, store…)
  imports no customer-service module: those come in as plugins, through hooks,
  services and events, so a third-party stage can stand in for any of them.
- A stage never imports another stage's module: stages meet through services
  (:mod:`mailflow.services`) and case events (:mod:`mailflow.events`).
- Whether a message is automatic is decided once, by the rules' detector, before
  the chain: no stage and no customer-service module imports the detector (they
  read ``ctx.automatic``; an address a message names is checked through
  ``env.automatic``).
- No module over about 400 lines.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "mailflow"

#: the customer-service parts: the built-in stages and what only they use
CUSTOMER_SERVICE = ("mailflow.stages", "mailflow.cases", "mailflow.acks", "mailflow.deadlines",
                    "mailflow.escalation", "mailflow.stats", "mailflow.report",
                    "mailflow.sla_timers", "mailflow.agents", "mailflow.presence",
                    "mailflow.answers", "mailflow.account_managers")
#: what may use anything: the commands and tools (replay shows the report's page), and
#: the test helpers of plugin authors
ANYTHING = ("mailflow.cli", "mailflow.testing", "mailflow.replay")
DETECTOR = ("mailflow.automatic", "mailflow.robots", "mailflow.autoreply")
#: where the detector is built, asked (once per message) and its verdict carried
DETECTOR_USERS = ("mailflow.automatic", "mailflow.facts", "mailflow.context",
                  "mailflow.direction", "mailflow.stage", "mailflow.chain", "mailflow.rules",
                  "mailflow.runtime",
                  "mailflow.plugin")  # the public surface names the verdict's type
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield module_name(path), path


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports (``from mailflow import cases`` counts as
    ``mailflow.cases``), at any depth of the file, type-checking imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_framework_imports_no_customer_service_module() -> None:
    wrong = {name: sorted(i for i in imports(path) if within(i, CUSTOMER_SERVICE))
             for name, path in modules()
             if not within(name, CUSTOMER_SERVICE + ANYTHING)}
    wrong = {name: found for name, found in wrong.items() if found}
    assert not wrong, wrong


def test_no_stage_imports_another_stage() -> None:
    wrong = {}
    for name, path in modules():
        if name.startswith("mailflow.stages."):
            others = {i for i in imports(path)
                      if i.startswith("mailflow.stages.") and not within(i, (name,))}
            if others:
                wrong[name] = sorted(others)
    assert not wrong, wrong


def test_only_the_reception_reaches_the_automatic_detector() -> None:
    wrong = {name: sorted(i for i in imports(path) if within(i, DETECTOR))
             for name, path in modules() if not within(name, DETECTOR_USERS + ANYTHING)}
    wrong = {name: found for name, found in wrong.items() if found}
    assert not wrong, wrong


@pytest.mark.parametrize(("name", "path"), list(modules()), ids=[n for n, _ in modules()])
def test_no_module_is_too_long(name: str, path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines (split it by concept)"


def test_the_checks_see_the_imports() -> None:
    """The walk finds real imports (a check that sees nothing proves nothing)."""
    escalate = imports(PACKAGE / "stages" / "escalate.py")
    assert "mailflow.cases" in escalate and "mailflow.services.TEAMS" in escalate
    assert within("mailflow.stages.route", CUSTOMER_SERVICE)
    assert "mailflow.automatic" in imports(PACKAGE / "facts.py") or "mailflow.automatic.verdict" \
        in imports(PACKAGE / "facts.py")
