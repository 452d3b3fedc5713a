"""``mailflow serve``: load, bind, fork the workers, serve until told to stop.

Everything before and around the daemon's event loop: the configuration is
refused before any port is bound, the store migrated and recovered once
before the workers fork, the listening sockets shared by the pre-forked
workers (each with its own :class:`~mailflow.daemon.Application`), the
internal HTTP listener opened by the first, and a worker never outlives its
parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
import uvloop

from mailflow import heap
from mailflow.clock import SYSTEM_CLOCK, Clock, daemon_clock
from mailflow.config import Settings, load_settings
from mailflow.config.settings import HOSTNAME_ADVICE, is_domain_name
from mailflow.daemon import Application
from mailflow.listening import bind_socket, listen_error
from mailflow.metrics import exposition_registry, serve_http, worker_exited
from mailflow.runtime import load_runtime
from mailflow.store import open_store
from mailflow.store.schema import Schema

log = structlog.get_logger("mailflow.daemon")


def _die_with_parent() -> None:
    """A worker must not outlive a parent killed with SIGKILL (Linux's PR_SET_PDEATHSIG):
    orphans would keep serving the port with nobody to reload or stop them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's SIGTERM still reaches us
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


async def _prepare_store(settings: Settings, schemas: Sequence[Schema],
                         clock: Clock = SYSTEM_CLOCK) -> None:
    """Migrate, and recover from a crash, once, before the workers start (shadow mode's
    store too)."""
    urls = [settings.store_url] + ([settings.shadow_store_url]
                                   if settings.mode == "shadow" else [])
    for url in urls:
        store = open_store(url, clock=clock, node=settings.node_id,
                           migrate=settings.migrate == "auto")
        await store.open(schemas)
        try:
            await store.claim_node()  # refused now, before binding, if another daemon has it
            abandoned = await store.recover()
            if abandoned:
                log.warning("recovered_in_flight", messages=abandoned,
                            detail="their clients got no 250 and will send again: the retry"
                            " joins the same case, marked X-Mailflow-Duplicate")
        finally:
            await store.close()


def describe_startup(settings: Settings) -> str:
    hop = settings.effective_next_hop
    where = (f"into the Maildir {Path(hop.path).resolve()}" if hop.kind == "maildir"
             else f"to {hop}")
    web = f"http://{settings.metrics}"
    metrics = (f"; metrics on {web}/metrics, health {web}/healthz, report {web}/report"
               if settings.metrics else "")
    listening = settings.listen + (f" (agents' submission mail on {settings.submission_listen})"
                                   if settings.submission_listen else "")
    shadow = (f"; SHADOW MODE: mail is relayed as received, what mailflow would have done"
              f" goes to {settings.shadow_store_url}" if settings.mode == "shadow" else "")
    return (f"mailflow listening on {listening}; mail goes {where}; "
            f"store {settings.store_url}; rules {Path(settings.rules).resolve()}{metrics}"
            f"{shadow}")


def run(config: str | None, overrides: dict[str, Any], *,
        allow_test_clock: bool = False) -> int:
    """``mailflow serve``: load, bind, fork workers if asked, serve until told to stop."""
    # SIGHUP's default action kills the process: until the event loop installs the reload
    # handler, a reload asked for early (the port is already open) must not stop the daemon.
    # Ignoring it is safe: configuration and rules are read after this line.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    settings = load_settings(config, overrides)
    clock = daemon_clock(settings.test_clock, allow_test_clock)
    runtime = load_runtime(settings, clock=clock)  # refuse a bad configuration before binding
    if not is_domain_name(settings.smtp.hostname):
        log.warning("hostname_not_a_domain_name", hostname=settings.smtp.hostname,
                    detail=HOSTNAME_ADVICE.format(settings.smtp.hostname))

    def reread() -> Settings:
        return load_settings(config, overrides)

    asyncio.run(_prepare_store(settings, runtime.schemas, clock))  # once, before the workers
    sock = bind_socket(settings)
    submission = (bind_socket(settings, listen=settings.submission_listen,
                              purpose="submission")
                  if settings.submission_listen else None)
    metrics_address = settings.metrics_address
    if settings.workers > 1:  # after loading, before forking: the workers share it
        heap.settle()
    children: list[int] = []
    worker = 0
    for index in range(1, settings.workers):
        pid = os.fork()
        if pid == 0:
            worker, children = index, []
            _die_with_parent()
            break
        children.append(pid)

    def forward(signum: int) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    app = Application(settings, reread, worker=worker, clock=clock)
    heap.settle()  # the worker's own runtime is loaded now
    http = None
    if worker == 0 and metrics_address:
        try:
            http = serve_http(metrics_address, exposition_registry(app.registry), app.health,
                              app.http_routes())
        except OSError as exc:  # the workers forked already: they must not serve on alone
            forward(signal.SIGTERM)
            for pid in children:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
            raise listen_error(*metrics_address, exc, "metrics") from None

    def ready() -> None:
        if worker == 0:
            log.info("ready", workers=settings.workers, summary=describe_startup(settings))

    if children:
        app.forward_signal = forward

    started = time.monotonic()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(app.serve(sock, ready, submission))
    except Exception:
        log.exception("daemon_failed", worker=worker)
        forward(signal.SIGTERM)
        raise
    finally:
        if http is not None:
            http.shutdown()
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            worker_exited(pid)
    log.debug("exit", worker=worker, seconds=round(time.monotonic() - started, 1))
    if worker:
        os._exit(0)
    return 0
