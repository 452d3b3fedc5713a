"""Everything that a reload replaces at once: settings, rules, plugins, chain.

Built whole before it is swapped in, so a bad reload never leaves the
daemon half-configured: the running Runtime stays until a new one is ready.
"""

from __future__ import annotations

from dataclasses import dataclass

import pluggy

from mailflow.chain import Chain, build_chain
from mailflow.config import Settings
from mailflow.metrics import MetricFactory
from mailflow.plugins import collect_stages, get_plugin_manager
from mailflow.rules import RuleSet, load_rules
from mailflow.stage import Stage, StageEnv


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    rules: RuleSet
    pm: pluggy.PluginManager
    stages: dict[str, type[Stage]]
    chain: Chain


def load_runtime(settings: Settings, metrics: MetricFactory | None = None) -> Runtime:
    """Load rules and plugins for ``settings`` and build the chain; raises ConfigError.

    ``metrics`` is where stages register their metrics (a throwaway registry
    for ``check`` and ``try``).
    """
    rules = load_rules(settings.rules)
    pm = get_plugin_manager(settings)
    stages = collect_stages(pm)
    env = StageEnv(rules=rules, settings=settings, metrics=metrics or MetricFactory())
    chain = build_chain(rules, stages, env, settings.chain_timeout)
    env.terms.build()  # all stages registered their terms: one automaton for all
    return Runtime(settings, rules, pm, stages, chain)
