"""The ``blocklist`` plugin: one rules section, one SMTP hook, one chain stage.

- ``mailflow_mail_from`` refuses a listed envelope sender with ``550 5.7.1``
  before the message is even sent (cheapest place to say no);
- the ``blocklist`` stage (when named in ``chain:``) marks every message it
  checked with a header, and quarantines a message whose ``From:`` is listed
  or whose Subject matches one of the configured patterns.

Both read the same rules section, ``blocklist:``, validated by
:class:`BlocklistOptions` when the configuration is loaded (so a typo is
reported by ``mailflow check`` at ``file:line:column``) and re-read on SIGHUP.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import Field, ValidationError, field_validator

from mailflow.hookspecs import hookimpl
from mailflow.session import SessionInfo, SmtpReply
from mailflow.stage import MessageContext, Stage, StageEnv, StageOptions, Verdict

if TYPE_CHECKING:
    from mailflow.daemon import Application
    from mailflow.rules import RuleSet

log = structlog.get_logger("mailflow.plugins.blocklist")

SECTION = "blocklist"


class BlocklistOptions(StageOptions):
    """The ``blocklist:`` rules section (plus ``timeout``/``on_error`` of every stage)."""

    senders: list[str] = Field(
        default_factory=list,
        description="addresses (user@domain) or domains (@domain, domain; subdomains included)")
    quarantine_subjects: list[str] = Field(
        default_factory=list, description="regular expressions, matched case-insensitively")
    reply: str = Field("Sender blocked by local policy", description="text of the 550 reply")
    header: str = Field("X-Mailflow-Blocklist-Checked",
                        description="header added to every message the stage checked")

    @field_validator("senders")
    @classmethod
    def _senders(cls, value: list[str]) -> list[str]:
        cleaned = []
        for entry in value:
            entry = entry.strip().lower()
            if not entry or any(c.isspace() or c in "<>" for c in entry):
                raise ValueError(f"'{entry}' is not an address or a domain")
            cleaned.append(entry)
        return cleaned

    @field_validator("quarantine_subjects")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"'{pattern}' is not a regular expression: {exc}") from None
        return value

    @field_validator("reply")
    @classmethod
    def _reply(cls, value: str) -> str:
        if any(c in value for c in "\r\n\0"):
            raise ValueError("the reply must be one line")
        return value

    def blocks(self, address: str) -> bool:
        """True when ``address`` (an addr-spec) is listed, by itself or by its domain."""
        address = address.strip().lower()
        if not address:  # the null sender carries bounces: never refuse it
            return False
        domain = address.rpartition("@")[2]
        for entry in self.senders:
            if "@" in entry and not entry.startswith("@"):
                if address == entry:
                    return True
                continue
            listed = entry.lstrip("@")
            if domain == listed or domain.endswith("." + listed):
                return True
        return False


# -- the SMTP hook --------------------------------------------------------------
#
# Hooks get the session and the address, not the rules: the daemon hands
# itself to ``mailflow_startup``, and ``app.runtime`` is always the live
# configuration (a reload swaps it whole), so the hook reads its section there.


class _State:
    app: Application | None = None
    cached: tuple[RuleSet, BlocklistOptions] | None = None
    refused: Any = None  # a prometheus Counter once the daemon started


def _options(app: Application) -> BlocklistOptions:
    rules = app.runtime.rules
    if _State.cached is None or _State.cached[0] is not rules:
        section = rules.section(SECTION)
        data = section.data if section is not None and section.data is not None else {}
        try:
            options = BlocklistOptions.model_validate(data)
        except ValidationError as exc:
            # mailflow validates a section when its stage is in the chain; without
            # the stage, a mistake shows here: say so once, and refuse nobody
            where = f"{section.file}:{section.line}:{section.column}" if section else SECTION
            log.error("blocklist_bad_rules", where=where, errors=exc.errors(include_url=False),
                      detail="no sender is refused until the section is fixed")
            options = BlocklistOptions()
        _State.cached = (rules, options)
    return _State.cached[1]


@hookimpl
def mailflow_startup(app: Application) -> None:
    _State.app = app
    _State.cached = None
    _State.refused = app.metric_factory.counter(
        "mailflow_blocklist_refused_total", "Senders refused at MAIL FROM by the blocklist")


@hookimpl
def mailflow_shutdown(app: Application) -> None:
    _State.app = None
    _State.cached = None


@hookimpl
def mailflow_mail_from(session: SessionInfo, address: str) -> SmtpReply | None:
    if _State.app is None:
        return None
    options = _options(_State.app)
    if not options.blocks(address):
        return None
    log.info("blocklist_refused", peer=session.peer, helo=session.helo, mail_from=address)
    if _State.refused is not None:
        _State.refused.inc()
    return SmtpReply(550, options.reply, "5.7.1")


# -- the chain stage --------------------------------------------------------------


class BlocklistStage(Stage):
    name = "blocklist"
    description = "mark checked mail; quarantine listed From: addresses and subject patterns"
    Options = BlocklistOptions
    on_error = "skip"  # a broken blocklist should not stop the customer service's mail

    def __init__(self, options: StageOptions, env: StageEnv) -> None:
        super().__init__(options, env)
        assert isinstance(options, BlocklistOptions)
        self.patterns = [re.compile(p, re.IGNORECASE) for p in options.quarantine_subjects]
        self.quarantined = env.metrics.counter(
            "mailflow_blocklist_quarantined_total",
            "Messages quarantined by the blocklist stage", ["reason"])

    async def process(self, ctx: MessageContext) -> None:
        options = self.options
        assert isinstance(options, BlocklistOptions)
        message = ctx.message
        ctx.set_header(options.header, "yes")
        listed = [a for a in message.addresses("from") if options.blocks(a)]
        if listed:
            self._quarantine(ctx, "from", f"From: {listed[0]} is blocklisted")
            return
        for pattern in self.patterns:
            if pattern.search(message.subject):
                self._quarantine(ctx, "subject", f"subject matches {pattern.pattern!r}")
                return
        ctx.note(checked=True)

    def _quarantine(self, ctx: MessageContext, reason: str, detail: str) -> None:
        self.quarantined.labels(reason=reason).inc()
        log.info("blocklist_quarantined", queue_id=ctx.queue_id, reason=detail,
                 message_id=ctx.message.message_id)
        ctx.set_verdict(Verdict.QUARANTINE, detail)


@hookimpl
def mailflow_stages() -> Iterable[type[Stage]]:
    return [BlocklistStage]
