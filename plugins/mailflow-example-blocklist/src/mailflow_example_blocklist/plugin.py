"""The ``blocklist`` plugin: one rules section, one SMTP hook, one chain stage.

- ``mailflow_mail_from`` refuses a listed envelope sender with ``550 5.7.1``
  before the message is even sent (cheapest place to say no);
- the ``blocklist`` stage (when named in ``chain:``) marks every message it
  checked with a header, and quarantines a message whose ``From:`` is listed
  or whose Subject matches one of the configured patterns.

Both read the same rules section, ``blocklist:``, claimed with
``mailflow_rules_section`` and validated by :class:`BlocklistOptions` when the
configuration is loaded (so a typo is reported by ``mailflow check`` at
``file:line:column``, whether or not the stage is in the chain) and re-read on
SIGHUP. No module-level state: the hook receives the section as ``options``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import structlog
from pydantic import Field, field_validator

from mailflow.plugin import (
    Host,
    KnownLabels,
    MessageContext,
    SessionInfo,
    SmtpReply,
    Stage,
    StageEnv,
    StageOptions,
    Verdict,
    hookimpl,
)

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


# -- the SMTP hook ---------------------------------------------------------------
#
# The plugin claims its rules section: mailflow validates it at load time and
# hands the hook the model now in force (a reload swaps it whole), so the hook
# keeps no state of its own.


@hookimpl
def mailflow_rules_section() -> tuple[str, type[BlocklistOptions]]:
    return SECTION, BlocklistOptions


@hookimpl
def mailflow_mail_from(session: SessionInfo, address: str, options: BlocklistOptions,
                       host: Host) -> SmtpReply | None:
    if not options.blocks(address):
        return None
    log.info("blocklist_refused", peer=session.peer, helo=session.helo, mail_from=address)
    host.metrics.counter("mailflow_blocklist_refused_total",
                         "Senders refused at MAIL FROM by the blocklist").inc()
    return SmtpReply(550, options.reply, "5.7.1")


# -- the chain stage --------------------------------------------------------------


class BlocklistStage(Stage[BlocklistOptions]):
    name = "blocklist"
    description = "mark checked mail; quarantine listed From: addresses and subject patterns"
    on_error = "skip"  # a broken blocklist should not stop the customer service's mail

    def __init__(self, options: BlocklistOptions, env: StageEnv) -> None:
        super().__init__(options, env)
        self.patterns = [re.compile(p, re.IGNORECASE) for p in options.quarantine_subjects]
        self.quarantined = env.metrics.counter(
            "mailflow_blocklist_quarantined_total",
            "Messages quarantined by the blocklist stage", ["reason"])

    def known_labels(self) -> Iterable[KnownLabels]:
        # both reasons exported at 0 from the start: a dashboard shows 0, not "No data"
        return [KnownLabels.of("mailflow_blocklist_quarantined_total",
                               reason=["from", "subject"])]

    async def process(self, ctx: MessageContext) -> None:
        options = self.options
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
def mailflow_stages() -> Iterable[type[Stage[Any]]]:
    return [BlocklistStage]
