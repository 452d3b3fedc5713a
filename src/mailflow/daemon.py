"""The running daemon: store, next hop, outbox, SMTP server, signals, systemd.

SIGHUP reloads configuration and rules atomically (a bad reload keeps the
running configuration and logs why). SIGTERM stops accepting, tells every
session ``421 4.3.2`` (see :mod:`mailflow.smtp_sessions`), lets the messages
in flight finish, then exits. With ``workers: N`` the listening socket is
shared by N processes (pre-forked), each with its own event loop, over one
store. A listener that cannot be opened stops the start with one line naming
its address, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from mailflow import heap, sdnotify
from mailflow.clock import SYSTEM_CLOCK, Clock
from mailflow.config import ConfigError, Settings
from mailflow.host import DaemonHost, Host, Housekeeping, Route
from mailflow.known_labels import declared_labels
from mailflow.listening import tls_context
from mailflow.metrics import (
    MetricFactory,
    Metrics,
)
from mailflow.outbox import OutboxWorker
from mailflow.pipeline import Pipeline
from mailflow.plugins import call_one, collect_for_host
from mailflow.relay import CapturingClient, NextHopClient, next_hop_client
from mailflow.retention import collect_purges, purge
from mailflow.runtime import Runtime, load_runtime
from mailflow.scheduler import Scheduler
from mailflow.session import SessionInfo
from mailflow.smtp import MailflowSMTP
from mailflow.smtp_handler import Handler
from mailflow.smtp_sessions import SessionLimits
from mailflow.store import Store, StoreUnavailable, open_store

log = structlog.get_logger("mailflow.daemon")

#: seconds without a pass of the scheduler's loop before /healthz calls it stalled (a pass
#: is at least every poll_interval; a handler may take HANDLER_TIMEOUT)
SCHEDULER_STALLED = 300.0

SHUTDOWN_GRACE = 30.0  # seconds for messages in flight to finish after SIGTERM
PURGE_EVERY = 3600.0  # seconds between two retention purges


#: seconds a probe of the store may take; longer, the store is reported unhealthy (a
#: disk that hangs, a writer stuck in a plugin's write) while the probe still waits
STORE_PROBE_TIMEOUT = 15.0


async def probe_store(store: Store, within: float) -> str | None:
    """None if the store takes a write now; else why not: its error, or its silence
    (no answer ``within`` seconds)."""
    try:
        async with asyncio.timeout(within):
            await store.ping()
    except TimeoutError:
        return f"the store did not answer within {within:g} s"
    except StoreUnavailable as exc:
        return str(exc)
    return None


class Application:
    """One daemon process. Plugins never see it: they get its ``Host`` facade."""

    def __init__(self, settings: Settings,
                 reload_settings: Callable[[], Settings] | None = None,
                 registry: CollectorRegistry | None = None, worker: int = 0,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.worker = worker
        self._reload_settings = reload_settings
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.metric_factory = MetricFactory(self.registry)
        self.metric_factory.adopt(vars(self.metrics).values())
        self.clock: Clock = clock
        self.runtime: Runtime = load_runtime(settings, self.metric_factory, clock)
        if worker == 0:
            self.runtime.log_warnings()
        self.store: Store = open_store(settings.store_url, clock=clock, node=settings.node_id,
                                       migrate=settings.migrate == "auto")
        #: shadow mode: where the chain reads and writes, timers fire and mail is captured
        self.shadow: Store | None = open_store(
            settings.shadow_store_url, clock=clock, node=settings.node_id,
            migrate=settings.migrate == "auto") if settings.mode == "shadow" else None
        decisions = self.shadow or self.store
        self.metrics.mode.labels(mode=settings.mode).set(1)
        self.host = DaemonHost(settings=settings, store=decisions, metrics=self.metric_factory,
                               rules=lambda: self.runtime.rules, clock=self.clock, worker=worker,
                               on_timer=lambda: self.scheduler.wake())
        hop = settings.effective_next_hop
        self.client: NextHopClient = next_hop_client(hop, settings.relay, settings.smtp.hostname)
        self.outbox = OutboxWorker(self.store, self.client, settings.outbox, self.metrics,
                                   self.clock)
        # shadow mode: what mailflow would have sent is marked sent, never sent
        self.captured = OutboxWorker(self.shadow, CapturingClient(), settings.outbox,
                                     self.metrics, self.clock) if self.shadow else None
        self.housekeeping: list[Housekeeping] = []  # the plugins' jobs, asked at each load
        self.scheduler = Scheduler(decisions, settings.scheduler, self.metrics,
                                   lambda: self.runtime.timer_handlers, clock,
                                   on_commit=self._released,
                                   housekeeping=lambda: self.housekeeping,
                                   events=lambda: self.runtime.chain.events,
                                   handler_view=self._handler_view)
        self.pipeline = Pipeline(settings, self.store, self.client, self.metrics,
                                 lambda: self.runtime.chain, self._released, clock,
                                 shadow=self.shadow)
        self.handler = Handler(settings, lambda: self.runtime.pm, lambda: self.runtime.rules,
                               self.pipeline, self.metrics,
                               lambda: self.runtime.plugin_options, self.host)
        networks = settings.networks
        self.limits = SessionLimits(settings.smtp.max_sessions,
                                    settings.smtp.max_sessions_per_client,
                                    self.metrics.sessions.set,
                                    lambda client: SessionInfo.in_networks(client, networks))
        self.store_error: str | None = None
        self._stopping: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._reloads: set[asyncio.Task[bool]] = set()
        self._reload_lock = asyncio.Lock()  # two quick SIGHUPs apply one after the other
        self.forward_signal: Callable[[int], None] | None = None

    def _released(self) -> None:
        """A message's mail and timers were let go: one may be due now."""
        self.outbox.wake()
        if self.captured is not None:
            self.captured.wake()
        self.scheduler.wake()

    # -- health ----------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        """Store, next hop and scheduler, each ``ok`` or why not (one line, for /healthz)."""
        store = self.store_error or self.store.error  # the probe's, or the last write's
        hop = self.client.error
        silent = time.monotonic() - self.scheduler.last_pass
        scheduler = None if silent < SCHEDULER_STALLED else \
            f"no pass for {silent:.0f} s (timers are not fired)"
        parts = [f"store: {store or 'ok'}", f"next hop: {hop or 'ok'}",
                 f"scheduler: {scheduler or 'ok'}"]
        if store or hop or scheduler:
            return False, "; ".join(parts)
        return True, "; ".join([*parts, f"accepting mail, {self.handler.in_flight} in flight"])

    async def _watch_store(self) -> None:
        """Probe the store so /healthz turns unhealthy, and back, without a restart."""
        while True:
            error = await probe_store(self.store, STORE_PROBE_TIMEOUT)
            if error is None and self.store_error:
                log.info("store_recovered")
            elif error is not None and self.store_error is None:
                log.error("store_unhealthy", error=error)
            self.store_error = error
            self.metrics.up.set(0 if self.store_error else 1)
            await asyncio.sleep(5 if self.store_error is None else 1)

    async def _watchdog(self, interval: float) -> None:
        """Keep-alives while the event loop runs. A store outage is reported by /healthz
        and tempfails mail, but is not a reason for systemd to restart us: a restart
        would not mend the store."""
        while True:
            sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    # -- reload ----------------------------------------------------------------

    async def reload(self) -> bool:
        """Re-read configuration and rules; keep the running ones if anything is wrong.

        Plugins the new configuration adds get their startup hook before it takes
        effect; plugins it removes get their shutdown hook after.
        """
        async with self._reload_lock:
            return await self._reload()

    async def _reload(self) -> bool:
        sdnotify.reloading()
        try:
            settings = self._reload_settings() if self._reload_settings else self.settings
            runtime = load_runtime(settings, self.metric_factory, self.clock)
        except ConfigError as exc:
            return self._reload_failed([str(p) for p in exc.problems])
        runtime.log_warnings()
        fixed = ("listen", "submission_listen", "store", "state_dir", "workers", "next_hop",
                 "smtp", "relay", "metrics", "trusted_networks", "outbox", "scheduler",
                 "test_clock", "log_level")
        changed = [k for k in fixed if getattr(settings, k) != getattr(self.settings, k)]
        if changed:
            log.warning("reload_needs_restart", settings=changed,
                        detail="these settings take effect at the next restart")
        try:
            await self.store.migrate(runtime.schemas)  # tables of a plugin the reload adds
        except Exception as exc:  # a plugin's bad DDL, or the store down
            return self._reload_failed([f"store migration: {exc}"])
        old = self.runtime
        added, removed = _changed_plugins(old, runtime)
        for name in added:
            await self._plugin_hook(runtime, "mailflow_startup", name)
        self.runtime = runtime
        heap.thaw(asyncio.get_running_loop())
        self.housekeeping = self._housekeeping(runtime) if self.worker == 0 else []
        self._start_series(runtime)  # the routes, rules, stages the reload brought
        for name in removed:
            await self._plugin_hook(old, "mailflow_shutdown", name)
        self.scheduler.wake()  # timers of a kind the reload brought a handler for
        self.metrics.reloads.labels(result="ok").inc()
        log.info("reloaded", chain=list(runtime.chain.names), rules=str(runtime.rules.directory))
        sdnotify.notify("READY=1", "STATUS=configuration reloaded")
        return True

    def _reload_failed(self, errors: list[str]) -> bool:
        self.metrics.reloads.labels(result="failed").inc()
        log.error("reload_failed", errors=errors, detail="keeping the running configuration")
        sdnotify.notify("READY=1", "STATUS=reload failed, running configuration kept")
        return False

    async def _plugin_hook(self, runtime: Runtime, hook: str, name: str) -> None:
        try:
            host = self.host.for_plugin(name, rules=lambda: runtime.rules)
            await call_one(runtime.pm, hook, name, host=host,
                           options=runtime.plugin_options.get(name))
        except Exception:  # one plugin's bug must not stop the reload of the others
            log.exception("plugin_hook_failed", hook=hook, plugin=name)

    # -- serving ---------------------------------------------------------------

    async def start(self, sock: socket.socket,
                    submission: socket.socket | None = None) -> list[asyncio.Server]:
        await self.store.open(self.runtime.schemas)
        if self.shadow is not None:
            await self.shadow.open(self.runtime.schemas)
        if self.worker == 0:  # the node's id is held by the daemon, for all its workers
            await self.store.claim_node()
        for name in self.runtime.plugins:
            await call_one(self.runtime.pm, "mailflow_startup", name,
                           host=self.host.for_plugin(name),
                           options=self.runtime.plugin_options.get(name))
        if self.worker == 0:  # gauges and purges once per daemon, not per worker
            self.housekeeping = self._housekeeping(self.runtime)
        self._start_series(self.runtime)
        loop = asyncio.get_running_loop()
        context = tls_context(self.settings)
        servers = [await loop.create_server(
            functools.partial(MailflowSMTP, self.handler, self.settings, self.limits, context,
                              kind),
            sock=listening, backlog=self.settings.smtp.backlog)
            for listening, kind in ((sock, False), (submission, True)) if listening is not None]
        self._tasks = [loop.create_task(self.outbox.run(), name="outbox"),
                       loop.create_task(self.scheduler.run(), name="scheduler"),
                       loop.create_task(self._watch_store(), name="store-health")]
        if self.captured is not None:
            self._tasks.append(loop.create_task(self.captured.run(), name="shadow-outbox"))
        interval = sdnotify.watchdog_interval()
        if interval:
            self._tasks.append(loop.create_task(self._watchdog(interval), name="watchdog"))
        return servers

    def _start_series(self, runtime: Runtime) -> None:
        """Every series whose labels ``runtime`` makes known, at 0 until it counts
        (:mod:`mailflow.known_labels`)."""
        known = declared_labels(runtime, lambda name: self.host.for_plugin(
            name, rules=lambda: runtime.rules))
        for problem in self.metric_factory.declare(known):
            log.warning("known_labels_problem", problem=problem)

    def _handler_view(self, kind: str) -> tuple[Host, Any]:
        """The host and rules section of the plugin that handles timers of ``kind``."""
        runtime = self.runtime
        owner = runtime.timer_owners.get(kind, "")
        return (self.host.for_plugin(owner, rules=lambda: runtime.rules),
                runtime.plugin_options.get(owner))

    def _housekeeping(self, runtime: Runtime) -> list[Housekeeping]:
        """The plugins' jobs, and the retention purge of every owner's records."""
        jobs: list[Housekeeping] = collect_for_host(
            runtime.pm, "mailflow_housekeeping",
            lambda name: self.host.for_plugin(name, rules=lambda: runtime.rules))
        retention = self.settings.statistics.retention
        if retention is not None:
            purges = collect_purges(runtime.pm)

            async def purge_old() -> None:
                cutoff = self.clock.now() - retention
                deleted = await self.store.run_write(lambda tx: purge(tx, purges, cutoff))
                if deleted:
                    log.info("retention_purged", older_than=cutoff, **deleted)

            jobs.append(Housekeeping("retention purge", PURGE_EVERY, purge_old))
        return jobs

    def http_routes(self) -> list[Route]:
        """The plugins' pages on the internal HTTP listener (the report's)."""
        return collect_for_host(self.runtime.pm, "mailflow_http_routes", self.host.for_plugin)

    async def stop(self, servers: list[asyncio.Server]) -> None:
        sdnotify.notify("STOPPING=1")
        for server in servers:
            server.close()  # no new connections
        # idle sessions and half-sent messages hear 421 now; a message whose DATA ended
        # is finished, and its client hears the reply before the 421
        self.limits.shut_down()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_GRACE):
                await self.handler.idle.wait()
        await self.limits.closed()  # the last replies' clients may still QUIT
        self.limits.shut_down(now=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            for name in self.runtime.plugins:
                await self._plugin_hook(self.runtime, "mailflow_shutdown", name)
        finally:
            await self.client.close()
            await self.store.close()
            if self.shadow is not None:
                await self.shadow.close()
        log.info("stopped", worker=self.worker)

    def _on_signal(self, signum: int) -> None:
        if self.forward_signal is not None:  # pre-forked workers hear what the parent hears
            self.forward_signal(signum)
        if signum == signal.SIGHUP:
            task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
            self._reloads.add(task)  # keep a reference until it is done
            task.add_done_callback(self._reloads.discard)
        elif self._stopping is not None:
            self._stopping.set()

    async def serve(self, sock: socket.socket, on_ready: Callable[[], None] | None = None,
                    submission: socket.socket | None = None) -> None:
        """Serve until SIGTERM or SIGINT."""
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self._on_signal, signum)
        servers = await self.start(sock, submission)
        if self.worker == 0:
            sdnotify.notify("READY=1", f"MAINPID={os.getpid()}",
                            f"STATUS=listening on {self.settings.listen}")
        if on_ready:
            on_ready()
        await self._stopping.wait()
        log.info("stopping", in_flight=self.handler.in_flight, worker=self.worker)
        await self.stop(servers)


def _changed_plugins(old: Runtime, new: Runtime) -> tuple[list[str], list[str]]:
    """(added, removed) plugin names; a plugin file re-read from its folder is a new
    module object, so it counts as removed and added."""
    before, after = old.plugins, new.plugins
    added = [n for n, p in after.items() if before.get(n) is not p]
    removed = [n for n, p in before.items() if after.get(n) is not p]
    return added, removed
