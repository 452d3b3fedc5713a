"""Finding plugins and calling their hooks.

Three sources, one mechanism (``pm.register``): the built-in stage modules
(``DEFAULT_PLUGINS``), installed packages of entry-point group
``mailflow.plugins`` *named in the configuration* (installing a package must
not silently change how mail is handled), and single ``.py`` files in the
``plugin_dirs`` a sysadmin drops them into.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Iterable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from mailflow import hookspecs
from mailflow.config import ConfigError, Problem, Settings
from mailflow.stage import Stage

ENTRY_POINT_GROUP = "mailflow.plugins"

#: Built-in stages: registered exactly like third-party plugins.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "mailflow.stages.number",
    "mailflow.stages.deduplicate",
    "mailflow.stages.prioritise",
    "mailflow.stages.route",
    "mailflow.stages.acknowledge",
    "mailflow.stages.headers",
)


def _builtin_modules() -> Iterable[ModuleType]:
    return (importlib.import_module(name) for name in DEFAULT_PLUGINS)


def get_plugin_manager(settings: Settings) -> pluggy.PluginManager:
    """Build a plugin manager for ``settings``: built-ins, named entry points, plugin dirs."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for module in _builtin_modules():
        pm.register(module, name=module.__name__)
    problems: list[Problem] = []
    _load_entry_points(pm, settings.plugins, settings.source, problems)
    for directory in settings.plugin_dirs:
        _load_plugin_dir(pm, Path(directory), settings.source, problems)
    if problems:
        raise ConfigError(problems)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ConfigError([Problem(settings.source, 0, 0, f"plugin error: {exc}")]) from None
    return pm


def _load_entry_points(pm: pluggy.PluginManager, wanted: Sequence[str], source: str,
                       problems: list[Problem]) -> None:
    available = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for name in wanted:
        ep = available.get(name)
        if ep is None:
            known = ", ".join(sorted(available)) or "none installed"
            problems.append(Problem(source, 0, 0,
                                    f"plugin '{name}' is not installed (installed: {known})"))
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must be reported, not crash the check
            problems.append(Problem(source, 0, 0, f"plugin '{name}' failed to load: {exc!r}"))
            continue
        pm.register(plugin, name=f"entrypoint:{name}")


def _load_plugin_dir(pm: pluggy.PluginManager, directory: Path, source: str,
                     problems: list[Problem]) -> None:
    if not directory.is_dir():
        problems.append(Problem(source, 0, 0, f"plugin folder '{directory}' not found"))
        return
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith(("_", ".")) or not path.is_file():
            continue
        module_name = f"mailflow_plugin_dir.{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            problems.append(Problem(str(path), 0, 0, "cannot be loaded as a Python module"))
            continue
        module = importlib.util.module_from_spec(spec)
        try:
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(module_name, None)
            problems.append(Problem(str(path), 0, 0, f"plugin failed to load: {exc!r}"))
            continue
        pm.register(module, name=f"file:{path}")


async def call_hook(caller: Any, **kwargs: Any) -> list[Any]:
    """Call every implementation of a hook and await those that returned awaitables.

    The one place where sync and async implementations meet, so no call
    site can forget to await a coroutine.
    """
    results = caller(**kwargs)
    return [await r if inspect.isawaitable(r) else r for r in results]


def collect_stages(pm: pluggy.PluginManager) -> dict[str, type[Stage]]:
    """Every stage class provided through ``mailflow_stages``, by name.

    Built-ins are registered first, so a third-party stage of the same name
    replaces the built-in.
    Two third-party stages with one name are an error.
    """
    found: dict[str, tuple[type[Stage], str]] = {}
    problems: list[Problem] = []
    for impl in pm.hook.mailflow_stages.get_hookimpls():  # registration order
        provided: Iterable[object] = impl.function() or ()  # type: ignore[assignment]
        for stage in provided:
            if not (isinstance(stage, type) and issubclass(stage, Stage) and stage.name):
                problems.append(Problem(impl.plugin_name, 0, 0,
                                        f"{stage!r} is not a Stage subclass with a name"))
                continue
            previous = found.get(stage.name)
            if previous and not previous[1].startswith("mailflow.stages."):
                problems.append(Problem(impl.plugin_name, 0, 0,
                                        f"stage '{stage.name}' is also provided by {previous[1]}"))
                continue
            found[stage.name] = (stage, impl.plugin_name)
    if problems:
        raise ConfigError(problems)
    return {name: cls for name, (cls, _) in found.items()}
