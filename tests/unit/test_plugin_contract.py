"""The plugin contract: registration hooks, rules sections, per-plugin SMTP options,
timer handlers by kind, and the Host facade."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pluggy
import pytest

from mailflow import hookspecs
from mailflow.config import ConfigError, Model, load_settings
from mailflow.context import TimerContext
from mailflow.host import DaemonHost, Host
from mailflow.metrics import MetricFactory
from mailflow.plugins import call_each, collect_sections, collect_stages, collect_timer_handlers
from mailflow.runtime import load_runtime
from mailflow.session import SessionInfo, SmtpReply
from mailflow.testing import make_rules

REPO = Path(__file__).resolve().parents[2]
LIFECYCLE_DIR = REPO / "tests" / "fixtures" / "lifecycle_plugin"


def manager(*plugins: tuple[object, str]) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for plugin, name in plugins:
        pm.register(plugin, name=name)
    return pm


class AsyncStages:
    @hookspecs.hookimpl
    async def mailflow_stages(self) -> list[Any]:
        return []


def test_async_mailflow_stages_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError) as caught:
        collect_stages(manager((AsyncStages(), "async-plugin")))
    assert "async-plugin: mailflow_stages must be a plain function" in str(caught.value)


class Options(Model):
    word: str = "none"


class Claims:
    def __init__(self, section: str, answer: int) -> None:
        self.section, self.answer = section, answer

    @hookspecs.hookimpl
    def mailflow_rules_section(self) -> tuple[str, type[Model]]:
        return self.section, Options

    @hookspecs.hookimpl
    def mailflow_mail_from(self, address: str, options: Options) -> SmtpReply | None:
        if address == options.word:
            return SmtpReply(self.answer, f"refused by {options.word}")
        return None


def test_each_plugin_gets_its_own_section_as_options() -> None:
    pm = manager((Claims("one", 550), "first"), (Claims("two", 450), "second"))
    assert collect_sections(pm) == {"first": ("one", Options), "second": ("two", Options)}
    options = {"first": Options(word="a@x.test"), "second": Options(word="b@x.test")}
    session = SessionInfo(peer="192.0.2.1")

    async def ask(address: str) -> list[Any]:
        return await call_each(pm, "mailflow_mail_from", options, host=None, session=session,
                               address=address)

    assert [str(r) for r in asyncio.run(ask("a@x.test")) if r] == ["550 5.0.0 refused by a@x.test"]
    assert [str(r) for r in asyncio.run(ask("b@x.test")) if r] == ["450 4.0.0 refused by b@x.test"]
    assert asyncio.run(ask("c@x.test")) == [None, None]


def test_a_plugin_section_is_validated_at_load_with_its_position(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "chain.yaml").write_text("chain: [headers]\nlocal_domains: [example.com]\n",
                                      encoding="utf-8")
    (rules / "lifecycle.yaml").write_text("lifecycle:\n  refuse: 3\n  colour: red\n",
                                          encoding="utf-8")
    settings = load_settings(None, {"rules": str(rules), "state_dir": str(tmp_path / "s")})
    settings = settings.model_copy(update={"plugin_dirs": (str(LIFECYCLE_DIR),)})
    with pytest.raises(ConfigError) as caught:
        load_runtime(settings)
    text = str(caught.value)
    assert f"{rules / 'lifecycle.yaml'}:2:11: 'refuse': input should be a valid tuple" in text, text
    assert f"{rules / 'lifecycle.yaml'}:3:3: unknown setting 'colour'" in text, text
    (rules / "lifecycle.yaml").write_text("lifecycle:\n  refuse: [x@y.test]\n", encoding="utf-8")
    runtime = load_runtime(settings)
    (options,) = runtime.plugin_options.values()
    assert options.refuse == ("x@y.test",)  # type: ignore[attr-defined]


async def _remind(ctx: TimerContext) -> None:
    del ctx


class Timers:
    def __init__(self, *kinds: str) -> None:
        self.kinds = kinds

    @hookspecs.hookimpl
    def mailflow_timer_handlers(self) -> dict[str, Any]:
        return dict.fromkeys(self.kinds, _remind)


def test_timer_handlers_are_registered_by_kind_once() -> None:
    handlers = collect_timer_handlers(manager((Timers("remind", "close"), "a")))
    assert handlers == {"remind": _remind, "close": _remind}
    with pytest.raises(ConfigError) as caught:
        collect_timer_handlers(manager((Timers("remind"), "a"), (Timers("remind"), "b")))
    assert "timer kind 'remind' is already handled by" in str(caught.value)


def test_the_daemon_host_is_a_host() -> None:
    from mailflow.config import Settings
    from mailflow.store import open_store

    rules = make_rules()
    host = DaemonHost(settings=Settings(), store=open_store("sqlite:///unused.sqlite3"),
                      metrics=MetricFactory(), rules=lambda: rules).for_plugin("vip")
    assert isinstance(host, Host)
    assert host.rules is rules and host.worker == 0
    assert host.metrics.counter("mailflow_vip_total", "x") is host.metrics.counter(
        "mailflow_vip_total", "x")
