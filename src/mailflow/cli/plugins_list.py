"""``mailflow plugins``: every installed plugin, enabled or not, and what it brings.

The built-in stages, the packages of entry-point group ``mailflow.plugins`` (enabled
only when the configuration names them) and the files of ``plugin_dirs``; for each:
its stages (and whether the chain runs them), rules sections, tables, timer kinds,
commands, routes and housekeeping jobs, as its hooks say.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import pluggy

from mailflow.cli.options import settings_from
from mailflow.config import Settings
from mailflow.host import DaemonHost
from mailflow.metrics import MetricFactory
from mailflow.plugins import ENTRY_POINT_GROUP, get_plugin_manager
from mailflow.rules import load_rules
from mailflow.store import open_store


def _everything(settings: Settings) -> tuple[pluggy.PluginManager, set[str]]:
    """A plugin manager with every installed plugin, and the names of the enabled ones."""
    enabled = get_plugin_manager(settings)
    names = {name for name, _ in enabled.list_name_plugin()}
    wanted = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
    everything = get_plugin_manager(settings.model_copy(update={"plugins": wanted}))
    return everything, names


def describe(pm: pluggy.PluginManager, enabled: set[str], chain: tuple[str, ...],
             host_for: Callable[[str], Any]) -> list[dict[str, Any]]:
    """One entry per plugin: what each of its hooks gives."""
    found: dict[str, dict[str, Any]] = {
        name: {"plugin": name, "enabled": name in enabled, "stages": [], "sections": [],
               "tables": [], "timers": [], "commands": [], "routes": [], "housekeeping": []}
        for name, plugin in pm.list_name_plugin() if plugin is not None}

    def each(hook: str) -> list[tuple[str, Any]]:
        impls = getattr(pm.hook, hook).get_hookimpls()
        return [(impl.plugin_name, impl.function(**({"host": host_for(impl.plugin_name)}
                                                    if "host" in impl.argnames else {})))
                for impl in impls]

    for name, stages in each("mailflow_stages"):
        found[name]["stages"] += [f"{s.name}{'' if s.name in chain else ' (not in the chain)'}"
                                  for s in stages or ()]
    for name, claim in each("mailflow_rules_section"):
        if claim:
            found[name]["sections"].append(claim[0])
    for name, schemas in each("mailflow_schemas"):
        found[name]["tables"] += [s.owner for s in schemas or ()]
    for name, handlers in each("mailflow_timer_handlers"):
        found[name]["timers"] += sorted(handlers or {})
    for name, commands in each("mailflow_commands"):
        found[name]["commands"] += [c.name for c in commands or ()]
    for name, routes in each("mailflow_http_routes"):
        found[name]["routes"] += [r.path for r in routes or ()]
    for name, jobs in each("mailflow_housekeeping"):
        found[name]["housekeeping"] += [job.name for job in jobs or ()]
    return sorted(found.values(), key=lambda p: (not p["plugin"].startswith("mailflow."),
                                                 p["plugin"]))


def _lines(plugins: list[dict[str, Any]]) -> list[str]:
    lines = []
    for p in plugins:
        lines.append(f"{p['plugin']}  ({'enabled' if p['enabled'] else 'installed, not enabled'})")
        for key in ("stages", "sections", "tables", "timers", "commands", "routes",
                    "housekeeping"):
            if p[key]:
                lines.append(f"  {key:<13} {', '.join(p[key])}")
    return lines


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    pm, enabled = _everything(settings)
    rules = load_rules(settings.rules)
    store = open_store(settings.store_url, readonly=True)  # never opened: routes are built only

    def host_for(name: str) -> DaemonHost:
        return DaemonHost(settings=settings, store=store, metrics=MetricFactory(),
                          rules=lambda: rules, plugin=name)

    plugins = describe(pm, enabled, rules.chain, host_for)
    if args.json:
        print(json.dumps(plugins, indent=2))
    else:
        print("\n".join(_lines(plugins)))
    return 0


__all__ = ["describe", "run"]
