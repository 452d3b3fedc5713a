"""Finding plugins and calling their hooks.

Three sources, one mechanism (``pm.register``): the built-in stage modules
(``DEFAULT_PLUGINS``), installed packages of entry-point group
``mailflow.plugins`` *named in the configuration or the rules* (``plugins:``;
installing a package must not silently change how mail is handled), and single
``.py`` files in the ``plugin_dirs`` a sysadmin drops them into.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, cast

import pluggy

from mailflow import hookspecs
from mailflow.config import ConfigError, Model, Problem, Settings
from mailflow.context import TimerHandler
from mailflow.rules import RuleSet, load_rules
from mailflow.stage import Stage
from mailflow.store import Transaction
from mailflow.store.migrations import CORE
from mailflow.store.schema import Schema, check_schemas

ENTRY_POINT_GROUP = "mailflow.plugins"

#: Built-in stages: registered exactly like third-party plugins.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "mailflow.stages.number",
    "mailflow.stages.deduplicate",
    "mailflow.stages.prioritise",
    "mailflow.stages.route",
    "mailflow.stages.sla",
    "mailflow.stages.escalate",
    "mailflow.stages.acknowledge",
    "mailflow.stages.answers",
    "mailflow.stages.replies",
    "mailflow.stages.headers",
    "mailflow.stages.statistics",
)


def _builtin_manager() -> pluggy.PluginManager:
    """A plugin manager holding the hook contract and the built-in stages only."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    return pm


def get_plugin_manager(settings: Settings, extra: Sequence[tuple[str, object]] = (),
                       rules: RuleSet | None = None) -> pluggy.PluginManager:
    """Build a plugin manager for ``settings``: built-ins, the entry points the settings
    and the rules (``rules``, else read from ``settings.rules``) name, plugin dirs; and
    ``extra`` (name, plugin) pairs registered as they are (a plugin's own tests)."""
    pm = _builtin_manager()
    for name, plugin in extra:
        pm.register(plugin, name=name)
    problems: list[Problem] = []
    wanted = {name: Problem(settings.source, 0, 0, "") for name in settings.plugins}
    for name, where in rules_plugins(settings, rules):
        wanted.setdefault(name, where)
    _load_entry_points(pm, wanted, problems)
    for directory in settings.plugin_dirs:
        _load_plugin_dir(pm, Path(directory), settings.source, problems)
    if problems:
        raise ConfigError(problems)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ConfigError([Problem(settings.source, 0, 0, f"plugin error: {exc}")]) from None
    return pm


def rules_plugins(settings: Settings, rules: RuleSet | None = None,
                  ) -> list[tuple[str, Problem]]:
    """The plugins the rules folder enables (``plugins:``), each with where it is named;
    none when the rules do not load (what loads them says why)."""
    if rules is None:
        try:
            rules = load_rules(settings.rules)
        except ConfigError:
            return []
    section = rules.plugins_section
    return [(name, section.problem("", (index,)) if section is not None
             else Problem(str(rules.directory), 0, 0, ""))
            for index, name in enumerate(rules.plugins)]


def _load_entry_points(pm: pluggy.PluginManager, wanted: Mapping[str, Problem],
                       problems: list[Problem]) -> None:
    """Register the entry points ``wanted`` names; each problem said where it was named."""
    available = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for name, where in wanted.items():
        ep = available.get(name)
        if ep is None:
            known = ", ".join(sorted(available)) or "none installed"
            problems.append(replace(where,
                message=f"plugin '{name}' is not installed (installed: {known})"))
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must be reported, not crash the check
            problems.append(replace(where, message=f"plugin '{name}' failed to load: {exc!r}"))
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


async def call_each(pm: pluggy.PluginManager, hook: str, options: Mapping[str, object],
                    host: object, **kwargs: Any) -> list[Any]:
    """Call ``hook`` on each plugin with *its own* rules section as ``options``.

    pluggy calls every implementation with the same arguments; a plugin's
    section is its own, so the implementations are called one by one, in
    pluggy's order (last registered first, ``tryfirst``/``trylast`` honoured).
    """
    results = []
    for impl in reversed(getattr(pm.hook, hook).get_hookimpls()):
        given = {**kwargs, "options": options.get(impl.plugin_name), "host": host}
        result = impl.function(**{name: given[name] for name in impl.argnames})
        results.append(await result if inspect.isawaitable(result) else result)
    return results


async def call_one(pm: pluggy.PluginManager, hook: str, plugin_name: str,
                   **kwargs: Any) -> None:
    """Call ``hook`` of one plugin only (startup or shutdown of a plugin a reload changed)."""
    for impl in getattr(pm.hook, hook).get_hookimpls():
        if impl.plugin_name == plugin_name:
            result = impl.function(**{name: kwargs[name] for name in impl.argnames})
            if inspect.isawaitable(result):
                await result


def _sync_results(pm: pluggy.PluginManager, hook: str,
                  problems: list[Problem]) -> Iterable[tuple[str, Any]]:
    """(plugin, result) of a registration hook; an ``async`` one is a configuration error."""
    for impl in getattr(pm.hook, hook).get_hookimpls():  # registration order
        if inspect.iscoroutinefunction(impl.function):
            problems.append(Problem(impl.plugin_name, 0, 0, f"{hook} must be a plain function"
                                    " (it runs once, at load time), not 'async def'"))
            continue
        yield impl.plugin_name, impl.function()


def results(pm: pluggy.PluginManager, hook: str, **kwargs: Any) -> Iterator[tuple[str, Any]]:
    """(plugin, what it returned) of each plain implementation of ``hook``, in pluggy's
    order, each called with the arguments it names among ``kwargs``."""
    for impl in getattr(pm.hook, hook).get_hookimpls():
        yield impl.plugin_name, impl.function(**{n: kwargs[n] for n in impl.argnames})


def results_in_store(pm: pluggy.PluginManager, hook: str, tx: Transaction,
                     **kwargs: Any) -> Iterator[tuple[str, Any]]:
    """:func:`results` of a hook that reads the store in ``tx``, from the plugins whose
    tables this store has (a plugin enabled since the daemon last migrated it says
    nothing yet, rather than fail the command)."""
    present = stored_owners(tx)
    given = {"tx": tx, **kwargs}
    for impl in getattr(pm.hook, hook).get_hookimpls():
        if schema_owners(pm, impl.plugin_name) <= present:
            yield impl.plugin_name, impl.function(**{n: given[n] for n in impl.argnames})


def collect_for_host(pm: pluggy.PluginManager, hook: str,
                     host_for: Callable[[str], object]) -> list[Any]:
    """Every item each plugin's ``hook`` gives, the plugin's own host view passed in
    (``mailflow_housekeeping``, ``mailflow_http_routes``): plain functions, at load time."""
    problems: list[Problem] = []
    found: list[Any] = []
    for impl in getattr(pm.hook, hook).get_hookimpls():
        if inspect.iscoroutinefunction(impl.function):
            problems.append(Problem(impl.plugin_name, 0, 0, f"{hook} must be a plain function"
                                    " (it runs at load time), not 'async def'"))
            continue
        found.extend(impl.function(host=host_for(impl.plugin_name)) or ())
    if problems:
        raise ConfigError(problems)
    return found


def collect_sections(pm: pluggy.PluginManager) -> dict[str, tuple[str, type[Model]]]:
    """plugin name -> (rules section, model) claimed through ``mailflow_rules_section``."""
    problems: list[Problem] = []
    found: dict[str, tuple[str, type[Model]]] = {}
    for plugin, claim in _sync_results(pm, "mailflow_rules_section", problems):
        if claim is None:
            continue
        name, model = claim
        if not (isinstance(name, str) and isinstance(model, type) and issubclass(model, Model)):
            problems.append(Problem(plugin, 0, 0, "mailflow_rules_section must return"
                                    " (section name, Model subclass)"))
            continue
        found[plugin] = (name, model)
    if problems:
        raise ConfigError(problems)
    return found


def collect_timer_handlers(pm: pluggy.PluginManager,
                           owners: dict[str, str] | None = None) -> dict[str, TimerHandler]:
    """timer kind -> its one handler, from ``mailflow_timer_handlers`` (and in ``owners``,
    kind -> the plugin that handles it)."""
    problems: list[Problem] = []
    handlers: dict[str, TimerHandler] = {}
    owners = {} if owners is None else owners
    for plugin, provided in _sync_results(pm, "mailflow_timer_handlers", problems):
        for kind, handler in dict(provided or {}).items():
            if kind in owners:
                problems.append(Problem(plugin, 0, 0, f"timer kind '{kind}' is already"
                                        f" handled by {owners[kind]}"))
                continue
            handlers[kind], owners[kind] = handler, plugin
    if problems:
        raise ConfigError(problems)
    return handlers


def collect_schemas(pm: pluggy.PluginManager) -> list[Schema]:
    """Every owner's schema from ``mailflow_schemas``, the core's first, each once."""
    problems: list[Problem] = []
    schemas: list[Schema] = [CORE]
    for plugin, provided in _sync_results(pm, "mailflow_schemas", problems):
        for schema in provided or ():
            if not isinstance(schema, Schema):
                problems.append(Problem(plugin, 0, 0, f"{schema!r} is not a Schema"))
            elif schema not in schemas:
                schemas.append(schema)
    problems.extend(Problem("plugins", 0, 0, text) for text in check_schemas(schemas))
    if problems:
        raise ConfigError(problems)
    return schemas


def schema_owners(pm: pluggy.PluginManager, plugin: str) -> frozenset[str]:
    """The owners of the schemas ``plugin`` declares (``mailflow_schemas``)."""
    owners: set[str] = set()
    for impl in pm.hook.mailflow_schemas.get_hookimpls():
        if impl.plugin_name == plugin and not inspect.iscoroutinefunction(impl.function):
            declared = cast("Iterable[object]", impl.function() or ())
            owners.update(s.owner for s in declared if isinstance(s, Schema))
    return frozenset(owners)


def stored_owners(tx: Transaction) -> frozenset[str]:
    """The owners whose tables the store holds (its ``schema_versions``)."""
    return frozenset(str(owner) for owner, in tx.execute("SELECT owner FROM schema_versions"))


def builtin_schemas() -> list[Schema]:
    """The core's and the built-in stages' schemas: what a store needs without plugins."""
    return collect_schemas(_builtin_manager())


def collect_stages(pm: pluggy.PluginManager) -> dict[str, type[Stage[Any]]]:
    """Every stage class provided through ``mailflow_stages``, by name.

    Built-ins are registered first, so a third-party stage of the same name
    replaces the built-in.
    Two third-party stages with one name are an error.
    """
    found: dict[str, tuple[type[Stage[Any]], str]] = {}
    problems: list[Problem] = []
    for plugin, provided in _sync_results(pm, "mailflow_stages", problems):
        for stage in provided or ():
            if not (isinstance(stage, type) and issubclass(stage, Stage) and stage.name):
                problems.append(Problem(plugin, 0, 0,
                                        f"{stage!r} is not a Stage subclass with a name"))
                continue
            previous = found.get(stage.name)
            if previous and not previous[1].startswith("mailflow.stages."):
                problems.append(Problem(plugin, 0, 0,
                                        f"stage '{stage.name}' is also provided by {previous[1]}"))
                continue
            found[stage.name] = (stage, plugin)
    if problems:
        raise ConfigError(problems)
    return {name: cls for name, (cls, _) in found.items()}
