"""``mailflow try``: run the chain on one message and say what each stage decided.

A dry run: the store is opened read-only (or an empty one is made in a
temporary folder when none exists yet), nothing is committed, no mail is
sent. Stages see ``ctx.dry_run`` and must not write outside ``ctx``.
"""

from __future__ import annotations

import os
import tempfile
from email.utils import getaddresses
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from mailflow.chain import describe
from mailflow.config import Settings
from mailflow.message import Envelope, parse_message
from mailflow.pipeline import normalize_newlines, strip_internal_headers
from mailflow.runtime import load_runtime
from mailflow.session import SessionInfo
from mailflow.stage import MessageContext
from mailflow.store import Store
from mailflow.store.sqlite import SqliteStore


def _first_address(raw: bytes, header: str) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    values = []
    for line in head.replace("\r\n ", " ").replace("\r\n\t", " ").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == header:
            values.append(value)
    return [addr for _, addr in getaddresses(values) if addr]


async def _open_dry_store(settings: Settings, tmp: str) -> Store:
    url = settings.store_url
    path = Path(unquote(url.removeprefix("sqlite:///")))
    if url.startswith("sqlite:///") and os.path.exists(path):  # noqa: ASYNC240 (CLI, once)
        return SqliteStore(str(path), readonly=True)
    store = SqliteStore(str(Path(tmp) / "dry-run.sqlite3"))
    await store.open()
    return store


async def run_trial(settings: Settings, raw: bytes, *, mail_from: str | None = None,
                    rcpt_to: list[str] | None = None, peer: str = "192.0.2.1") -> dict[str, Any]:
    """The chain's decisions on ``raw`` as plain data; changes nothing."""
    runtime = load_runtime(settings)
    raw = normalize_newlines(raw)
    trusted = SessionInfo.in_networks(peer, settings.networks)
    if not trusted:
        raw, _ = strip_internal_headers(raw)
    sender = mail_from if mail_from is not None else next(iter(_first_address(raw, "from")), "")
    recipients = rcpt_to or _first_address(raw, "to") or ["postmaster@localhost"]
    envelope = Envelope(mail_from=sender, rcpt_to=tuple(recipients), peer=peer, helo="try")
    message = parse_message(raw, envelope)
    with tempfile.TemporaryDirectory(prefix="mailflow-try-") as tmp:
        store = await _open_dry_store(settings, tmp)
        try:
            ctx = MessageContext(message=message, queue_id="DRY-RUN", recipients=list(recipients),
                                 store=store, trusted=trusted, dry_run=True)
            await runtime.chain.run(ctx)
        finally:
            await store.close()
    refused_by = [d.stage for d in ctx.decisions if d.outcome in ("error", "timeout")]
    return {
        "envelope": {"mail_from": sender, "rcpt_to": recipients, "peer": peer},
        "message": {"subject": message.subject, "message_id": message.message_id,
                    "content_type": message.content_type, "defects": message.defects,
                    "text_chars": len(message.text)},
        "chain": list(runtime.chain.names),
        "decisions": describe(ctx.decisions),
        "verdict": ctx.verdict.value,
        "reply": ctx.reply,
        "failed_stages": refused_by,
        "recipients": ctx.recipients,
        "headers": [{"name": n, "value": v} for n, v in ctx.added_headers],
        "outgoing": [{"kind": m.kind, "rcpt_to": list(m.rcpt_to), "mail_from": m.mail_from,
                      "bytes": len(m.data)} for m in ctx.outgoing],
        "timers": [{"kind": t.kind, "key": t.key, "due": t.due} for t in ctx.timers],
        "attributes": ctx.attributes,
    }


def format_report(report: dict[str, Any]) -> str:
    """The report for a human at a terminal."""
    env, msg = report["envelope"], report["message"]
    lines = [
        f"message   {msg['subject']!r}  <{msg['message_id']}>  ({msg['content_type']})",
        f"envelope  from <{env['mail_from']}> to {', '.join(env['rcpt_to'])} (peer {env['peer']})",
    ]
    if msg["defects"]:
        lines.append(f"defects   {'; '.join(msg['defects'])}")
    lines.append(f"chain     {' -> '.join(report['chain']) or '(empty)'}")
    for d in report["decisions"]:
        verdict = f" => {d['verdict']}" if d["verdict"] else ""
        reason = f" ({d['reason']})" if d["reason"] else ""
        lines.append(f"  {d['stage']:<14} {d['outcome']}{verdict}{reason}  [{d['ms']} ms]")
        for key, value in d["notes"].items():
            lines.append(f"      {key}: {value}")
    lines.append(f"verdict   {report['verdict']}" + (f"  reply: {report['reply']}"
                                                     if report["reply"] else ""))
    lines.append(f"deliver   to {', '.join(report['recipients'])}")
    for h in report["headers"]:
        lines.append(f"header    {h['name']}: {h['value']}")
    for m in report["outgoing"]:
        lines.append(f"outbox    {m['kind']} to {', '.join(m['rcpt_to'])} ({m['bytes']} bytes)")
    for t in report["timers"]:
        lines.append(f"timer     {t['kind']} {t['key']} due {t['due']}")
    return "\n".join(lines)
