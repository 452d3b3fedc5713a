"""The daemon's own preparation of a received message, shared by SMTP and `mailflow try`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailflow import intake
from mailflow.config import SmtpSettings
from mailflow.message import Envelope, parse_message
from mailflow.rules import RuleSet, load_rules

ENVELOPE = Envelope(mail_from="claire@client.test", rcpt_to=("sav@example.com",),
                    peer="192.0.2.7")
MESSAGE = (b"From: Claire <claire@client.test>\r\nTo: sav@example.com\r\n"
           b"Subject: Bonjour\r\n\r\nUne question.\r\n")
FORGED = b"X-Mailflow-Case: SAV-FORGED-1\r\nX-Mailflow-Route: vip\r\n" + MESSAGE


def hops(n: int) -> bytes:
    return b"".join(f"Received: from hop{i}.test by hop{i + 1}.test; "
                    f"Thu, 1 Jan 2026 00:00:00 +0000\r\n".encode() for i in range(n))


async def test_clean_message_is_parsed_as_it_came() -> None:
    prepared = await intake.prepare(MESSAGE, ENVELOPE, SmtpSettings(), trusted=False)
    assert prepared.refusal is None and prepared.message is not None
    assert prepared.message.raw is MESSAGE
    assert prepared.message.subject == "Bonjour"
    assert prepared.message.envelope is ENVELOPE
    assert (prepared.newlines_fixed, prepared.headers_removed) == (False, 0)


async def test_bare_newlines_are_made_crlf_by_default() -> None:
    bare = MESSAGE.replace(b"\r\n", b"\n")
    prepared = await intake.prepare(bare, ENVELOPE, SmtpSettings(), trusted=False)
    assert prepared.message is not None and prepared.message.raw == MESSAGE
    assert prepared.newlines_fixed


async def test_bare_newlines_refused_when_the_policy_says_so() -> None:
    smtp = SmtpSettings(bare_newlines="reject")
    prepared = await intake.prepare(b"Subject: x\n\nbody\n", ENVELOPE, smtp, trusted=False)
    assert (prepared.message, prepared.refusal) == (None, intake.BARE_NEWLINES_REPLY)
    assert prepared.refusal.startswith("550 5.5.2 ")
    assert (await intake.prepare(MESSAGE, ENVELOPE, smtp, trusted=False)).refusal is None


async def test_internal_headers_from_strangers_are_removed() -> None:
    prepared = await intake.prepare(FORGED, ENVELOPE, SmtpSettings(), trusted=False)
    assert prepared.message is not None and prepared.message.raw == MESSAGE
    assert prepared.headers_removed == 2


async def test_internal_headers_from_trusted_clients_are_kept() -> None:
    prepared = await intake.prepare(FORGED, ENVELOPE, SmtpSettings(), trusted=True)
    assert prepared.message is not None and prepared.message.raw == FORGED
    assert prepared.headers_removed == 0


@pytest.mark.parametrize(("limit", "count", "refused"), [
    (100, 100, False), (100, 101, True), (3, 3, False), (3, 4, True)])
async def test_hop_count(limit: int, count: int, refused: bool) -> None:
    smtp = SmtpSettings(max_received_headers=limit)
    prepared = await intake.prepare(hops(count) + MESSAGE, ENVELOPE, smtp, trusted=False)
    assert (prepared.refusal == intake.TOO_MANY_HOPS_REPLY) is refused
    assert prepared.message is not None  # parsed: `mailflow try` still shows it


async def test_large_message_is_parsed_off_the_event_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    threaded: list[object] = []
    to_thread = asyncio.to_thread

    async def recording(fn: Callable[..., Any], /, *args: Any) -> Any:
        threaded.append(fn)
        return await to_thread(fn, *args)

    monkeypatch.setattr(asyncio, "to_thread", recording)
    await intake.prepare(MESSAGE, ENVELOPE, SmtpSettings(), trusted=False)
    assert threaded == []
    big = MESSAGE + b"y" * 70 * (intake.PARSE_IN_THREAD_BYTES // 70 + 1)
    prepared = await intake.prepare(big, ENVELOPE, SmtpSettings(), trusted=False)
    assert prepared.message is not None and prepared.message.subject == "Bonjour"
    assert threaded == [parse_message]


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    folder: Path = tmp_path_factory.mktemp("rules")
    (folder / "chain.yaml").write_text("local_domains: [example.com]\nchain: []\n",
                                       encoding="utf-8")
    return load_rules(folder)


@pytest.mark.parametrize(("address", "reply"), [
    ("sav@example.com", None),
    ("SAV@Example.COM", None),
    ("someone@elsewhere.test", "550 5.7.1 Relaying denied: not a local domain"),
    ("no-domain", "550 5.7.1 Relaying denied: not a local domain"),
    ("victim%elsewhere.test@example.com", "550 5.7.1 Relaying denied: address form not accepted"),
    ("elsewhere.test!victim@example.com", "550 5.7.1 Relaying denied: address form not accepted"),
    ('"victim@elsewhere.test"@example.com',
     "550 5.7.1 Relaying denied: address form not accepted"),
    ("@relay.test:victim@example.com", "550 5.7.1 Relaying denied: address form not accepted"),
])
def test_relay_refusal_for_strangers(rules: RuleSet, address: str, reply: str | None) -> None:
    assert intake.relay_refusal(address, rules, trusted=False) == reply


def test_trusted_clients_may_relay_anywhere(rules: RuleSet) -> None:
    assert intake.relay_refusal("someone@elsewhere.test", rules, trusted=True) is None
