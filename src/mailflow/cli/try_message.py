"""``mailflow try``: the daemon's own reception on one message, and what it decided.

A dry run: :class:`~mailflow.reception.Reception`, the very path of the SMTP
listener (relay check, bare-newline policy, forged-header removal, one parse,
the facts, the direction, the chain), on the daemon's store opened read-only.
Nothing is committed, no mail is sent. Stages see ``ctx.dry_run`` and must not
write outside ``ctx``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
from dataclasses import asdict, replace
from email.utils import getaddresses
from pathlib import Path
from types import TracebackType
from typing import Any
from zoneinfo import ZoneInfo

from mailflow import intake
from mailflow.chain import describe
from mailflow.cli.cases import when
from mailflow.cli.options import settings_from, sqlite_path
from mailflow.cli.try_report import format_report, shown
from mailflow.config import Settings
from mailflow.context import MessageContext
from mailflow.message import Envelope, Message
from mailflow.reception import Door, Reception
from mailflow.runtime import Runtime, load_runtime
from mailflow.session import SessionInfo
from mailflow.store import Store, open_store

DEFAULT_RECIPIENT = "postmaster@localhost"


def header_addresses(message: Message, name: str) -> list[str]:
    """The addresses of every ``name`` header, as written (the envelope keeps their case)."""
    key = name.lower()
    values = [h.raw.partition(b":")[2].decode("utf-8", "replace").replace("\r\n", "")
              for h in message.headers if h.name.lower() == key]
    return [addr for _, addr in getaddresses(values) if addr]


def envelope_for(message: Message | None, mail_from: str | None, rcpt_to: list[str] | None,
                 peer: str) -> Envelope:
    """The envelope given on the command line, completed from From: and To:."""
    if mail_from is None:
        mail_from = next(iter(header_addresses(message, "from")), "") if message else ""
    recipients = rcpt_to or (header_addresses(message, "to") if message else []) \
        or [DEFAULT_RECIPIENT]
    return Envelope(mail_from=mail_from, rcpt_to=tuple(recipients), peer=peer, helo="try")


class DryRun:
    """The daemon's reception on a store it cannot change; ``async with`` opens the store
    once for as many trials as asked (with no store yet, an empty one in a temporary
    folder stands in, and is thrown away: a dry run never creates the daemon's own)."""

    def __init__(self, settings: Settings, runtime: Runtime | None = None) -> None:
        self.settings = settings
        self.runtime = runtime or load_runtime(settings)
        self.reception = Reception(settings.smtp, lambda: self.runtime.chain)
        self._exit = contextlib.AsyncExitStack()
        self.store: Store | None = None

    async def __aenter__(self) -> DryRun:
        path = sqlite_path(self.settings.store_url)
        if path is not None and not path.exists():
            scratch = Path(self._exit.enter_context(
                tempfile.TemporaryDirectory(prefix="mailflow-try-")))
            store = open_store(f"sqlite:///{scratch / 'dry-run.sqlite3'}")
            await store.open(self.runtime.schemas)
        else:
            store = open_store(self.settings.store_url, readonly=True)
            await store.open(())
        self._exit.push_async_callback(store.close)
        self.store = store
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._exit.aclose()

    async def trial(self, raw: bytes, *, mail_from: str | None = None,
                    rcpt_to: list[str] | None = None, peer: str = "192.0.2.1",
                    submission: bool = False) -> dict[str, Any]:
        """What the daemon would decide on ``raw``, as plain data; changes nothing."""
        assert self.store is not None, "use 'async with DryRun(...)'"
        runtime = self.runtime
        door = Door(SessionInfo.in_networks(peer, self.settings.networks), submission)
        given = Envelope(mail_from=mail_from or "", rcpt_to=tuple(rcpt_to or ()), peer=peer,
                         helo="try")
        prepared = await self.reception.prepare(raw, given, door)
        envelope = envelope_for(prepared.message, mail_from, rcpt_to, peer)
        refused = {rcpt: reply for rcpt in envelope.rcpt_to
                   if (reply := intake.relay_refusal(rcpt, runtime.rules, door.trusted))}
        accepted = [rcpt for rcpt in envelope.rcpt_to if rcpt not in refused]
        # the daemon refuses recipients at RCPT, before the message is even sent
        refusal = next(iter(refused.values())) if not accepted else prepared.refusal
        ctx = None
        if refusal is None and prepared.message is not None:
            message = replace(prepared.message,
                              envelope=replace(envelope, rcpt_to=tuple(accepted)))
            ctx = await self.reception.judge(message, door, self.store, queue_id="DRY-RUN",
                                             dry_run=True)
        report = {
            "envelope": {"mail_from": envelope.mail_from, "rcpt_to": list(envelope.rcpt_to),
                         "peer": peer},
            "message": _message_report(prepared.message),
            "intake": {"refusal": refusal, "refused_recipients": refused,
                       "newlines_fixed": prepared.newlines_fixed,
                       "headers_removed": prepared.headers_removed},
            "chain": list(runtime.chain.names),
        }
        report.update(_chain_report(ctx, runtime.rules.calendars.default.zone) if ctx
                      else _refused_report(refusal, accepted))
        return report


async def run_trial(settings: Settings, raw: bytes, *, mail_from: str | None = None,
                    rcpt_to: list[str] | None = None, peer: str = "192.0.2.1",
                    submission: bool = False) -> dict[str, Any]:
    """What the daemon would decide on ``raw``, as plain data; changes nothing."""
    async with DryRun(settings) as dry:
        return await dry.trial(raw, mail_from=mail_from, rcpt_to=rcpt_to, peer=peer,
                               submission=submission)


def _message_report(message: Message | None) -> dict[str, Any]:
    if message is None:
        return {"subject": "", "message_id": "", "content_type": "", "defects": [],
                "text_chars": 0, "own_text_chars": 0, "cut": []}
    own = message.customer_text
    return {"subject": message.subject, "message_id": message.message_id,
            "content_type": message.content_type, "defects": message.defects,
            "text_chars": len(message.text), "own_text_chars": len(own.text),
            "cut": [{"reason": c.reason, "lines": [c.start + 1, c.end], "first": c.first_line}
                    for c in own.cuts]}


def _chain_report(ctx: MessageContext, zone: ZoneInfo) -> dict[str, Any]:
    """What the chain decided and asked for (times also in the default calendar's zone);
    never the framework's caches."""
    triage = ctx.triage
    return {
        "decisions": describe(ctx.decisions),
        "verdict": ctx.verdict.value,
        "reply": ctx.reply,
        "failed_stages": [d.stage for d in ctx.decisions if d.outcome in ("error", "timeout")],
        "recipients": ctx.recipients,
        "headers": [{"name": n, "value": v} for n, v in ctx.added_headers],
        "outgoing": [{"kind": m.kind, "rcpt_to": list(m.rcpt_to), "mail_from": m.mail_from,
                      "bytes": len(m.data), **shown(m.data)} for m in ctx.outgoing],
        "timers": [{"kind": t.kind, "key": t.key, "due": t.due, "due_local": when(t.due, zone)}
                   for t in ctx.timers],
        "direction": ctx.direction.value,
        "direction_reason": ctx.direction_reason,
        "agent": ctx.agent_label if ctx.author else None,
        "facts": ctx.facts.shown(),
        "case": asdict(ctx.case) if ctx.case is not None else None,
        "triage": None if triage is None else {
            "priority": triage.priority, "score": triage.score,
            "signals": [asdict(signal) for signal in triage.signals]},
        "stash": ctx.stash.named(),
    }


def _refused_report(refusal: str | None, accepted: list[str]) -> dict[str, Any]:
    """Refused before the chain: no stage ran."""
    return {"decisions": [], "verdict": "reject", "reply": refusal, "failed_stages": [],
            "recipients": accepted, "headers": [], "outgoing": [], "timers": [],
            "direction": None, "direction_reason": "", "agent": None, "facts": None,
            "case": None, "triage": None, "stash": {}}


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    raw = sys.stdin.buffer.read() if args.message == "-" else Path(args.message).read_bytes()
    report = asyncio.run(run_trial(settings, raw, mail_from=args.mail_from,
                                   rcpt_to=args.rcpt_to, peer=args.peer,
                                   submission=args.submission))
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    else:
        print(format_report(report))
    return 0
