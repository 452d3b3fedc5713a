"""``mailflow try``: run one message through what the daemon does, and say what it decided.

A dry run: the daemon's own intake (relay check, bare-newline policy,
forged-header removal, one parse, hop count), then the chain on a store
opened read-only. Nothing is committed, no mail is sent. Stages see
``ctx.dry_run`` and must not write outside ``ctx``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Collection
from dataclasses import asdict, replace
from email.utils import getaddresses
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mailflow import direction, intake
from mailflow.chain import describe
from mailflow.cli.cases import when
from mailflow.cli.options import settings_from, sqlite_path
from mailflow.clock import SYSTEM_CLOCK
from mailflow.config import Settings
from mailflow.context import MessageContext
from mailflow.escalation import tokens
from mailflow.message import Envelope, Message
from mailflow.runtime import Runtime, load_runtime
from mailflow.session import SessionInfo
from mailflow.store import open_store

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


def _missing_sqlite(url: str) -> bool:
    """A SQLite store that does not exist yet (nothing received so far)."""
    path = sqlite_path(url)
    return path is not None and not path.exists()


async def _run_chain(runtime: Runtime, settings: Settings, ctx: MessageContext) -> None:
    """The chain on the real store, read-only: nothing it asks for is carried out.

    With no store yet, an empty one in a temporary folder stands in (and is
    thrown away), so a dry run never creates the daemon's own.
    """
    with tempfile.TemporaryDirectory(prefix="mailflow-try-") as tmp:
        if _missing_sqlite(settings.store_url):
            store = open_store(f"sqlite:///{Path(tmp) / 'dry-run.sqlite3'}")
        else:
            store = open_store(settings.store_url, readonly=True)
        await store.open()
        try:
            ctx.store = store
            await runtime.chain.process(ctx)
        finally:
            await store.close()


async def _valid_tokens(settings: Settings, message: Message,
                        runtime: Runtime) -> Collection[direction.Token]:
    """The reply-address tokens the daemon's store confirms (an expert's answer), as the
    daemon checks them before deciding the direction; none without a store yet."""
    scope = runtime.chain.scope
    if not direction.reply_tokens(message, scope) or _missing_sqlite(settings.store_url):
        return ()
    store = open_store(settings.store_url, readonly=True)
    await store.open()
    try:
        return await tokens.verified(message, scope, store, SYSTEM_CLOCK.now())
    finally:
        await store.close()


async def run_trial(settings: Settings, raw: bytes, *, mail_from: str | None = None,
                    rcpt_to: list[str] | None = None, peer: str = "192.0.2.1",
                    submission: bool = False) -> dict[str, Any]:
    """What the daemon would decide on ``raw``, as plain data; changes nothing."""
    runtime = load_runtime(settings)
    trusted = SessionInfo.in_networks(peer, settings.networks)
    given = Envelope(mail_from=mail_from or "", rcpt_to=tuple(rcpt_to or ()), peer=peer,
                     helo="try")
    prepared = await intake.prepare(raw, given, settings.smtp, trusted=trusted)
    envelope = envelope_for(prepared.message, mail_from, rcpt_to, peer)
    refused = {rcpt: reply for rcpt in envelope.rcpt_to
               if (reply := intake.relay_refusal(rcpt, runtime.rules, trusted))}
    accepted = [rcpt for rcpt in envelope.rcpt_to if rcpt not in refused]
    # the daemon refuses recipients at RCPT, before the message is even sent
    refusal = next(iter(refused.values())) if not accepted else prepared.refusal
    ctx = None
    if refusal is None and prepared.message is not None:
        message = replace(prepared.message, envelope=replace(envelope, rcpt_to=tuple(accepted)))
        judged = direction.decide(message, runtime.chain.scope,
                                  direction.Source(trusted, submission),
                                  await _valid_tokens(settings, message, runtime))
        ctx = MessageContext(message=message, queue_id="DRY-RUN", recipients=accepted,
                             trusted=trusted, dry_run=True, direction=judged.direction,
                             direction_reason=judged.reason, author=judged.agent,
                             mailbox=judged.mailbox)
        await _run_chain(runtime, settings, ctx)
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
    return {
        "decisions": describe(ctx.decisions),
        "verdict": ctx.verdict.value,
        "reply": ctx.reply,
        "failed_stages": [d.stage for d in ctx.decisions if d.outcome in ("error", "timeout")],
        "recipients": ctx.recipients,
        "headers": [{"name": n, "value": v} for n, v in ctx.added_headers],
        "outgoing": [{"kind": m.kind, "rcpt_to": list(m.rcpt_to), "mail_from": m.mail_from,
                      "bytes": len(m.data)} for m in ctx.outgoing],
        "timers": [{"kind": t.kind, "key": t.key, "due": t.due, "due_local": when(t.due, zone)}
                   for t in ctx.timers],
        "direction": ctx.direction.value,
        "direction_reason": ctx.direction_reason,
        "case": asdict(ctx.case) if ctx.case is not None else None,
        "triage": asdict(ctx.triage) if ctx.triage is not None else None,
        "stash": ctx.stash.named(),
    }


def _refused_report(refusal: str | None, accepted: list[str]) -> dict[str, Any]:
    """Refused before the chain: no stage ran."""
    return {"decisions": [], "verdict": "reject", "reply": refusal, "failed_stages": [],
            "recipients": accepted, "headers": [], "outgoing": [], "timers": [],
            "direction": None, "direction_reason": "", "case": None, "triage": None, "stash": {}}


def _intake_lines(report: dict[str, Any]) -> list[str]:
    seen = report["intake"]
    lines = [f"refused   {rcpt}: {reply}" for rcpt, reply in seen["refused_recipients"].items()]
    if seen["newlines_fixed"]:
        lines.append("intake    bare CR or LF made CRLF")
    if seen["headers_removed"]:
        lines.append(f"intake    {seen['headers_removed']} X-Mailflow header(s) removed")
    if seen["refusal"]:
        lines.append(f"intake    refused before the chain: {seen['refusal']}")
    return lines


def _state_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    if report["direction"]:
        lines.append(f"direction {report['direction']} ({report['direction_reason']})")
    if case := report["case"]:
        lines.append(f"case      {case['number']} ({case['status']}) customer {case['customer']}")
    if triage := report["triage"]:
        lines.append(f"triage    {triage['priority']} (score {triage['score']})")
    lines.extend(f"stash     {key}: {value}" for key, value in report["stash"].items())
    return lines


def format_report(report: dict[str, Any]) -> str:
    """The report for a human at a terminal."""
    env, msg = report["envelope"], report["message"]
    lines = [
        f"message   {msg['subject']!r}  <{msg['message_id']}>  ({msg['content_type']})",
        f"envelope  from <{env['mail_from']}> to {', '.join(env['rcpt_to'])} (peer {env['peer']})",
    ]
    if msg["defects"]:
        lines.append(f"defects   {'; '.join(msg['defects'])}")
    if msg["cut"]:
        lines.append(f"own text  {msg['own_text_chars']} of {msg['text_chars']} characters;"
                     " the rest is not the customer's own words:")
        lines.extend(f"  {c['reason']:<12} lines {c['lines'][0]}-{c['lines'][1]}: {c['first']!r}"
                     if c["lines"][0] <= c["lines"][1] else f"  {c['reason']:<12} {c['first']}"
                     for c in msg["cut"])
    lines.extend(_intake_lines(report))
    lines.append(f"chain     {' -> '.join(report['chain']) or '(empty)'}")
    for d in report["decisions"]:
        verdict = f" => {d['verdict']}" if d["verdict"] else ""
        reason = f" ({d['reason']})" if d["reason"] else ""
        lines.append(f"  {d['stage']:<14} {d['outcome']}{verdict}{reason}  [{d['ms']} ms]")
        lines.extend(f"      {key}: {value}" for key, value in d["notes"].items())
    lines.append(f"verdict   {report['verdict']}" + (f"  reply: {report['reply']}"
                                                     if report["reply"] else ""))
    lines.extend(_state_lines(report))
    lines.extend(outcome_lines(report))
    return "\n".join(lines)


#: what the client hears when the chain gives no reply of its own (as the pipeline says)
DEFAULT_REPLIES = {"reject": "550 5.7.1 Message refused by policy",
                   "tempfail": "451 4.3.0 Try again later"}


def outcome_lines(report: dict[str, Any]) -> list[str]:
    """What the verdict means for the client and the recipients, and what is queued."""
    verdict = report["verdict"]
    reply = report["reply"] or DEFAULT_REPLIES.get(verdict, "")
    refused = verdict in ("reject", "tempfail")
    if verdict == "tempfail":
        said = [f'outcome   the client would get "{reply}" and retry later; nothing delivered']
    elif verdict == "reject":
        said = [f'outcome   the client would get "{reply}" and not retry; nothing delivered']
    elif verdict == "discard":
        said = ["outcome   the client would get 250 and the message is dropped;"
                " nothing delivered"]
    elif verdict == "quarantine":
        said = ["outcome   the client would get 250 and the message is kept in the store's"
                " quarantine; nothing delivered"]
    else:
        said = [f"deliver   to {', '.join(report['recipients'])}"]
        said.extend(f"header    {h['name']}: {h['value']}" for h in report["headers"])
    # a refused message commits nothing the chain asked for: its mail and timers are dropped
    unless = "  (not queued: the message is refused)" if refused else ""
    said.extend(f"outbox    {m['kind']} to {', '.join(m['rcpt_to'])} ({m['bytes']} bytes)"
                f"{unless}" for m in report["outgoing"])
    said.extend(f"timer     {t['kind']} {t['key']} due {t['due_local']}{unless}"
                for t in report["timers"])
    return said


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
