"""Which way a message flows (reply, inbound, internal, passthrough), and which copy
of it may carry our routing headers."""

from __future__ import annotations

import pytest

from mailflow import wire
from mailflow.context import MessageContext
from mailflow.direction import Scope, ScopePart, Source, decide
from mailflow.message import Envelope, Message, parse_message
from mailflow.values import Direction

SCOPE = Scope.of(["example.com"], [ScopePart(
    service_mailboxes={"sav@example.com": "sav", "contact@example.com": "accueil"},
    agents={"alice@example.com": "sav", "carole@example.com": "account-manager"},
    insiders=frozenset({"partner@outsourced.test"}))])
OUTSIDE = Source(trusted=False)
TRUSTED = Source(trusted=True)
SUBMISSION = Source(trusted=False, submission=True)


def message(mail_from: str, *rcpt: str, author: str | None = None, extra: str = "") -> Message:
    raw = (f"From: {author or mail_from}\r\nTo: {', '.join(rcpt)}\r\nSubject: Bonjour\r\n"
           f"Message-ID: <d-1@test>\r\n{extra}\r\nUne question.\r\n").encode()
    return parse_message(raw, Envelope(mail_from=mail_from, rcpt_to=tuple(rcpt)))


@pytest.mark.parametrize(("msg", "source", "expected"), [
    # a customer to a service mailbox, whatever network it comes from
    (message("claire@client.test", "sav@example.com"), OUTSIDE, Direction.INBOUND),
    (message("root@localhost", "sav@example.com"), TRUSTED, Direction.INBOUND),
    (message("claire@client.test", "jean@example.com", "SAV@Example.com"), OUTSIDE,
     Direction.INBOUND),
    # a colleague writing to the service is a customer like any other
    (message("jean@example.com", "contact@example.com"), TRUSTED, Direction.INBOUND),
    # an ordinary employee's mail, both ways
    (message("fournisseur@supplier.test", "jean@example.com"), OUTSIDE,
     Direction.PASSTHROUGH),
    (message("jean@example.com", "ami@elsewhere.test"), TRUSTED, Direction.PASSTHROUGH),
    (message("jean@example.com", "paul@example.com"), TRUSTED, Direction.INTERNAL),
    (message("jean@example.com", "paul@example.com", "ami@elsewhere.test"), TRUSTED,
     Direction.PASSTHROUGH),
    # an agent answering, from where agents write
    (message("alice@example.com", "claire@client.test"), TRUSTED, Direction.REPLY),
    (message("alice@example.com", "claire@client.test"), SUBMISSION, Direction.REPLY),
    (message("alice@example.com", "claire@client.test", author="sav@example.com"), TRUSTED,
     Direction.REPLY),
    (message("carole@example.com", "boss@bigclient.test"), TRUSTED, Direction.REPLY),
    # the same from outside is somebody pretending: never a reply
    (message("alice@example.com", "sav@example.com"), OUTSIDE, Direction.INBOUND),
    (message("alice@example.com", "claire@client.test"), OUTSIDE, Direction.PASSTHROUGH),
    # an agent's out-of-office answer is not an answer
    (message("alice@example.com", "claire@client.test", extra="Auto-Submitted: auto-replied\r\n"),
     TRUSTED, Direction.PASSTHROUGH),
    # a null sender is nobody's reply
    (message("", "claire@client.test", author="alice@example.com"), TRUSTED,
     Direction.PASSTHROUGH),
])
def test_direction(msg: Message, source: Source, expected: Direction) -> None:
    assert decide(msg, SCOPE, source).direction is expected


COLLEAGUES_INTERNAL = Scope.of(["example.com"], [ScopePart(
    service_mailboxes={"sav@example.com": "sav"}, agents={"alice@example.com": "sav"},
    colleagues_internal=True)])


@pytest.mark.parametrize(("msg", "source", "expected"), [
    # the rules say a colleague's mail to the service is no customer's
    (message("jean@example.com", "sav@example.com"), TRUSTED, Direction.INTERNAL),
    (message("jean@example.com", "sav@example.com"), SUBMISSION, Direction.INTERNAL),
    (message("jean@example.com", "sav@example.com", "ami@elsewhere.test"), TRUSTED,
     Direction.PASSTHROUGH),
    # a local sender from outside proves nothing: customer mail still
    (message("jean@example.com", "sav@example.com"), OUTSIDE, Direction.INBOUND),
    # customers and agents are unchanged
    (message("claire@client.test", "sav@example.com"), TRUSTED, Direction.INBOUND),
    (message("alice@example.com", "claire@client.test"), TRUSTED, Direction.REPLY),
])
def test_colleague_mail_may_be_internal(msg: Message, source: Source,
                                        expected: Direction) -> None:
    assert decide(msg, COLLEAGUES_INTERNAL, source).direction is expected


def test_a_reply_names_its_agent_and_team() -> None:
    judged = decide(message("alice@example.com", "claire@client.test"), SCOPE, TRUSTED)
    assert (judged.agent, judged.team) == ("alice@example.com", "sav")


def test_the_shared_mailbox_answer_takes_the_agent_from_the_login() -> None:
    received = ("Received: from pc (pc [192.0.2.7]) (Authenticated sender: alice)"
                " by mx.example.com (Postfix) with ESMTPSA id 4F1; Thu, 3 Dec 2026\r\n")
    msg = message("sav@example.com", "claire@client.test", extra=received)
    judged = decide(msg, SCOPE, SUBMISSION)
    assert (judged.direction, judged.agent, judged.team) == (Direction.REPLY,
                                                             "alice@example.com", "sav")
    # without a login, the team itself answered
    judged = decide(message("sav@example.com", "claire@client.test"), SCOPE, SUBMISSION)
    assert (judged.agent, judged.team) == ("sav@example.com", "sav")


def test_without_service_mailboxes_all_local_mail_is_the_services() -> None:
    scope = Scope.of(["example.com"], [])
    msg = message("fournisseur@supplier.test", "jean@example.com")
    assert decide(msg, scope, OUTSIDE).direction is Direction.INBOUND
    assert decide(message("a@x.test", "b@y.test"), scope, TRUSTED).direction is \
        Direction.PASSTHROUGH


def test_routing_headers_reach_only_the_company() -> None:
    msg = message("claire@client.test", "sav@example.com", "ami@client.test",
                  "partner@outsourced.test")
    ctx = MessageContext(message=msg, queue_id="Q1", recipients=list(msg.envelope.rcpt_to))
    ctx.set_header("X-Mailflow-Case", "SAV-1")
    ctx.set_header("X-Mailflow-Loop", "mx.example.com")
    ctx.set_header("X-Plugin-Note", "kept")
    groups = wire.relayed_groups(ctx, "mx.example.com", SCOPE.is_inside)
    assert [rcpts for rcpts, _ in groups] == [["sav@example.com", "partner@outsourced.test"],
                                              ["ami@client.test"]]
    inside, outside = (data for _, data in groups)
    assert b"X-Mailflow-Case: SAV-1" in inside
    assert b"X-Mailflow-Case" not in outside
    for data in (inside, outside):
        assert b"X-Mailflow-Loop: mx.example.com" in data and b"X-Plugin-Note: kept" in data
        assert data.endswith(msg.raw)


def test_one_copy_when_nothing_of_ours_was_added() -> None:
    msg = message("claire@client.test", "sav@example.com", "ami@client.test")
    ctx = MessageContext(message=msg, queue_id="Q1", recipients=list(msg.envelope.rcpt_to))
    groups = wire.relayed_groups(ctx, "mx.example.com", SCOPE.is_inside)
    assert [rcpts for rcpts, _ in groups] == [["sav@example.com", "ami@client.test"]]
