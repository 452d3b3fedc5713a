"""How ``mailflow try`` says what the daemon decided, for a person at a terminal: each
stage's decision, and every mail the message would cause, rendered as its reader
would see it (headers decoded, the text body), so a team editing a template sees the
acknowledgement without sending one."""

from __future__ import annotations

import email
from email.message import EmailMessage
from email.policy import default
from typing import Any

from mailflow.chain import DEFAULT_REPLIES
from mailflow.values import Verdict


def shown(data: bytes) -> dict[str, Any]:
    """A mail mailflow would send, as its reader sees it: headers decoded, the text, and
    what is attached."""
    mail = email.message_from_bytes(data, policy=default)
    assert isinstance(mail, EmailMessage)
    body = mail.get_body(preferencelist=("plain",))
    text = body.get_content() if isinstance(body, EmailMessage) else ""
    attached = [part.get_content_type() for part in mail.iter_attachments()]
    return {"headers": [{"name": k, "value": str(v)} for k, v in mail.items()],
            "text": text, "attachments": attached}


def _mail_lines(mail: dict[str, Any]) -> list[str]:
    lines = [f"  | {h['name']}: {h['value']}" for h in mail.get("headers", ())]
    lines.append("  |")
    lines.extend(f"  | {line}".rstrip() for line in str(mail.get("text", "")).splitlines())
    lines.extend(f"  | [attached: {kind}]" for kind in mail.get("attachments", ()))
    return lines


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


def _fact_lines(facts: dict[str, Any] | None) -> list[str]:
    if not facts:
        return []
    automatic = (f"yes: {facts['automatic']} (sign: {facts['automatic_sign']})"
                 if facts["automatic"] else "no")
    return [f"automatic {automatic}",
            f"language  {facts['language'] or 'unsure'} ({facts['language_why']})"]


def _state_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    if report["direction"]:
        lines.append(f"direction {report['direction']} ({report['direction_reason']})")
    if report.get("agent"):
        lines.append(f"agent     {report['agent']} (as the statistics name them)")
    lines.extend(_fact_lines(report.get("facts")))
    if case := report["case"]:
        lines.append(f"case      {case['number']} ({case['status']}) customer {case['customer']}")
    if triage := report["triage"]:
        lines.append(f"triage    {triage['priority']} (score {triage['score']:g})")
        lines.extend(f"  signal  {s['name']} {s['weight']:+g}" + (f"  {s['why']}" if s["why"]
                                                                   else "")
                     for s in triage["signals"])
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


def outcome_lines(report: dict[str, Any]) -> list[str]:
    """What the verdict means for the client and the recipients, and what is queued."""
    verdict = report["verdict"]
    reply = report["reply"] or DEFAULT_REPLIES.get(Verdict(verdict), "")
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
    for m in report["outgoing"]:
        said.append(f"outbox    {m['kind']} to {', '.join(m['rcpt_to'])} ({m['bytes']} bytes)"
                    f"{unless}")
        said.extend(_mail_lines(m))
    said.extend(f"timer     {t['kind']} {t['key']} due {t['due_local']}{unless}"
                for t in report["timers"])
    return said
