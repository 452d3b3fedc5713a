"""pytest fixtures for mailflow plugins, shipped with mailflow (entry point ``pytest11``).

Installed with mailflow, they are there in every test of a plugin's package (``pip
install mailflow[testing]`` brings pytest and pytest-asyncio). Every name begins with
``mailflow_``, so none clashes with a project's own; nothing but pytest is imported
until a fixture is used. Async tests need pytest-asyncio: mark them
``@pytest.mark.asyncio``, or set ``asyncio_mode = "auto"`` under
``[tool.pytest.ini_options]``.

In memory, on a real temporary SQLite store:

- ``mailflow_clock``: a fake clock (Monday 2026-11-23 09:00 Paris), moved by the test;
- ``mailflow_schemas``: your plugin's tables; override it (``return [VIP_SCHEMA]``);
- ``mailflow_store``: the store, open, with the built-in tables and yours;
- ``mailflow_rules``: ``mailflow_rules({"chain": [...], "vip": {...}})`` writes a rules
  folder (local domain ``example.com``) and returns its path;
- ``mailflow_runtime``: ``mailflow_runtime(rules, plugins=[my_plugin])`` loads it as the
  daemon does, your plugin registered; a mistake raises ``ConfigError``;
- ``mailflow_check``: ``mailflow_check(rules, plugins=[...])``, what ``mailflow check``
  would say (``file:line:column: message`` each; ``[]`` when clean);
- ``mailflow_receive``: ``await mailflow_receive(runtime, raw, mail_from=..., rcpt_to=...)``,
  the daemon's own reception and chain on a message; ``mailflow_commit(ctx)`` commits
  what it asked for;
- ``mailflow_host``: ``mailflow_host(rules)``, your plugin's view of a daemon;
- ``mailflow_timer_context``: ``mailflow_timer_context(timer, host=..., options=...)``;
- ``mailflow_call_hook``: ``await mailflow_call_hook(plugin, "mailflow_mail_from",
  session=..., address=..., options=...)``, through pluggy as the daemon calls it.

End to end, on loopback only:

- ``mailflow_cli``: ``mailflow_cli("vip-report", "--config", path)``, the command line
  in-process: (exit status, what it printed, what it said on stderr);
- ``mailflow_next_hop``: a capturing SMTP server (``.messages``, ``.wait_for(n)``);
- ``mailflow_daemon``: ``mailflow_daemon(rules, plugins=["vip"], test_clock=T)`` starts
  ``mailflow serve`` relaying to it (``.send(raw, mail_from, rcpt_to)``, ``.advance(s)``,
  ``.settle()``, ``.log``, ``.db``), stopped after the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from mailflow.clock import FakeClock
    from mailflow.context import Effects, MessageContext, TimerContext
    from mailflow.host import DaemonHost
    from mailflow.runtime import Runtime
    from mailflow.store import Store
    from mailflow.store.schema import Schema
    from mailflow.testing.daemon import Daemon
    from mailflow.testing.nexthop import Sink
    from mailflow.values import Timer

#: Monday 23 November 2026, 09:00 in Paris: a business hour
MONDAY_9AM = 1795420800.0


@pytest.fixture
def mailflow_clock() -> FakeClock:
    from mailflow.clock import FakeClock

    return FakeClock(MONDAY_9AM)


@pytest.fixture
def mailflow_schemas() -> Sequence[Schema]:
    """The tables of the plugin under test: override this fixture to list them."""
    return ()


@pytest.fixture
def mailflow_store(tmp_path: Path, mailflow_schemas: Sequence[Schema],
                   mailflow_clock: FakeClock) -> Iterator[Store]:
    from mailflow.plugins import builtin_schemas
    from mailflow.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'mailflow-test.sqlite3'}?busy_timeout=0.5",
                       clock=mailflow_clock)
    asyncio.run(store.open([*builtin_schemas(), *mailflow_schemas]))
    try:
        yield store
    finally:
        asyncio.run(store.close())


@pytest.fixture
def mailflow_rules(tmp_path: Path) -> Callable[..., Path]:
    """Write a rules folder: ``mailflow_rules({"chain": [...], "vip": {...}})``; each
    top-level key its own file, ``local_domains: [example.com]`` unless given."""
    from ruamel.yaml import YAML

    made = 0

    def make(sections: Mapping[str, Any] | None = None) -> Path:
        nonlocal made
        made += 1
        folder = tmp_path / f"rules-{made}"
        folder.mkdir()
        data = {"local_domains": ["example.com"], "chain": [], **(sections or {})}
        yaml = YAML()
        for name, value in data.items():
            with open(folder / f"{name}.yaml", "w", encoding="utf-8") as fh:
                yaml.dump({name: value}, fh)
        return folder

    return make


@pytest.fixture
def mailflow_runtime(mailflow_clock: FakeClock) -> Callable[..., Runtime]:
    from mailflow.testing import load_test_runtime

    def load(rules: Path, *, plugins: Sequence[object] = (), **settings: Any) -> Runtime:
        return load_test_runtime(rules, plugins=plugins, clock=mailflow_clock, **settings)

    return load


@pytest.fixture
def mailflow_check() -> Callable[..., list[str]]:
    from mailflow.testing import check_rules

    return check_rules


@pytest.fixture
def mailflow_receive(mailflow_store: Store, mailflow_clock: FakeClock,
                     ) -> Callable[..., Awaitable[MessageContext]]:
    from mailflow.testing import receive

    async def run(runtime: Runtime, source: bytes | str | Path, **kwargs: Any) -> MessageContext:
        return await receive(runtime, source, mailflow_store, clock=mailflow_clock, **kwargs)

    return run


@pytest.fixture
def mailflow_commit(mailflow_store: Store) -> Callable[[Effects], Awaitable[None]]:
    from mailflow.testing import commit

    async def run(ctx: Effects) -> None:
        await commit(mailflow_store, ctx)

    return run


@pytest.fixture
def mailflow_host(mailflow_store: Store, mailflow_clock: FakeClock) -> Callable[..., DaemonHost]:
    from mailflow.testing import make_host

    def make(rules: Any = None, **kwargs: Any) -> DaemonHost:
        return make_host(mailflow_store, rules, clock=mailflow_clock, **kwargs)

    return make


@pytest.fixture
def mailflow_timer_context(mailflow_store: Store, mailflow_clock: FakeClock,
                           ) -> Callable[..., TimerContext]:
    from mailflow.testing import make_timer_context

    def make(timer: Timer, **kwargs: Any) -> TimerContext:
        return make_timer_context(timer, mailflow_store, clock=mailflow_clock, **kwargs)

    return make


@pytest.fixture
def mailflow_call_hook(mailflow_host: Callable[..., DaemonHost],
                       ) -> Callable[..., Awaitable[list[Any]]]:
    """Call a plugin's hook through pluggy; its ``host`` is ``mailflow_host()`` unless
    given."""
    from mailflow.testing import call_hook

    async def call(plugin: object, hook: str, **kwargs: Any) -> list[Any]:
        kwargs.setdefault("host", mailflow_host())
        return await call_hook(plugin, hook, **kwargs)

    return call


@pytest.fixture
def mailflow_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    from mailflow.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()  # what came before is not this command's
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def mailflow_next_hop() -> Iterator[Sink]:
    from mailflow.testing.nexthop import Sink

    sink = Sink(long_lines=True)
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def mailflow_daemon(tmp_path: Path, mailflow_next_hop: Sink) -> Iterator[Callable[..., Daemon]]:
    """Start real daemons relaying to ``mailflow_next_hop``; all stopped after the test."""
    from mailflow.testing.daemon import Daemon

    started: list[Daemon] = []

    def start(rules: Path, *, plugins: Sequence[str] = (), plugin_dirs: Sequence[Path] = (),
              config: Mapping[str, Any] | None = None, test_clock: float | None = None,
              ) -> Daemon:
        settings: dict[str, Any] = {"plugins": list(plugins),
                                    "plugin_dirs": [str(p) for p in plugin_dirs],
                                    **(config or {})}
        daemon = Daemon(tmp_path / f"daemon-{len(started)}",
                        f"smtp://127.0.0.1:{mailflow_next_hop.port}", settings, rules,
                        test_clock=test_clock)
        started.append(daemon)
        return daemon.start()

    try:
        yield start
    finally:
        for daemon in started:
            daemon.stop()
