"""Escalation's pure parts: reply addresses and tokens, the direction of an expert's answer,
which rule matches, and the forward's shape."""

from __future__ import annotations

import email
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.policy import default
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from conftest import full_chain_rules
from mailflow.config import ConfigError, load_settings
from mailflow.direction import Scope, ScopePart, Source, decide, token_address
from mailflow.escalation import tokens
from mailflow.message import Envelope, parse_message
from mailflow.plugins import builtin_schemas
from mailflow.runtime import Runtime, load_runtime
from mailflow.stage import MessageContext
from mailflow.store.sqlite import SqliteStore
from mailflow.values import Direction

BASES = frozenset({"experts@example.com"})
TOKEN = "0123456789abcdef01234567"
SCOPE = Scope.of(["example.com"], [ScopePart(service_mailboxes={"contact@example.com": "x"},
                                             reply_addresses=BASES)])


@pytest.mark.parametrize(("address", "expected"), [
    (f"experts+CTC-20261123-00001-5.{TOKEN}@example.com", ("CTC-20261123-00001-5", TOKEN)),
    (f"Experts+ctc-20261123-00001-5.{TOKEN.upper()}@EXAMPLE.com",
     ("CTC-20261123-00001-5", TOKEN)),
    (f"experts+CTC-1-5.{TOKEN}@elsewhere.test", None),  # not our domain
    (f"sav+CTC-1-5.{TOKEN}@example.com", None),  # not the reply local part
    ("experts@example.com", None),  # the base address itself
    ("experts+CTC-1-5.short@example.com", None),  # no token of the right shape
    (f"experts+.{TOKEN}@example.com", None),  # no case
])
def test_token_address(address: str, expected: tuple[str, str] | None) -> None:
    assert token_address(address, BASES) == expected


def test_reply_address_round_trip_and_tokens_differ() -> None:
    token = tokens.new_token()
    address = tokens.reply_address("experts@example.com", "SAV-1-2", token)
    assert token_address(address, BASES) == ("SAV-1-2", token)
    assert len({tokens.new_token() for _ in range(50)}) == 50


def expert_mail(rcpt: str, extra: str = "") -> Any:
    raw = (f"From: lawyer@cabinet.test\r\nTo: {rcpt}\r\nSubject: avis\r\n{extra}\r\n"
           "Mon avis.\r\n").encode()
    return parse_message(raw, Envelope(mail_from="lawyer@cabinet.test", rcpt_to=(rcpt,)))


def test_a_valid_token_is_a_reply_from_any_network() -> None:
    rcpt = f"experts+SAV-1-2.{TOKEN}@example.com"
    judged = decide(expert_mail(rcpt), SCOPE, Source(trusted=False), {("SAV-1-2", TOKEN)})
    assert judged.direction is Direction.REPLY and judged.agent == "lawyer@cabinet.test"
    # an out-of-office too: the escalate stage records it, it cancels nothing
    auto = expert_mail(rcpt, "Auto-Submitted: auto-replied\r\n")
    assert decide(auto, SCOPE, Source(trusted=False),
                  {("SAV-1-2", TOKEN)}).direction is Direction.REPLY


def test_an_unverified_token_is_customer_mail() -> None:
    """A wrong or expired token: the reply address is a service mailbox like any other."""
    rcpt = f"experts+SAV-1-2.{TOKEN}@example.com"
    for valid in ((), {("SAV-9-9", TOKEN)}):
        judged = decide(expert_mail(rcpt), SCOPE, Source(trusted=False), valid)
        assert judged.direction is Direction.INBOUND and judged.mailbox == rcpt.lower()
        assert "no valid token" in judged.reason


@pytest.mark.parametrize(("address", "ours"), [
    ("experts@example.com", True),
    ("Experts+anything@Example.com", True),
    (f"experts+SAV-1-2.{TOKEN}@example.com", True),
    ("experts+x@elsewhere.test", False),
    ("expertsx+y@example.com", False),
    ("contact+x@example.com", False),  # plus forms of other mailboxes are not widened
])
def test_reply_addresses_are_service_mailboxes(address: str, ours: bool) -> None:
    assert SCOPE.is_reply_address(address) is ours
    assert SCOPE.is_service_mailbox(address) is ours


# -- the stage over the shipped rules -------------------------------------------------


def runtime(tmp_path: Path, **changes: Any) -> Runtime:
    rules = full_chain_rules(tmp_path / "rules", **changes)
    return load_runtime(load_settings(None, {"rules": str(rules),
                                             "state_dir": str(tmp_path / "state")}))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(str(tmp_path / "store" / "mailflow.sqlite3"))
    await s.open(builtin_schemas())
    yield s
    await s.close()


NOTICE = (Path(__file__).parents[1] / "data" / "legal_notice.eml").read_bytes()


async def run(rt: Runtime, raw: bytes, store: SqliteStore, sender: str) -> MessageContext:
    message = parse_message(raw, Envelope(mail_from=sender, rcpt_to=("contact@example.com",)))
    ctx = MessageContext(message=message, queue_id="T1", recipients=["contact@example.com"],
                         store=store, mailbox="contact@example.com")
    await rt.chain.run(ctx)
    assert all(d.outcome == "ok" for d in ctx.decisions), ctx.decisions
    return ctx


def escalate_notes(ctx: MessageContext) -> dict[str, Any]:
    (decision,) = [d for d in ctx.decisions if d.stage == "escalate"]
    return decision.notes


async def test_forward_shape_and_token_in_the_store(tmp_path: Path,
                                                    store: SqliteStore) -> None:
    rt = runtime(tmp_path)
    ctx = await run(rt, NOTICE, store, "service.juridique@union-conso.test")
    notes = escalate_notes(ctx)
    assert notes["rule"] == "legal-notice" and notes["experts"] == ["maitre.durand@example.com"]
    (forward,) = [m for m in ctx.outgoing if m.kind == "escalation"]
    msg = email.message_from_bytes(forward.data, policy=default)
    assert isinstance(msg, EmailMessage)
    assert msg["Reply-To"] == notes["reply_to"]
    assert [p.get_content_type() for p in msg.iter_attachments()] == ["message/rfc822"]
    (timer,) = [t for t in ctx.timers if t.kind == "escalate.remind"]
    assert ctx.case is not None and timer.key == ctx.case.number
    # committed, the token is valid until it expires, and for its own case only
    await store.run_write(lambda tx: [op(tx) for op, _ in ctx.writes])
    pair = token_address(notes["reply_to"], BASES)
    assert pair is not None
    now = ctx.received_at
    assert await store.run_read(partial(tokens.valid, tokens=[pair], now=now)) == {pair}
    assert not await store.run_read(partial(tokens.valid, tokens=[("X-1-2", pair[1])], now=now))
    assert not await store.run_read(partial(tokens.valid, tokens=[pair], now=now + 200 * 86400))


RULES = {"groups": {"billing": {"members": ["b1@example.com", "b2@example.com"],
                                "strategy": "all"}},
         "rules": [{"name": "vip", "when": {"sender": ["@vip.test"]}, "expert": "v@example.com"},
                   {"name": "bills", "when": {"route": ["billing"]}, "group": "billing"},
                   {"name": "form", "when": {"form_field": {"Catégorie": "Devis"}},
                    "expert": "quote@example.com"}]}


@pytest.mark.parametrize(("sender", "subject", "body", "rule", "experts"), [
    ("boss@vip.test", "Bonjour", "Une question.", "vip", ["v@example.com"]),
    ("c@client.test", "Facture", "Catégorie : Facturation\nMa facture.", "bills",
     ["b1@example.com", "b2@example.com"]),
    ("c@client.test", "Demande", "Catégorie : Devis\nUn devis.", "form", ["quote@example.com"]),
    ("c@client.test", "Bonjour", "Une question.", None, None),
])
async def test_rule_matching(tmp_path: Path, store: SqliteStore, sender: str, subject: str,
                             body: str, rule: str | None, experts: list[str] | None) -> None:
    rt = runtime(tmp_path, escalate={"calendar": "default", **RULES})
    raw = (f"From: {sender}\r\nTo: contact@example.com\r\nSubject: {subject}\r\n"
           "Message-ID: <m1@client.test>\r\nContent-Type: text/plain; charset=utf-8\r\n"
           f"Content-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n").encode()
    notes = escalate_notes(await run(rt, raw, store, sender))
    assert notes.get("rule") == rule and notes.get("experts") == experts


@pytest.mark.parametrize(("rule", "problem"), [
    ({"name": "r", "when": {"keyword": ["x"]}, "expert": "a@b.test", "group": "g"},
     "exactly one of expert or group"),
    ({"name": "r", "when": {"keyword": ["x"]}, "group": "nope"}, "unknown group 'nope'"),
    ({"name": "r", "when": {}, "expert": "a@b.test"}, "at least one condition"),
    ({"name": "r", "when": {"route": ["legal"]}, "expert": "a@b.test",
      "remind_after": "soon"}, "not a duration"),
])
def test_bad_rules_are_refused_at_load(tmp_path: Path, rule: dict[str, Any],
                                       problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        runtime(tmp_path, escalate={"rules": [rule]})
    assert problem in str(caught.value)




async def test_the_agent_handling_the_case_is_never_the_expert(tmp_path: Path,
                                                               store: SqliteStore) -> None:
    """The legal notice goes to the legal team's agent (lea.garnier@): a group holding her
    asks someone else; a rule naming her alone asks nobody."""
    when = {"route": ["legal"]}
    rt = runtime(tmp_path / "group", escalate={"groups": {"both": {"members": [
        "lea.garnier@example.com", "autre.juriste@example.com"]}}, "rules": [
            {"name": "r", "when": when, "group": "both"}]})
    notes = escalate_notes(await run(rt, NOTICE, store, "service.juridique@union-conso.test"))
    assert notes["experts"] == ["autre.juriste@example.com"]
    rt = runtime(tmp_path / "alone", escalate={"rules": [
        {"name": "r", "when": when, "expert": "lea.garnier@example.com"}]})
    ctx = await run(rt, NOTICE, store, "service.juridique@union-conso.test")
    assert escalate_notes(ctx)["escalation"] is None
    assert not [m for m in ctx.outgoing if m.kind == "escalation"]
    assert not [t for t in ctx.timers if t.kind.startswith("escalate.")]
