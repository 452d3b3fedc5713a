"""The plugin contract: every hook a mailflow plugin may implement.

Plugins are modules (or objects) with functions decorated ``@hookimpl``. The
built-in stages use exactly these hooks. Hooks may be plain functions or
coroutines: mailflow awaits whatever they return (see
``mailflow.plugins.call_hook``); none uses ``firstresult``, so an ``async``
implementation can never "win" by accident.

Each hook is documented in ``docs/plugin_hooks.md``; a test fails when one is
missing there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from mailflow.daemon import Application
    from mailflow.session import SessionInfo
    from mailflow.stage import Stage, Timer

PROJECT = "mailflow"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# ---------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------


@hookspec
def mailflow_stages() -> Iterable[type[Stage]]:  # type: ignore[empty-body]
    """Return the stage classes this plugin provides.

    A stage runs only when its ``name`` is listed in the rules' ``chain:``.
    Its rules section (the top-level key of the same name) is validated with
    the stage's ``Options`` model when the configuration is loaded.
    """


@hookspec
def mailflow_metrics(registry: CollectorRegistry) -> None:
    """Create the plugin's Prometheus metrics on ``registry``.

    Called once per process at start. Names must begin with ``mailflow_``.
    """


# ---------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------


@hookspec
def mailflow_startup(app: Application) -> Awaitable[None] | None:
    """Called when the daemon has opened its store, before it accepts mail."""


@hookspec
def mailflow_shutdown(app: Application) -> Awaitable[None] | None:
    """Called when the daemon stops, after the last message in flight."""


# ---------------------------------------------------------------------------
# SMTP stages: answer early, like a milter. Return None to accept (let the
# next plugin decide), or an SmtpReply: a 4xx tempfails, a 5xx rejects.
# ---------------------------------------------------------------------------


@hookspec
def mailflow_connect(session: SessionInfo) -> Any:
    """A client connected. Reject or tempfail it by returning an SmtpReply."""


@hookspec
def mailflow_helo(session: SessionInfo, hostname: str) -> Any:
    """The client said HELO or EHLO with ``hostname``."""


@hookspec
def mailflow_mail_from(session: SessionInfo, address: str) -> Any:
    """MAIL FROM with ``address`` ('' for the null sender)."""


@hookspec
def mailflow_rcpt_to(session: SessionInfo, address: str) -> Any:
    """RCPT TO with ``address``, already checked against relaying rules."""


# ---------------------------------------------------------------------------
# Timers
# ---------------------------------------------------------------------------


@hookspec
def mailflow_timer_fired(app: Application, timer: Timer) -> Awaitable[None] | None:
    """A timer scheduled by a stage is due. Every plugin sees every timer;
    act only on the ``timer.kind`` values you scheduled. The scheduler marks
    the timer done only when every implementation returned without error."""
