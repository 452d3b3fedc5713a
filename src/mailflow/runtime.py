"""Everything that a reload replaces at once: settings, rules, plugins, chain.

Built whole before it is swapped in, so a bad reload never leaves the
daemon half-configured: the running Runtime stays until a new one is ready.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pluggy
import structlog

from mailflow.automatic import AutomaticDetector
from mailflow.chain import Chain, build_chain
from mailflow.clock import SYSTEM_CLOCK, Clock
from mailflow.config import ConfigError, Model, Problem, Settings, validate
from mailflow.context import TimerHandler
from mailflow.metrics import MetricFactory
from mailflow.plugins import (
    collect_schemas,
    collect_sections,
    collect_stages,
    collect_timer_handlers,
    get_plugin_manager,
)
from mailflow.rules import RuleSet, load_rules
from mailflow.stage import Stage, StageEnv
from mailflow.store.schema import Schema

log = structlog.get_logger("mailflow.runtime")


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    rules: RuleSet
    pm: pluggy.PluginManager
    stages: dict[str, type[Stage[Any]]]
    chain: Chain
    #: plugin name -> its validated rules section (for its SMTP hooks' ``options``)
    plugin_options: Mapping[str, Model] = field(default_factory=dict)
    timer_handlers: Mapping[str, TimerHandler] = field(default_factory=dict)
    #: timer kind -> the plugin whose handler fires it (its host and options go along)
    timer_owners: Mapping[str, str] = field(default_factory=dict)
    #: every owner's tables (core, built-in stages, plugins), migrated when the store opens
    schemas: tuple[Schema, ...] = ()

    @property
    def warnings(self) -> tuple[Problem, ...]:
        """What the rules allow but deserve a word about: a deprecated key, an address
        that looks like a typo."""
        return (*self.rules.warnings, *self.chain.warnings)

    def log_warnings(self) -> None:
        """The warnings, in the log."""
        for warning in self.warnings:
            log.warning("rules_warning", at=f"{warning.file}:{warning.line}:{warning.column}",
                        warning=warning.message)

    @property
    def plugins(self) -> dict[str, object]:
        """Registered plugins by name, to tell which ones a reload added or removed."""
        return {name: plugin for name, plugin in self.pm.list_name_plugin() if plugin}


def load_runtime(settings: Settings, metrics: MetricFactory | None = None,
                 clock: Clock = SYSTEM_CLOCK,
                 plugins: Sequence[tuple[str, object]] = ()) -> Runtime:
    """Load rules and plugins for ``settings`` and build the chain; raises ConfigError.

    ``metrics`` is where stages register their metrics (a throwaway registry
    for ``check`` and ``try``); ``plugins``: (name, plugin) pairs registered besides
    what the settings enable (a plugin's own tests).
    """
    rules = load_rules(settings.rules)
    pm = get_plugin_manager(settings, plugins, rules)
    stages = collect_stages(pm)
    sections = collect_sections(pm)
    owners: dict[str, str] = {}
    handlers = collect_timer_handlers(pm, owners)
    schemas = tuple(collect_schemas(pm))
    env = StageEnv(rules=rules, settings=settings, metrics=metrics or MetricFactory(),
                   clock=clock, automatic=AutomaticDetector(rules.automatic))
    problems: list[Problem] = []
    options = _plugin_options(rules, sections, problems)
    try:
        chain = build_chain(rules, stages, env, settings.chain_timeout,
                            claimed={name for name, _ in sections.values()})
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems:  # a section a stage and its plugin's SMTP hooks share: each mistake once
        raise ConfigError(list(dict.fromkeys(problems)))
    env.terms.build()  # all stages registered their terms: one automaton for all
    return Runtime(settings, rules, pm, stages, chain, options, handlers, owners, schemas)


def _plugin_options(rules: RuleSet, sections: Mapping[str, tuple[str, type[Model]]],
                    problems: list[Problem]) -> dict[str, Model]:
    """Each claimed section validated with its plugin's model (defaults when absent)."""
    options: dict[str, Model] = {}
    for plugin, (name, model) in sections.items():
        section = rules.section(name)
        try:
            if section is None:
                options[plugin] = validate(model, {}, str(rules.directory))
            else:
                options[plugin] = validate(model, section.data, section.file, section.tree,
                                           prefix=(name,))
        except ConfigError as exc:
            problems.extend(exc.problems)
    return options
