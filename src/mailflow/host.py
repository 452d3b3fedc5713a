"""What plugins see of the running daemon: the ``Host`` facade.

Hooks get this small, documented surface instead of the daemon object, so
the daemon's insides can change without breaking a plugin: the settings,
the store (``run_read``/``run_write``/``next_value``), a metric factory, the
clock every decision uses, a logger, the current rules (swapped whole on
reload) and the worker number of this process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import structlog

from mailflow.clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from mailflow.config import Settings
    from mailflow.metrics import MetricFactory
    from mailflow.rules import RuleSet
    from mailflow.store import Store, Transaction
    from mailflow.values import Timer


#: a WSGI application (PEP 3333): what a plugin's HTTP route answers with
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class Route:
    """A page a plugin adds to the daemon's internal HTTP listener (the one of
    ``/metrics``, on loopback or the company network; the only listener plugins get
    today): ``path`` exactly, or every path under it when it ends with ``/``. Other
    methods than ``methods`` are answered 405. ``writes``: the route changes the store
    (a form that records something); only such a route may take POST, PUT, PATCH or
    DELETE, and a GET never writes."""

    path: str
    app: WsgiApp
    methods: tuple[str, ...] = ("GET", "HEAD")
    writes: bool = False

    def __post_init__(self) -> None:
        changing = {m.upper() for m in self.methods} & {"POST", "PUT", "PATCH", "DELETE"}
        if changing and not self.writes:
            raise ValueError(f"route {self.path}: {', '.join(sorted(changing))} needs"
                             " writes=True")
        if not self.path.startswith("/"):
            raise ValueError(f"route {self.path!r}: a path begins with /")


@dataclass(frozen=True)
class Command:
    """A ``mailflow NAME …`` subcommand a plugin adds (``mailflow_commands``).

    ``arguments(parser)`` adds its options to an ``argparse`` parser (``--config`` and
    the other common options are there already); ``run`` is called with the parsed
    ``args`` and any of ``host`` (the plugin's view of the daemon, its store open) and
    ``options`` (its validated rules section) it names, and returns the exit status
    (it may be ``async``).
    """

    name: str
    help: str
    run: Callable[..., Any]
    arguments: Callable[[Any], None] = lambda parser: None


@dataclass(frozen=True)
class ReportSection:
    """A table a plugin adds to the report (``mailflow report``, ``/report``): aggregate
    figures only (the report is read by people who may not see customers' mail)."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str | int | float, ...], ...]
    note: str = ""


@dataclass(frozen=True)
class Purge:
    """Rows of a plugin's table the retention purge deletes (``statistics.retention``):
    ``where`` an SQL condition with ``:cutoff`` (the oldest time kept). ``phase``:
    ``case-rows`` for rows hanging off closed cases (deleted before the cases),
    ``records`` for the rest."""

    table: str
    where: str
    phase: str = "records"
    #: the schema owners the table belongs to (set by the framework from the plugin's
    #: ``mailflow_schemas``): a store without them is not purged of it
    owners: frozenset[str] = field(default=frozenset(), compare=False)


@dataclass(frozen=True)
class Housekeeping:
    """A job of a plugin's that the daemon's scheduler loop runs every ``every`` seconds
    (the first time at start), in each daemon process's first worker: a gauge read from
    the store, a purge. A job that raises is logged and tried again next time."""

    name: str
    every: float
    run: Callable[[], Awaitable[None]]


@runtime_checkable
class Host(Protocol):
    """The daemon as a plugin's ``mailflow_startup``/``mailflow_shutdown`` see it."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> Store: ...

    @property
    def metrics(self) -> MetricFactory:
        """Where a plugin creates its ``mailflow_…`` counters, gauges and histograms."""

    @property
    def clock(self) -> Clock: ...

    @property
    def log(self) -> Any:
        """A structlog logger bound to the plugin's name."""

    @property
    def rules(self) -> RuleSet:
        """The rules now in force (a reload replaces them whole)."""

    @property
    def worker(self) -> int:
        """0 for the first (or only) process, 1… for pre-forked workers."""

    async def schedule_timer(self, timer: Timer, *, replace: bool = False) -> None:
        """Schedule ``timer`` now, outside any message (``replace``: cancel first the timers
        of its kind and key still to fire)."""

    async def ensure_timer(self, timer: Timer) -> bool:
        """A standing timer (a daily digest): schedule ``timer`` unless one of its kind and
        key is still to fire; True when it was scheduled. Safe at every start and reload:
        its handler schedules the next run (``ctx.schedule_timer(next, replace=True)``)."""


class DaemonHost:
    """The daemon's ``Host``: a view of one process, bound to one plugin's name."""

    def __init__(self, *, settings: Settings, store: Store, metrics: MetricFactory,
                 rules: Callable[[], RuleSet], clock: Clock = SYSTEM_CLOCK, worker: int = 0,
                 plugin: str = "", on_timer: Callable[[], None] = lambda: None) -> None:
        self._settings, self._store, self._metrics = settings, store, metrics
        self._rules, self._clock, self._worker = rules, clock, worker
        self._plugin = plugin
        self._on_timer = on_timer  # wakes the scheduler: a timer may be due now
        self._log = structlog.get_logger("mailflow.plugin").bind(plugin=plugin) if plugin \
            else structlog.get_logger("mailflow.plugin")

    def for_plugin(self, name: str, rules: Callable[[], RuleSet] | None = None) -> DaemonHost:
        """The same host, with a logger naming ``name`` (and the rules the plugin was
        loaded with, when a reload adds or removes it)."""
        return DaemonHost(settings=self._settings, store=self._store, metrics=self._metrics,
                          rules=rules or self._rules, clock=self._clock, worker=self._worker,
                          plugin=name, on_timer=self._on_timer)

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def store(self) -> Store:
        return self._store

    @property
    def metrics(self) -> MetricFactory:
        return self._metrics

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def log(self) -> Any:
        return self._log

    @property
    def rules(self) -> RuleSet:
        return self._rules()

    @property
    def worker(self) -> int:
        return self._worker

    async def schedule_timer(self, timer: Timer, *, replace: bool = False) -> None:
        def schedule(tx: Transaction) -> None:
            if replace:
                tx.cancel_timers(timer.kind, timer.key)
            tx.schedule_timer(timer, message=None, held=False)
        await self._store.run_write(schedule)
        self._on_timer()

    async def ensure_timer(self, timer: Timer) -> bool:
        scheduled: bool = await self._store.run_write(lambda tx: tx.ensure_timer(timer))
        if scheduled:
            self._on_timer()
        return scheduled
