"""The subcommands plugins add (``mailflow_commands``), found through ``--config``.

The plugins a configuration enables are known only once it is read, so the
command line reads ``--config`` (and the options that change which settings
apply) before it builds its parser; a configuration that does not load leaves
the built-in commands working (``mailflow check`` then says what is wrong).
A plugin's command runs with its host: the daemon's settings and rules, the
store open (with every owner's tables), the clock, a logger; and its rules
section as ``options`` when it asks for them.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
from typing import Any

from mailflow.cli.options import add_common, existing_store_url, settings_from
from mailflow.config import ConfigError, Problem
from mailflow.host import Command, DaemonHost
from mailflow.metrics import MetricFactory


def enabled_commands(argv: list[str], builtin: set[str]) -> dict[str, tuple[str, Command]]:
    """name -> (plugin, command) of the enabled plugins' commands; none when the
    configuration does not load."""
    peek = argparse.ArgumentParser(add_help=False)
    add_common(peek)
    known, _ = peek.parse_known_args(argv)
    try:
        from mailflow.plugins import get_plugin_manager

        pm = get_plugin_manager(settings_from(known))
    except ConfigError:
        return {}
    return collect_commands(pm, builtin)


def collect_commands(pm: Any, builtin: set[str]) -> dict[str, tuple[str, Command]]:
    """name -> (plugin, command), each name once; a clash is a configuration error."""
    found: dict[str, tuple[str, Command]] = {}
    problems: list[Problem] = []
    for impl in pm.hook.mailflow_commands.get_hookimpls():
        for command in impl.function() or ():
            if not isinstance(command, Command):
                problems.append(Problem(impl.plugin_name, 0, 0,
                                        f"mailflow_commands: {command!r} is not a Command"))
            elif command.name in builtin or command.name in found:
                owner = "mailflow" if command.name in builtin else found[command.name][0]
                problems.append(Problem(impl.plugin_name, 0, 0, f"command '{command.name}'"
                                        f" is already mailflow's or {owner}'s"))
            else:
                found[command.name] = (impl.plugin_name, command)
    if problems:
        raise ConfigError(problems)
    return found


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                commands: dict[str, tuple[str, Command]]) -> None:
    for name, (plugin, command) in commands.items():
        parser = sub.add_parser(name, help=f"{command.help} (plugin {plugin})")
        add_common(parser)
        command.arguments(parser)


def run(args: argparse.Namespace, plugin: str, command: Command) -> int:
    """Run a plugin's command with what it asks for (``args``, ``host``, ``options``)."""
    from mailflow.runtime import load_runtime
    from mailflow.store import open_store

    settings = settings_from(args)
    runtime = load_runtime(settings)

    async def go() -> int:
        store = open_store(existing_store_url(settings))
        await store.open(runtime.schemas)
        try:
            host = DaemonHost(settings=settings, store=store, metrics=MetricFactory(),
                              rules=lambda: runtime.rules).for_plugin(plugin)
            given = {"args": args, "host": host, "options": runtime.plugin_options.get(plugin)}
            wanted = inspect.signature(command.run).parameters
            result = command.run(**{name: given[name] for name in wanted if name in given})
            if inspect.isawaitable(result):
                result = await result
            return int(result or 0)
        finally:
            await store.close()

    return asyncio.run(go())
