"""Commit, relay, release: what the pipeline does with each answer of the next hop.

A fake next hop answers as told (everything accepted, some recipients
refused for now or for good, the whole message refused), against a real
store in a temporary folder: no daemon, no sockets.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from mailflow.chain import Chain
from mailflow.clock import FakeClock
from mailflow.config import Settings
from mailflow.context import MessageContext
from mailflow.direction import Scope
from mailflow.message import Envelope
from mailflow.metrics import Metrics
from mailflow.pipeline import Outcome, Pipeline
from mailflow.plugins import builtin_schemas
from mailflow.relay import DeliveryResult
from mailflow.stage import Stage, StageOptions
from mailflow.store import Store, open_store
from mailflow.values import OutgoingMail, Timer, Verdict

SENDER = "claire@client.test"
SAV, CONTACT, BILLING = "sav@example.com", "contact@example.com", "billing@example.com"
NOW = 1_800_000_000.0
MESSAGE = (b"From: Claire <claire@client.test>\r\nTo: sav@example.com\r\n"
           b"Subject: Bonjour\r\nMessage-ID: <p-1@client.test>\r\n\r\nUne question.\r\n")


@dataclass
class FakeHop:
    """A next hop that answers what it is told to, and remembers what it was sent."""

    answer: DeliveryResult = field(default_factory=lambda: DeliveryResult(250, "2.0.0 Ok"))
    sent: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    error: Exception | None = None

    async def send(self, mail_from: str, rcpt_to: list[str], data: bytes, *,
                   smtputf8: bool = False, body8bit: bool = False) -> DeliveryResult:
        self.sent.append((mail_from, list(rcpt_to), data))
        if self.error is not None:
            raise self.error
        return self.answer

    async def close(self) -> None:
        pass


class Owes(Stage[StageOptions]):
    """Asks for an acknowledgement and a reminder: held until the message is relayed."""

    name = "owes"

    async def process(self, ctx: MessageContext) -> None:
        ctx.queue_mail(OutgoingMail("ack", (ctx.message.envelope.mail_from,), b"ack"))
        ctx.schedule_timer(Timer("remind", due=ctx.received_at + 3600, key="case-1"))


class Suspicious(Stage[StageOptions]):
    """Sets every message aside."""

    name = "suspicious"

    async def process(self, ctx: MessageContext) -> None:
        ctx.set_verdict(Verdict.QUARANTINE, "looks like phishing")


def chain_of(stage: type[Stage[StageOptions]]) -> Chain:
    none: Any = None  # the stages here need no rules
    # example.com is ours, and with no service mailbox declared all its mail is the service's
    return Chain(stages=(stage(StageOptions(), none),), timeout=5.0,
                 scope=Scope(frozenset({"example.com"})))


@dataclass
class Rig:
    store: Store
    hop: FakeHop
    pipeline: Pipeline
    released: list[int]
    chain: Chain = field(default_factory=lambda: chain_of(Owes))

    async def send(self, *rcpt: str, mail_from: str = SENDER) -> Outcome:
        envelope = Envelope(mail_from=mail_from, rcpt_to=rcpt or (SAV,), peer="192.0.2.7",
                            helo="client.test")
        return await self.pipeline.process(MESSAGE, envelope, trusted=False)

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return await self.store.run_read(lambda tx: tx.execute(sql))

    async def outbox(self) -> list[tuple[str, str, list[str], bytes]]:
        rows = await self.rows("SELECT kind, state, rcpt_to, data FROM outbox ORDER BY id")
        return [(kind, state, json.loads(rcpt), bytes(data)) for kind, state, rcpt, data in rows]

    async def message_states(self) -> list[str]:
        return [state for (state,) in await self.rows("SELECT state FROM messages")]

    async def timer_states(self) -> list[str]:
        return [state for (state,) in await self.rows("SELECT state FROM timers")]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = open_store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    await store.open(builtin_schemas())
    hop = FakeHop()
    released: list[int] = []
    settings = Settings(smtp={"hostname": "mx.example.com"})  # type: ignore[arg-type]
    none: Any = None
    rig = Rig(store, hop, none, released)
    rig.pipeline = Pipeline(settings, store, hop, Metrics(CollectorRegistry()),
                            chain_of=lambda: rig.chain, on_release=lambda: released.append(1),
                            clock=FakeClock(NOW))
    try:
        yield rig
    finally:
        await store.close()


# -- everything accepted --------------------------------------------------------------


async def test_accepted_releases_what_the_message_owes(rig: Rig) -> None:
    outcome = await rig.send(SAV)
    assert outcome.verdict == "deliver"
    assert outcome.reply.startswith("250 2.0.0 Ok: queued as ")
    (mail_from, rcpt, data), = rig.hop.sent
    assert (mail_from, rcpt) == (SENDER, [SAV])
    assert data.endswith(MESSAGE) and data.startswith(b"Received: from client.test")
    assert await rig.outbox() == [("ack", "ready", [SENDER], b"ack")]
    assert await rig.timer_states() == ["active"]
    assert await rig.message_states() == ["delivered"]
    assert rig.released == [1]


# -- some recipients refused ----------------------------------------------------------


async def test_recipient_refused_for_now_is_retried_through_the_outbox(rig: Rig) -> None:
    rig.hop.answer = DeliveryResult(250, "2.0.0 Ok", {CONTACT: (450, "4.2.1 Mailbox busy")})
    outcome = await rig.send(SAV, CONTACT)
    assert outcome.verdict == "deliver"  # the next hop has it, for one recipient: 250
    (_, _, relayed), = rig.hop.sent
    ack, retry = await rig.outbox()
    assert ack[:2] == ("ack", "ready")
    assert retry == ("relay", "ready", [CONTACT], relayed)  # the same bytes, again
    assert await rig.message_states() == ["delivered"]


async def test_recipient_refused_for_good_is_bounced_to_the_sender(rig: Rig) -> None:
    rig.hop.answer = DeliveryResult(250, "2.0.0 Ok", {CONTACT: (550, "5.1.1 No such user")})
    outcome = await rig.send(SAV, CONTACT)
    assert outcome.verdict == "deliver"
    _, (kind, state, rcpt, data) = await rig.outbox()
    assert (kind, state, rcpt) == ("bounce", "ready", [SENDER])
    assert b"  contact@example.com: 550 5.1.1 No such user\r\n" in data
    assert b"\r\nAuto-Submitted: auto-replied\r\n" in data
    assert b"From: Mail Delivery System <MAILER-DAEMON@mx.example.com>" in data


async def test_refused_for_now_and_for_good_at_once(rig: Rig) -> None:
    rig.hop.answer = DeliveryResult(250, "2.0.0 Ok", {CONTACT: (452, "4.2.2 Over quota"),
                                                      BILLING: (550, "5.1.1 No such user")})
    await rig.send(SAV, CONTACT, BILLING)
    kinds = {kind: (rcpt, data) for kind, _, rcpt, data in await rig.outbox()}
    assert set(kinds) == {"ack", "relay", "bounce"}
    assert kinds["relay"][0] == [CONTACT]
    rcpt, bounce = kinds["bounce"]
    assert rcpt == [SENDER]
    assert BILLING.encode() in bounce and CONTACT.encode() not in bounce


async def test_a_bounce_is_never_bounced(rig: Rig) -> None:
    rig.hop.answer = DeliveryResult(250, "2.0.0 Ok", {CONTACT: (550, "5.1.1 No such user")})
    outcome = await rig.send(SAV, CONTACT, mail_from="")
    assert outcome.verdict == "deliver"
    assert [kind for kind, *_ in await rig.outbox()] == ["ack"]


# -- the whole message refused ----------------------------------------------------------


@pytest.mark.parametrize(("answer", "reply", "verdict"), [
    (DeliveryResult(451, "4.3.0 busy"), "451 4.3.0 Next hop: try again later",
     "tempfail-downstream"),
    (DeliveryResult(421, "closing"), "451 4.4.0 Next hop: try again later",
     "tempfail-downstream"),
    (DeliveryResult(554, "5.7.1 Spam"), "554 5.7.1 Spam", "rejected-downstream"),
])
async def test_refused_whole_leaves_nothing_behind(rig: Rig, answer: DeliveryResult,
                                                   reply: str, verdict: str) -> None:
    rig.hop.answer = answer
    outcome = await rig.send(SAV, CONTACT)
    assert (outcome.reply, outcome.verdict) == (reply, verdict)
    assert [(kind, state) for kind, state, *_ in await rig.outbox()] == [("ack", "cancelled")]
    assert await rig.timer_states() == ["cancelled"]
    assert await rig.message_states() == ["aborted"]
    assert rig.released == []


async def test_a_failing_next_hop_client_leaves_nothing_held(rig: Rig) -> None:
    rig.hop.error = RuntimeError("bug in the client")
    with pytest.raises(RuntimeError):
        await rig.send(SAV)
    assert [state for _, state, *_ in await rig.outbox()] == ["cancelled"]
    assert await rig.message_states() == ["aborted"]


# -- kept, not relayed -------------------------------------------------------------------


async def test_quarantined_is_kept_and_never_relayed(rig: Rig) -> None:
    rig.chain = chain_of(Suspicious)
    outcome = await rig.send(SAV)
    assert (outcome.verdict, outcome.reply.split(" ")[:3]) == (
        "quarantine", ["250", "2.0.0", "Ok:"])
    assert rig.hop.sent == []
    (reason, data, created_at), = await rig.rows(
        "SELECT reason, data, created_at FROM quarantine")
    assert reason == "looks like phishing" and bytes(data).endswith(MESSAGE)
    assert created_at == NOW  # the pipeline's clock, not the wall clock
    assert await rig.message_states() == ["quarantine"]
    assert rig.released == [1]


# -- refused before the chain -----------------------------------------------------------


async def test_refused_by_intake_never_reaches_the_next_hop(rig: Rig) -> None:
    looping = b"Received: from a by b; Thu, 1 Jan 2026 00:00:00 +0000\r\n" * 101 + MESSAGE
    envelope = Envelope(mail_from=SENDER, rcpt_to=(SAV,), peer="192.0.2.7")
    outcome = await rig.pipeline.process(looping, envelope, trusted=False)
    assert outcome.reply.startswith("554 5.4.6 ")
    assert rig.hop.sent == []
    assert await rig.message_states() == []
