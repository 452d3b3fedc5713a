"""The plugin contract: every hook a mailflow plugin may implement.

Plugins are modules (or objects) with functions decorated ``@hookimpl``. The
built-in stages use exactly these hooks. Lifecycle and SMTP hooks may be plain
functions or coroutines: mailflow awaits whatever they return (see
``mailflow.plugins.call_hook``); none uses ``firstresult``, so an ``async``
implementation can never "win" by accident. Registration hooks
(``mailflow_stages``, ``mailflow_rules_section``, ``mailflow_schemas``,
``mailflow_timer_handlers``, ``mailflow_known_labels``)
run at load time and must be plain functions.

Each hook is documented in ``docs/plugin_hooks.md``; a test fails when one is
missing there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from mailflow.config import Model
    from mailflow.context import TimerHandler
    from mailflow.host import Command, Host, Housekeeping, Purge, ReportSection, Route
    from mailflow.metrics import KnownLabels
    from mailflow.session import SessionInfo
    from mailflow.stage import Stage
    from mailflow.store.base import Transaction
    from mailflow.store.schema import Schema

PROJECT = "mailflow"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# ---------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------


@hookspec
def mailflow_stages() -> Iterable[type[Stage[Any]]]:  # type: ignore[empty-body]
    """Return the stage classes this plugin provides.

    A stage runs only when its ``name`` is listed in the rules' ``chain:``.
    Its rules section (the top-level key of the same name) is validated with
    the stage's ``Options`` model when the configuration is loaded.
    """


@hookspec
def mailflow_rules_section() -> tuple[str, type[Model]] | None:
    """Claim a top-level rules section for the plugin's SMTP hooks: ``(name, Model)``.

    The section is validated with ``Model`` when the rules are loaded (errors
    at ``file:line:column``, like a stage's), and each of the plugin's SMTP
    hooks that takes an ``options`` argument receives the validated model —
    the one now in force, swapped whole on reload. A stage of the same name
    may share the section (and its model).
    """


@hookspec
def mailflow_schemas() -> Iterable[Schema]:  # type: ignore[empty-body]
    """The tables this plugin owns: ``Schema(owner, migrations, forget)`` each.

    Each owner's migrations are applied in order and versioned on their own
    (``schema_versions``) when the store is opened and when a reload adds
    the plugin. ``forget(tx, queue_id)`` deletes the
    owner's rows for a message abandoned after a crash (its client never got
    a ``250`` and sends it again). DDL is portable: ``DOUBLE PRECISION``
    times, ``{id}`` for an identity key, ``{bytes}`` for binary data.
    """


# ---------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------


@hookspec
def mailflow_startup(host: Host, options: Any) -> Awaitable[None] | None:
    """Called when the daemon has opened its store, before it accepts mail, and for a
    plugin that a reload adds. ``host`` is the plugin's view of the daemon, ``options``
    its validated rules section (``mailflow_rules_section``; None without one). The
    place to make sure of a standing timer: ``await host.ensure_timer(...)``."""


@hookspec
def mailflow_shutdown(host: Host, options: Any) -> Awaitable[None] | None:
    """Called when the daemon stops, after the last message in flight, and for a
    plugin that a reload removes."""


@hookspec
def mailflow_housekeeping(host: Host) -> Iterable[Housekeeping]:  # type: ignore[empty-body]
    """Jobs the daemon's scheduler loop runs for this plugin, each every ``every``
    seconds: ``Housekeeping(name, every, run)``. Asked at start and at each reload; a
    plain function."""


@hookspec
def mailflow_http_routes(host: Host) -> Iterable[Route]:  # type: ignore[empty-body]
    """Pages this plugin adds to the daemon's internal HTTP listener (the ``metrics:``
    one, beside ``/metrics`` and ``/healthz``): ``Route(path, wsgi_app)``, a path
    ending with ``/`` taking every path under it. Asked once at start; a plain
    function. A route that reads the store opens it read-only."""


@hookspec
def mailflow_known_labels(host: Host, options: Any) -> Iterable[KnownLabels]:  # type: ignore[empty-body]
    """The label values this plugin's metrics outside a stage (an SMTP hook's, a timer
    handler's, a housekeeping job's) are known to take before their first event:
    ``KnownLabels.of(metric, label=values, ...)`` each, from ``options`` (its rules
    section) or ``host.rules``. Their series are exported at 0 from the start, so a
    dashboard shows 0, not "No data". Asked at start and at each reload (after
    ``mailflow_startup``); a plain function. A stage declares its own through
    ``Stage.known_labels()``."""


# ---------------------------------------------------------------------------
# SMTP stages: answer early, like a milter. Return None to accept (let the
# next plugin decide), or an SmtpReply: a 4xx tempfails, a 5xx rejects.
# Each may also take ``options`` (the plugin's validated rules section, see
# mailflow_rules_section; None without one) and ``host``.
# ---------------------------------------------------------------------------


@hookspec
def mailflow_connect(session: SessionInfo, options: Any, host: Host) -> Any:
    """A client connected. Reject or tempfail it by returning an SmtpReply."""


@hookspec
def mailflow_helo(session: SessionInfo, hostname: str, options: Any, host: Host) -> Any:
    """The client said HELO or EHLO with ``hostname``."""


@hookspec
def mailflow_mail_from(session: SessionInfo, address: str, options: Any, host: Host) -> Any:
    """MAIL FROM with ``address`` ('' for the null sender)."""


@hookspec
def mailflow_rcpt_to(session: SessionInfo, address: str, options: Any, host: Host) -> Any:
    """RCPT TO with ``address``, already checked against relaying rules."""


# ---------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------


@hookspec
def mailflow_commands() -> Iterable[Command]:  # type: ignore[empty-body]
    """``mailflow`` subcommands this plugin adds: ``Command(name, help, run, arguments)``.

    Asked for the plugins the configuration enables (the command line reads
    ``--config`` first); a plain function. A name a built-in command or another
    plugin has is a configuration error.
    """


@hookspec
def mailflow_case_lines(tx: Transaction, number: str) -> Iterable[tuple[str, str]]:  # type: ignore[empty-body]
    """Lines this plugin adds to ``mailflow cases show NUMBER``: ``(label, value)`` pairs,
    read in the command's read-only transaction ``tx``; a plain function."""


@hookspec
def mailflow_report_sections(tx: Transaction, since: float, until: float,  # type: ignore[empty-body]
                             zone: ZoneInfo | None) -> Iterable[ReportSection]:
    """Tables this plugin adds to the report of ``since`` to ``until`` (Unix times; days
    in ``zone``): ``ReportSection(title, columns, rows, note)``, aggregate figures only;
    read in the report's read-only transaction ``tx``; a plain function."""


@hookspec
def mailflow_retention() -> Iterable[Purge]:  # type: ignore[empty-body]
    """What the retention purge (``statistics.retention``) deletes of this plugin's
    tables: ``Purge(table, where, phase)``, ``where`` with ``:cutoff``; a plain function.
    A table not declared keeps its rows for ever."""


# ---------------------------------------------------------------------------
# Timers
# ---------------------------------------------------------------------------


@hookspec
def mailflow_timer_handlers() -> Mapping[str, TimerHandler]:  # type: ignore[empty-body]
    """The handlers of the timer kinds this plugin schedules: ``{kind: handler}``.

    One handler per kind (two plugins claiming one kind is a configuration
    error), called as ``await handler(ctx)`` with a :class:`TimerContext`
    (``ctx.timer``, the store view, the clock, the stage API to queue mail and
    schedule or cancel timers, the plugin's ``ctx.host`` and its rules section
    ``ctx.options``). What it asks for is committed with
    the timer's "done" mark, in one transaction; if it raises, nothing is
    committed and the timer is retried later.
    """
