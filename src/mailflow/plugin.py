"""Everything a plugin imports, from one place: ``from mailflow.plugin import ...``.

The hook marker, the stage base and its options, what a stage reads and asks for
(the message context, its typed facts, triage signals, case events, services),
timers (with replace-by-key and standing timers), the mail writer, the values
and the store's schema type, and what the daemon shows plugins of itself. The
names here are the plugin contract: they keep their meaning across versions;
anything imported from elsewhere in ``mailflow`` may move. The guide is
``docs/plugins.md``, the hooks' reference ``docs/plugin_hooks.md``, and the
tests' fixtures :mod:`mailflow.testing.pytest_plugin`.
"""

from __future__ import annotations

from mailflow.automatic import Automatic
from mailflow.config import Model
from mailflow.context import (
    CaseInfo,
    Decision,
    Effects,
    MessageContext,
    StageStore,
    TimerContext,
    TimerHandler,
    WriteOp,
)
from mailflow.events import (
    CaseAnswered,
    CaseClosed,
    CaseEvent,
    CaseOpened,
    CaseReopened,
    CaseSettled,
    Listener,
)
from mailflow.hookspecs import hookimpl
from mailflow.host import Command, Host, Housekeeping, Purge, ReportSection, Route, WsgiApp
from mailflow.language import LanguageGuess
from mailflow.message import Envelope, Message
from mailflow.message.writer import AUTOMATIC, TO_ANSWER, Letter, MailWriter, Written, answering
from mailflow.metrics import KnownLabels
from mailflow.services import (
    AGENTS,
    REPLY_TOKENS,
    ROUTES,
    TEAMS,
    TRIAGE_SCALE,
    ServiceKey,
    Services,
)
from mailflow.session import SessionInfo, SmtpReply
from mailflow.stage import (
    ALL_DIRECTIONS,
    SERVICE_DIRECTIONS,
    ScopePart,
    Stage,
    StageEnv,
    StageOptions,
)
from mailflow.stash import Stash, StashKey
from mailflow.store import Transaction
from mailflow.store.schema import Schema
from mailflow.triage import Scale, Signal, Triage
from mailflow.values import CaseStatus, Direction, OutgoingMail, Priority, Timer, Verdict

__all__ = [
    "AGENTS",
    "ALL_DIRECTIONS",
    "AUTOMATIC",
    "REPLY_TOKENS",
    "ROUTES",
    "SERVICE_DIRECTIONS",
    "TEAMS",
    "TO_ANSWER",
    "TRIAGE_SCALE",
    "Automatic",
    "CaseAnswered",
    "CaseClosed",
    "CaseEvent",
    "CaseInfo",
    "CaseOpened",
    "CaseReopened",
    "CaseSettled",
    "CaseStatus",
    "Command",
    "Decision",
    "Direction",
    "Effects",
    "Envelope",
    "Host",
    "Housekeeping",
    "KnownLabels",
    "LanguageGuess",
    "Letter",
    "Listener",
    "MailWriter",
    "Message",
    "MessageContext",
    "Model",
    "OutgoingMail",
    "Priority",
    "Purge", "ReportSection", "Route",
    "Scale",
    "Schema",
    "ScopePart",
    "ServiceKey",
    "Services",
    "SessionInfo",
    "Signal",
    "SmtpReply",
    "Stage",
    "StageEnv",
    "StageOptions",
    "StageStore",
    "Stash",
    "StashKey",
    "Timer",
    "TimerContext",
    "TimerHandler",
    "Transaction",
    "Triage",
    "Verdict",
    "WriteOp",
    "Written",
    "WsgiApp",
    "answering",
    "hookimpl",
]
