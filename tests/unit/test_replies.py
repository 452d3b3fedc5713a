"""The replies stage on a real store: an agent's answer joins its case, or nothing."""

from __future__ import annotations

from pathlib import Path

from mailflow.stage import CaseStatus, Direction
from mailflow.stages.number import NumberStage
from mailflow.stages.replies import RepliesStage
from mailflow.store import Store
from mailflow.testing import commit, make_context, make_stage, run_stage, temporary_store

QUESTION = (b"From: Claire <claire@client.test>\r\nTo: sav@example.com\r\nSubject: Commande\r\n"
            b"Message-ID: <q-1@client.test>\r\n\r\nO\xc3\xb9 est ma commande ?\r\n")


def answer(extra: bytes, subject: bytes = b"Re: Commande") -> bytes:
    return (b"From: alice@example.com\r\nTo: claire@client.test\r\nSubject: " + subject +
            b"\r\nMessage-ID: <a-1@example.com>\r\n" + extra + b"\r\nElle arrive.\r\n")


async def open_case(store: Store) -> str:
    ctx = make_context(QUESTION, store=store)
    await run_stage(make_stage(NumberStage, {"prefix": "SAV"}), ctx)
    await commit(store, ctx)
    assert ctx.case is not None
    return ctx.case.number


async def test_a_reply_joins_its_case_by_references_and_may_tag_its_subject(
        tmp_path: Path) -> None:
    async with temporary_store(tmp_path) as store:
        number = await open_case(store)
        ctx = make_context(answer(b"In-Reply-To: <q-1@client.test>\r\n"), store=store,
                           direction=Direction.REPLY)
        ctx.author = "alice@example.com"
        stage = make_stage(RepliesStage, {"tag_subject": True})
        decision = await run_stage(stage, ctx)
        assert decision.outcome == "ok", decision
        assert ctx.case is not None and ctx.case.number == number
        assert ctx.case.status is CaseStatus.REPLY and ctx.case.customer == "claire@client.test"
        assert ctx.subject_tag == f"[{number}]" and not ctx.added_headers
        await commit(store, ctx)
        rows = await store.run_read(lambda tx: tx.execute(
            "SELECT role, sender FROM case_messages ORDER BY id"))
        assert [tuple(r) for r in rows] == [("customer", "claire@client.test"),
                                            ("agent", "alice@example.com")]


async def test_by_the_number_in_the_subject_or_not_at_all(tmp_path: Path) -> None:
    async with temporary_store(tmp_path) as store:
        number = await open_case(store)
        stage = make_stage(RepliesStage)
        ctx = make_context(answer(b"", f"Re: [{number}] Commande".encode()), store=store,
                           direction=Direction.REPLY)
        await run_stage(stage, ctx)
        assert ctx.case is not None and ctx.case.number == number and ctx.subject_tag is None
        for subject in (b"Re: Commande", b"Re: [SAV-20200101-00001-7] Commande"):
            ctx = make_context(answer(b"", subject), store=store, direction=Direction.REPLY)
            decision = await run_stage(stage, ctx)
            assert ctx.case is None and ctx.writes == [], decision.notes


async def test_a_case_forwarded_to_a_colleague_is_not_an_answer(tmp_path: Path) -> None:
    async with temporary_store(tmp_path) as store:
        await open_case(store)
        forward = answer(b"In-Reply-To: <q-1@client.test>\r\n").replace(
            b"To: claire@client.test", b"To: jean@example.com")
        ctx = make_context(forward, store=store, direction=Direction.REPLY)
        decision = await run_stage(make_stage(RepliesStage), ctx)
        assert ctx.case is None and ctx.writes == []
        assert "not addressed to claire@client.test" in decision.notes["because"]

