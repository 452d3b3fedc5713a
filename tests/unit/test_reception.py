"""The reception without a daemon: each message judged automatic or not exactly once,
whatever stages read the verdict; the facts typed on the context; the same function
for a live message and a dry run.

The shipped rules' whole chain, on a real temporary SQLite store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import FULL_CHAIN, full_chain_rules
from mailflow.automatic import Automatic, AutomaticDetector
from mailflow.config import load_settings
from mailflow.message import Envelope, Message
from mailflow.reception import Door, Reception
from mailflow.runtime import Runtime, load_runtime
from mailflow.store import Store, open_store


class Counting(AutomaticDetector):
    """The rules' detector, counting the messages it judges."""

    calls = 0

    def judge(self, message: Message) -> Automatic | None:
        Counting.calls += 1
        return super().judge(message)


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    rules = full_chain_rules(tmp_path / "rules", FULL_CHAIN)
    runtime = load_runtime(load_settings(None, {"rules": str(rules),
                                                "state_dir": str(tmp_path / "state")}))
    counted = dataclasses.replace(runtime.chain,
                                  automatic=Counting(runtime.chain.automatic.rules))
    return dataclasses.replace(runtime, chain=counted)


@pytest.fixture
async def store(tmp_path: Path, runtime: Runtime) -> AsyncIterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    await s.open(runtime.schemas)
    yield s
    await s.close()


def raw(subject: str, body: str, headers: str = "", sender: str = "claire@client.test",
        to: str = "sav@example.com", mid: str = "r1@client.test") -> bytes:
    return (f"From: Claire <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{mid}>\r\n{headers}Content-Type: text/plain; charset=utf-8\r\n"
            f"\r\n{body}\r\n").encode()


@pytest.mark.parametrize(("data", "mail_from", "rcpt", "trusted", "automatic", "direction"), [
    # a customer's question: number, prioritise, sla, escalate and acknowledge all ask
    (raw("Litige urgent", "Je vous mets en demeure, c'est un litige urgent."),
     "claire@client.test", "sav@example.com", False, None, "inbound"),
    # an out-of-office: every one of them stays quiet, for the same reason
    (raw("Réponse automatique : absent", "Je suis absente.", "Auto-Submitted: auto-replied\r\n"),
     "claire@client.test", "sav@example.com", False, "Auto-Submitted", "inbound"),
    # a bounce from the null sender
    (raw("Undelivered Mail Returned to Sender", "failed", sender="mailer-daemon@mx.test"),
     "", "sav@example.com", False, "null sender", "inbound"),
    # an agent's reply from the office network (the replies stage ran for it)
    (raw("Re: question", "Voici la réponse.", sender="alice.moreau@example.com",
         to="claire@client.test"), "alice.moreau@example.com", "claire@client.test", True,
     None, "passthrough"),  # a reply to no case yet is passed through after the chain
    # an employee's mail to a supplier: passthrough, judged all the same
    (raw("Commande", "Bonjour.", sender="achats@example.com", to="vendeur@fournisseur.test"),
     "achats@example.com", "vendeur@fournisseur.test", True, None, "passthrough"),
])
async def test_automatic_is_decided_once_per_message(runtime: Runtime, store: Store,
                                                      data: bytes, mail_from: str, rcpt: str,
                                                      trusted: bool, automatic: str | None,
                                                      direction: str) -> None:
    reception = Reception(runtime.settings.smtp, lambda: runtime.chain)
    Counting.calls = 0
    received = await reception.receive(
        data, Envelope(mail_from=mail_from, rcpt_to=(rcpt,), peer="192.0.2.9"),
        Door(trusted), store, queue_id="Q1")
    ctx = received.ctx
    assert ctx is not None
    assert Counting.calls == 1, ctx.decisions
    assert ctx.direction.value == direction, ctx.direction_reason
    assert (ctx.automatic.sign if ctx.automatic else None) == automatic
    if automatic:
        assert not ctx.outgoing, "no acknowledgement, no escalation for automatic mail"
        assert ctx.triage is not None and ctx.triage.priority == "low"


async def test_the_facts_are_typed_on_the_context(runtime: Runtime, store: Store) -> None:
    reception = Reception(runtime.settings.smtp, lambda: runtime.chain)
    body = ("Bonjour,\r\nma commande n'est toujours pas arrivée, pouvez-vous vérifier ?\r\n"
            "Cordialement,\r\nClaire\r\n\r\nLe 3 juin 2026 à 10:02, Service <sav@example.com>"
            " a écrit :\r\n> Your order has shipped and is on the way to you.\r\n")
    received = await reception.receive(
        raw("Commande", body), Envelope("claire@client.test", ("sav@example.com",)),
        Door(False), store, queue_id="Q2", dry_run=True)
    ctx = received.ctx
    assert ctx is not None and ctx.automatic is None
    assert "toujours pas arrivée" in ctx.customer_text
    assert "shipped" not in ctx.customer_text and "a écrit" not in ctx.customer_text
    assert ctx.language.code == "fr" and "fr words" in ctx.language.why
    assert ctx.triage is not None and {s.name for s in ctx.triage.signals} == set()
    assert ctx.header("X-Mailflow-Priority") == ctx.triage.priority
