"""mailflow.testing, as the plugin guide shows it: the guide's own first plugin, tested."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from mailflow.clock import FakeClock
from mailflow.config import ConfigError
from mailflow.context import CaseInfo
from mailflow.stage import CaseStatus, Verdict
from mailflow.stages.acknowledge import AcknowledgeStage
from mailflow.stages.number import NumberStage
from mailflow.testing import (
    commit,
    load_message,
    make_context,
    make_rules,
    make_stage,
    run_stage,
    temporary_store,
)

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "plugin_hooks.md"
RAW = (b"From: Big Boss <CEO@bigcustomer.example>\r\nTo: sav@example.com\r\n"
       b"Cc: Jean <jean@example.com>\r\nSubject: Commande\r\n"
       b"Message-ID: <ceo-1@bigcustomer.example>\r\n\r\nBonjour, ma commande.\r\n")


@pytest.fixture(scope="module")
def vip() -> ModuleType:
    """The first plugin of the guide, exactly as printed there."""
    text = GUIDE.read_text(encoding="utf-8")
    section = text[text.index("## A first plugin"):text.index("## Hooks")]
    source = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert source is not None
    spec = importlib.util.spec_from_loader("guide_vip", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["guide_vip"] = module
    exec(compile(source.group(1), str(GUIDE), "exec"), module.__dict__)
    return module


def test_load_message_takes_the_envelope_from_the_headers(tmp_path: Path) -> None:
    (tmp_path / "ceo.eml").write_bytes(RAW)
    message = load_message(tmp_path / "ceo.eml")
    assert message.envelope.mail_from == "ceo@bigcustomer.example"
    assert message.envelope.rcpt_to == ("sav@example.com", "jean@example.com")
    assert load_message(RAW, rcpt_to=["x@example.com"]).envelope.rcpt_to == ("x@example.com",)


async def test_the_guide_plugin_marks_a_vip(vip: ModuleType) -> None:
    stage = make_stage(vip.VipStage, {"senders": ["ceo@bigcustomer.example"]})
    ctx = make_context(RAW)
    decision = await run_stage(stage, ctx)
    assert decision.outcome == "ok"
    assert ctx.header("X-Mailflow-VIP") == "yes"
    assert ctx.stash[vip.VIP] is True
    assert decision.notes == {"vip": "ceo@bigcustomer.example"}
    other = make_context(RAW, mail_from="someone@else.example")
    await run_stage(stage, other)
    assert other.header("X-Mailflow-VIP") is None and vip.VIP not in other.stash


async def test_the_customer_of_the_case_counts(vip: ModuleType) -> None:
    stage = make_stage(vip.VipStage, {"senders": ["ceo@bigcustomer.example"]})
    form = CaseInfo(number="SAV-1", status=CaseStatus.NEW, customer="ceo@bigcustomer.example")
    ctx = make_context(RAW, mail_from="webform@example.com", case=form)
    await run_stage(stage, ctx)
    assert ctx.header("X-Mailflow-VIP") == "yes"


def test_options_are_validated_by_the_stage_model(vip: ModuleType) -> None:
    with pytest.raises(ConfigError) as caught:
        make_stage(vip.VipStage, {"senders": ["a@b.c"], "colour": "red"})
    assert "unknown setting 'colour'" in str(caught.value)


async def test_a_stage_with_a_store_and_a_fake_clock(tmp_path: Path) -> None:
    clock = FakeClock(1_800_000_000.0)
    async with temporary_store(tmp_path, clock=clock) as store:
        number = make_stage(NumberStage, {"prefix": "SAV"}, clock=clock)
        first = make_context(RAW, store=store, clock=clock)
        assert (await run_stage(number, first)).outcome == "ok"
        assert first.case is not None and first.case.status is CaseStatus.NEW
        await commit(store, first)
        clock.advance(60)
        again = make_context(RAW, store=store, clock=clock, queue_id="TEST0002")
        await run_stage(number, again)
        assert again.case is not None and again.case.status is CaseStatus.COPY
        assert again.case.number == first.case.number


async def test_what_an_acknowledgement_asks_for(tmp_path: Path) -> None:
    rules = make_rules(directory=REPO / "rules")
    ack = make_stage(AcknowledgeStage, {}, rules=rules)
    case = CaseInfo(number="SAV-20261202-00001", status=CaseStatus.NEW,
                    customer="claire@client.test", mailbox="sav@example.com")
    async with temporary_store(tmp_path) as store:
        ctx = make_context(RAW.replace(b"CEO@bigcustomer.example", b"claire@client.test"),
                           store=store, case=case)
        decision = await run_stage(ack, ctx)
    assert decision.outcome == "ok", decision
    (mail,) = ctx.outgoing
    assert mail.kind == "ack" and mail.rcpt_to == ("claire@client.test",)
    assert b"SAV-20261202-00001" in mail.data
    assert ctx.verdict is Verdict.DELIVER
