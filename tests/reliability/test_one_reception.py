"""``mailflow try`` and the live daemon are one reception: for every message of
../shared/corpus and ../shared/realmail, what ``try`` says the daemon would decide (its
direction, whether it is automatic and why, the case decision, the route) is what the
daemon then decides when the same bytes arrive over SMTP.

One real daemon with the shipped rules (whole chain), one real SQLite store: before
each message is sent, ``DryRun`` (the code behind ``mailflow try``) judges it on that
store, read-only, as the store stands then; the daemon's log line for the message says
what it decided live. Messages go one after the other, so each dry run sees every
earlier message committed: follow-ups, copies and resends are predicted too.
Collected only where ../shared exists (see tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from ruamel.yaml import YAML
from test_corpora import CRLF, crlf, stuff
from test_realmail import envelopes

from conftest import CORPUS, REALMAIL, Daemon, Sink, full_chain_rules, report
from mailflow.cli.try_message import DryRun
from mailflow.config import load_settings
from rawsmtp import RawClient

pytestmark = pytest.mark.slow

#: ``250 2.0.0 Ok: queued as ID``, or ``250 2.0.0 Ok: ID discard`` for a kept message
_QUEUED = re.compile(rb"(?:queued as|Ok:) ([0-9A-F]{12,})\b")


@dataclass
class Sent:
    name: str
    mail_from: str
    rcpt_to: list[str]
    raw: bytes
    predicted: dict[str, Any] = field(default_factory=dict)
    live: dict[str, Any] | None = None
    code: int = 0


def corpus_messages() -> list[Sent]:
    index = YAML(typ="safe").load((CORPUS / "index.yaml").read_text(encoding="utf-8"))
    return [Sent(f"corpus/{m['file']}", m["mail_from"], list(m["rcpt_to"]),
                 (CORPUS / m["file"]).read_bytes()) for m in index["messages"]]


def realmail_messages() -> list[Sent]:
    index = json.loads((REALMAIL / "index.json").read_text(encoding="utf-8"))["messages"]
    return [Sent(f"realmail/{e.file}", e.sender, ["sav@example.com"],
                 (REALMAIL / e.file).read_bytes()) for e in envelopes(index)]


def decided(trial: dict[str, Any]) -> dict[str, Any]:
    """What ``try`` says, in the terms the daemon's log line uses."""
    facts, case = trial["facts"] or {}, trial["case"]
    automatic = (f"{facts['automatic_sign']}: {facts['automatic']}"
                 if facts.get("automatic") else None)
    return {"direction": trial["direction"], "automatic": automatic,
            "case": case["number"] if case else None,
            "case_status": case["status"] if case else None,
            "route": case["route"] if case else None, "verdict": trial["verdict"]}


def send(client: RawClient, sent: Sent) -> bytes | None:
    """One transaction; the queue id of a 250."""
    options = b" SMTPUTF8" if not sent.mail_from.isascii() else b""
    code, text = client.cmd(b"MAIL FROM:<" + sent.mail_from.encode() + b">" + options)
    assert code == 250, (sent.name, code, text)
    for rcpt in sent.rcpt_to:
        code, text = client.cmd(b"RCPT TO:<" + rcpt.encode() + b">")
        assert code == 250, (sent.name, code, text)
    code, text = client.cmd(b"DATA")
    assert code == 354, (sent.name, code, text)
    data = sent.raw if CRLF in sent.raw else crlf(sent.raw)
    client.send(stuff(data if data.endswith((b"\n", b"\r")) else data + CRLF))
    sent.code, text = client.reply()
    if sent.code != 250:
        client.cmd(b"RSET")
        return None
    found = _QUEUED.search(text)
    assert found is not None, (sent.name, text)
    return found.group(1)


def live_decisions(log: str) -> dict[str, dict[str, Any]]:
    """queue id -> the daemon's ``message`` log line."""
    lines = (json.loads(line) for line in log.splitlines() if line.startswith("{"))
    return {e["queue_id"]: e for e in lines if e.get("event") == "message"}


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Sent]]:
    tmp = tmp_path_factory.mktemp("one-reception")
    sink = Sink(long_lines=True)
    sink.start()
    rules = full_chain_rules(tmp / "rules",
                             acknowledge={"limits": {"global_per_minute": 100000,
                                                        "global_per_hour": 100000}})
    daemon = Daemon(tmp / "d", f"smtp://127.0.0.1:{sink.port}",
                    {"smtp": {"max_line_length": 1 << 20}}, rules=rules)
    messages = corpus_messages() + realmail_messages()
    try:
        daemon.start()
        settings = load_settings(str(daemon.config_path), {})
        queue_ids = asyncio.run(_run(daemon, settings, messages))
    finally:
        daemon.stop()  # its log is complete once it has stopped
        sink.stop()
    live = live_decisions(daemon.log)
    for sent, queue_id in zip(messages, queue_ids, strict=True):
        sent.live = live.get(queue_id.decode()) if queue_id else None
    yield messages


async def _run(daemon: Daemon, settings: Any, messages: list[Sent]) -> list[bytes | None]:
    client = RawClient(daemon.port, timeout=60)
    client.greet()
    queue_ids = []
    async with DryRun(settings) as dry:
        for sent in messages:
            trial = await dry.trial(sent.raw, mail_from=sent.mail_from,
                                    rcpt_to=sent.rcpt_to, peer="127.0.0.1")
            sent.predicted = decided(trial)
            queue_ids.append(send(client, sent))
    client.cmd(b"QUIT")
    return queue_ids


def test_try_predicts_what_the_daemon_decides(both: list[Sent]) -> None:
    differ = []
    compared = 0
    for sent in both:
        if sent.code != 250:  # refused: try must have said so
            assert sent.predicted["verdict"] in ("reject", "tempfail"), (sent.name, sent.code)
            continue
        assert sent.live is not None, f"{sent.name}: no log line"
        live = {key: sent.live.get(key) for key in sent.predicted if key != "verdict"}
        predicted = {key: value for key, value in sent.predicted.items() if key != "verdict"}
        if sent.live.get("direction") not in ("inbound", "reply"):
            # the service's mail only is logged with its case and addresses
            live = {k: v for k, v in live.items() if k in ("direction", "automatic")}
            predicted = {k: v for k, v in predicted.items() if k in live}
        compared += 1
        if live != predicted:
            differ.append((sent.name, predicted, live))
    automatic = sum(bool(s.predicted["automatic"]) for s in both)
    new = sum(s.predicted["case_status"] == "new" for s in both)
    report(f"[one reception] {compared} messages: try and the daemon agree on direction,"
           f" automatic verdict, case and route for {compared - len(differ)}"
           f" ({automatic} automatic, {new} new cases)")
    assert not differ, differ[:5]
    assert compared > 600


def test_the_shipped_signs_name_each_automatic_verdict(both: list[Sent]) -> None:
    """Every automatic verdict carries the sign that decided, as the logs show it."""
    verdicts = [s.live["automatic"] for s in both if s.live and s.live.get("automatic")]
    assert len(verdicts) > 150
    assert all(": " in v and v.split(": ", 1)[0] for v in verdicts)
