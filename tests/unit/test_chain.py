"""The chain: stage order, deadlines, failure policies, and configuration errors."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import Field

from mailflow.chain import Chain, build_chain, describe
from mailflow.config import ConfigError, Settings
from mailflow.message import Envelope, parse_message
from mailflow.metrics import MetricFactory
from mailflow.rules import RuleSet, load_rules
from mailflow.session import SmtpReply
from mailflow.stage import (
    FailurePolicy,
    MessageContext,
    OutgoingMail,
    Stage,
    StageEnv,
    StageOptions,
    StashKey,
    Timer,
    Triage,
    Verdict,
)

RAW = (b"From: Claire <claire@client.test>\r\nTo: sav@example.com\r\nSubject: Hello\r\n"
       b"Message-ID: <m1@client.test>\r\n\r\nBody\r\n")


def context() -> MessageContext:
    envelope = Envelope(mail_from="claire@client.test", rcpt_to=("sav@example.com",))
    return MessageContext(message=parse_message(RAW, envelope), queue_id="Q1",
                          recipients=["sav@example.com"], store=None)


RAN: StashKey[tuple[str, ...]] = StashKey("ran")
MEDDLED: StashKey[bool] = StashKey("meddled")


def ran(ctx: MessageContext) -> tuple[str, ...]:
    return ctx.stash.get(RAN, ())


class Recorder(Stage[StageOptions]):
    """Records that it ran and adds a header named after itself."""

    name = "recorder"

    async def process(self, ctx: MessageContext) -> None:
        ctx.stash[RAN] = (*ran(ctx), self.name)
        ctx.set_header(f"X-Ran-{self.name}", "yes")


def recorder(name: str) -> type[Stage[Any]]:
    return type(f"Recorder_{name}", (Recorder,), {"name": name})


class Meddler(Stage[StageOptions]):
    """Asks for every kind of change, then fails the way ``how`` says."""

    name = "meddler"
    how: ClassVar[str] = "raise"

    async def process(self, ctx: MessageContext) -> None:
        ctx.stash[RAN] = (*ran(ctx), self.name)
        ctx.stash[MEDDLED] = True
        ctx.triage = Triage(priority="urgent", score=99)
        ctx.set_header("X-Meddled", "1")
        ctx.set_header("X-Ran-first", "overwritten")
        ctx.set_recipients(["someone@elsewhere.test"])
        ctx.queue_mail(OutgoingMail("ack", ("claire@client.test",), b"Subject: ack\r\n\r\n"))
        ctx.schedule_timer(Timer("remind", time.time() + 60, "CASE-1"))
        ctx.cancel_timers("remind", "CASE-0")
        ctx.write(lambda tx: None)
        ctx.set_verdict(Verdict.DISCARD, "meddling")
        ctx.subject_tag = "[MEDDLED]"
        if self.how == "raise":
            raise RuntimeError("plugin bug")
        await asyncio.sleep(30)


def meddler(how: str, policy: FailurePolicy, timeout: float = 10.0) -> Stage[Any]:
    cls = type("M", (Meddler,), {"how": how, "on_error": policy})
    return cls(StageOptions(timeout=timeout), ENV)


class Verdictor(Stage[StageOptions]):
    name = "verdictor"
    verdict: ClassVar[Verdict] = Verdict.REJECT

    async def process(self, ctx: MessageContext) -> None:
        ctx.stash[RAN] = (*ran(ctx), self.name)
        ctx.set_verdict(self.verdict, "policy", reply="550 5.7.1 Go away")


class Sleeper(Stage[StageOptions]):
    name = "sleeper"

    async def process(self, ctx: MessageContext) -> None:
        ctx.stash[RAN] = (*ran(ctx), self.name)
        await asyncio.sleep(0.15)


def empty_rules() -> RuleSet:
    return RuleSet(directory=Path("."), local_domains=("example.com",), own_addresses=(),
                   chain=(), chain_section=None)


ENV = StageEnv(rules=empty_rules(), settings=Settings(), metrics=MetricFactory())


def stage(cls: type[Stage[Any]], **options: object) -> Stage[Any]:
    return cls(cls.Options(**options), ENV)  # type: ignore[arg-type]


def snapshot_of(ctx: MessageContext) -> tuple[object, ...]:
    return (list(ctx.added_headers), list(ctx.recipients), list(ctx.outgoing),
            list(ctx.timers), list(ctx.cancelled_timers), len(ctx.writes), ctx.verdict,
            ctx.reply, ctx.subject_tag,
            (ctx.triage, ctx.case, {k: v for k, v in ctx.stash.named().items() if k != "ran"}))


# -- running ----------------------------------------------------------------------


async def test_stages_run_in_the_configured_order() -> None:
    chain = Chain(tuple(stage(recorder(n)) for n in ("c", "a", "b")), timeout=5)
    assert chain.names == ("c", "a", "b")
    ctx = context()
    await chain.run(ctx)
    assert ran(ctx) == ("c", "a", "b")
    assert [h for h, _ in ctx.added_headers] == ["X-Ran-c", "X-Ran-a", "X-Ran-b"]
    assert [(d.stage, d.outcome) for d in ctx.decisions] == [("c", "ok"), ("a", "ok"),
                                                             ("b", "ok")]
    assert ctx.verdict is Verdict.DELIVER
    assert ctx.current is None


async def test_stage_timeout_tempfails_and_stops_the_chain() -> None:
    chain = Chain((stage(recorder("first")), meddler("hang", "tempfail", timeout=0.05),
                   stage(recorder("last"))), timeout=5)
    ctx = context()
    before = time.monotonic()
    await chain.run(ctx)
    assert time.monotonic() - before < 2
    assert ctx.verdict is Verdict.TEMPFAIL
    assert ctx.reply is not None and ctx.reply.startswith("451 4.3.0 ")
    assert ran(ctx) == ("first",)  # the timed-out stage's attribute was undone, last never ran
    decision = ctx.decisions[1]
    assert (decision.stage, decision.outcome, decision.verdict) == (
        "meddler", "timeout", Verdict.TEMPFAIL)
    assert "0.05s" in decision.reason
    assert [d.stage for d in ctx.decisions] == ["first", "meddler"]


async def test_raise_with_tempfail_policy_tempfails_and_undoes_its_changes() -> None:
    first = stage(recorder("first"))
    ctx = context()
    await Chain((first,), timeout=5).run(ctx)
    expected = snapshot_of(ctx)
    ctx = context()
    chain = Chain((first, meddler("raise", "tempfail"), stage(recorder("last"))), timeout=5)
    await chain.run(ctx)
    assert ctx.verdict is Verdict.TEMPFAIL
    assert ctx.reply is not None and ctx.reply.startswith("451 ")
    assert ran(ctx) == ("first",)
    headers, recipients, outgoing, timers, cancelled, writes, _, _, tag, attrs = snapshot_of(ctx)
    assert (headers, recipients, outgoing, timers, cancelled, writes, tag, attrs) == (
        expected[0], expected[1], expected[2], expected[3], expected[4], expected[5],
        expected[8], expected[9])
    decision = ctx.decisions[1]
    assert decision.outcome == "error"
    assert decision.reason == "RuntimeError: plugin bug"
    assert decision.verdict is Verdict.TEMPFAIL


@pytest.mark.parametrize("how", ["raise", "hang"])
async def test_failure_with_skip_policy_goes_on_and_leaves_no_trace(how: str) -> None:
    first, last = stage(recorder("first")), stage(recorder("last"))
    ctx = context()
    await Chain((first, last), timeout=5).run(ctx)
    expected = snapshot_of(ctx)
    ctx = context()
    await Chain((first, meddler(how, "skip", timeout=0.05), last), timeout=5).run(ctx)
    assert ran(ctx) == ("first", "last")
    assert snapshot_of(ctx) == expected
    assert ctx.verdict is Verdict.DELIVER
    assert ctx.reply is None
    assert ctx.header("X-Ran-first") == "yes"
    assert ctx.header("X-Meddled") is None
    decision = ctx.decisions[1]
    assert decision.outcome == ("error" if how == "raise" else "timeout")
    assert decision.reason.endswith("(stage skipped)")
    assert decision.verdict is None


async def test_on_error_option_overrides_the_stage_default() -> None:
    cls = type("M", (Meddler,), {"how": "raise", "on_error": "tempfail"})
    ctx = context()
    await Chain((cls(StageOptions(on_error="skip"), ENV), stage(recorder("last"))),
                timeout=5).run(ctx)
    assert ctx.verdict is Verdict.DELIVER
    assert ran(ctx) == ("last",)
    ctx = context()
    await Chain((cls(StageOptions(), ENV), stage(recorder("last"))), timeout=5).run(ctx)
    assert ctx.verdict is Verdict.TEMPFAIL
    assert ran(ctx) == ()


@pytest.mark.parametrize(("verdict", "stops"), [
    (Verdict.REJECT, True),
    (Verdict.TEMPFAIL, True),
    (Verdict.DISCARD, False),
    (Verdict.QUARANTINE, False),
])
async def test_terminal_verdicts_stop_later_stages(verdict: Verdict, stops: bool) -> None:
    decider = type("V", (Verdictor,), {"verdict": verdict})
    ctx = context()
    await Chain((stage(recorder("first")), stage(decider), stage(recorder("last"))),
                timeout=5).run(ctx)
    assert ctx.verdict is verdict
    assert ctx.reply == "550 5.7.1 Go away"
    assert ran(ctx) == (("first", "verdictor") if stops else ("first", "verdictor", "last"))
    decision = ctx.decisions[1]
    assert (decision.outcome, decision.verdict, decision.reason) == ("verdict", verdict, "policy")


async def test_whole_chain_deadline_tempfails() -> None:
    chain = Chain(tuple(stage(type(f"S{i}", (Sleeper,), {"name": f"s{i}"}))
                        for i in range(5)), timeout=0.4)
    ctx = context()
    before = time.monotonic()
    await chain.run(ctx)
    assert time.monotonic() - before < 2
    assert ctx.verdict is Verdict.TEMPFAIL
    assert ctx.reply is not None and ctx.reply.startswith("451 4.3.0 ")
    assert 1 <= len(ran(ctx)) < 5
    assert ctx.decisions[-1].stage == "chain" and ctx.decisions[-1].outcome == "timeout"
    assert ctx.current is None


async def test_describe_reports_every_decision() -> None:
    ctx = context()
    await Chain((stage(recorder("a")), meddler("raise", "skip")), timeout=5).run(ctx)
    rows = describe(ctx.decisions)
    assert [(r["stage"], r["outcome"], r["verdict"]) for r in rows] == [
        ("a", "ok", None), ("meddler", "error", None)]
    assert all(isinstance(r["ms"], float) for r in rows)


@pytest.mark.parametrize("name", ["X-Evil\n", "X-Evil\r\n", "X-A\r\nBcc", "Bad Name",
                                  "Colon:", "", "Zo\u00eb", "X-\x00"])
def test_set_header_refuses_names_that_are_not_one_field_name(name: str) -> None:
    ctx = context()
    with pytest.raises(ValueError, match="invalid header name"):
        ctx.set_header(name, "v")
    assert ctx.added_headers == []


def test_set_header_values_stay_on_one_line() -> None:
    ctx = context()
    ctx.set_header("X-Mailflow-Route", "a\r\nBcc: victim@elsewhere.test\n\x00b")
    ctx.set_header("x-mailflow-route", "second")  # replaces, whatever the case
    ctx.set_header("X-Long", "word " * 400)
    assert [n for n, _ in ctx.added_headers] == ["x-mailflow-route", "X-Long"]
    assert ctx.header("X-MAILFLOW-ROUTE") == "second"
    long_value = ctx.header("X-Long")
    assert long_value is not None
    assert all(line.startswith(" ") for line in long_value.split("\r\n")[1:])
    assert "\n" not in long_value.replace("\r\n", "")
    ctx.set_header("X-Mailflow-Route", "a\r\nBcc: victim@elsewhere.test")
    assert ctx.header("X-Mailflow-Route") == "a Bcc: victim@elsewhere.test"


def test_set_recipients_refuses_none_and_drops_duplicates() -> None:
    ctx = context()
    with pytest.raises(ValueError, match="at least one recipient"):
        ctx.set_recipients([])
    ctx.set_recipients(["a@example.com", "b@example.com", "a@example.com"])
    assert ctx.recipients == ["a@example.com", "b@example.com"]


@pytest.mark.parametrize(("code", "text", "status"), [
    (250, "ok", ""),  # accepting is "return None", not a reply
    (600, "odd", ""),
    (550, "no\r\n250 2.0.0 smuggled", ""),
    (550, "no\nmore", ""),
    (550, "no", "5.7.1\r\n250 2.0.0 smuggled"),
    (451, "nul\x00", ""),
])
def test_hook_replies_are_one_4xx_or_5xx_line(code: int, text: str, status: str) -> None:
    with pytest.raises(ValueError):
        SmtpReply(code, text, status)


def test_hook_reply_text() -> None:
    assert str(SmtpReply(550, "Go away", "5.7.1")) == "550 5.7.1 Go away"
    assert str(SmtpReply(451, "Later")) == "451 4.0.0 Later"
    assert SmtpReply(550, "x").is_permanent and not SmtpReply(421, "x").is_permanent


# -- building from the rules ---------------------------------------------------------


class CountOptions(StageOptions):
    count: int = Field(1, ge=1)
    label: str = "x"


class Counted(Stage[StageOptions]):
    name = "counted"
    Options = CountOptions

    async def process(self, ctx: MessageContext) -> None:
        return None


class Picky(Stage[StageOptions]):
    name = "picky"

    def __init__(self, options: StageOptions, env: StageEnv) -> None:
        super().__init__(options, env)
        raise ValueError("template 'ack.txt' not found")


class NeedsCounted(Stage[StageOptions]):
    name = "needy"
    requires = ("counted",)


STAGES: dict[str, type[Stage[Any]]] = {"counted": Counted, "first": recorder("first"),
                                  "picky": Picky, "needy": NeedsCounted}


def rules_folder(tmp_path: Path, **files: str) -> RuleSet:
    folder = tmp_path / "rules"
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(text, encoding="utf-8")
    return load_rules(folder)


def build_problems(rules: RuleSet) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build_chain(rules, STAGES, ENV, timeout=5)
    return [str(p) for p in info.value.problems]


def test_build_chain_with_options(tmp_path: Path) -> None:
    rules = rules_folder(tmp_path, chain="chain: [first, counted]\n",
                         counted="counted:\n  count: 3\n  timeout: 2.5\n  on_error: skip\n")
    chain = build_chain(rules, STAGES, ENV, timeout=7)
    assert chain.names == ("first", "counted")
    assert chain.timeout == 7
    counted = chain.stages[1]
    assert isinstance(counted.options, CountOptions)
    assert counted.options.count == 3
    assert counted.timeout == 2.5
    assert counted.failure_policy == "skip"
    assert chain.stages[0].timeout == 10.0  # the default
    assert chain.stages[0].failure_policy == "tempfail"


def test_unknown_stage_is_located_in_the_chain(tmp_path: Path) -> None:
    rules = rules_folder(tmp_path, chain="chain:\n  - first\n  - nmuber\n")
    path = rules.directory / "chain.yaml"
    assert build_problems(rules) == [
        f"{path}:3:5: no stage named 'nmuber' (known stages: counted, first, needy, picky)"]


def test_section_validation_errors_are_located(tmp_path: Path) -> None:
    rules = rules_folder(tmp_path, chain="chain: [counted]\n",
                         options="# counted's options\ncounted:\n  count: many\n"
                                 "  lable: y\n  on_error: ignore\n")
    path = rules.directory / "options.yaml"
    found = build_problems(rules)
    assert len(found) == 3
    assert (f"{path}:3:10: 'count': input should be a valid integer, unable to parse "
            "string as an integer") in found
    assert f"{path}:4:3: unknown setting 'lable'" in found
    assert f"{path}:5:13: 'on_error': input should be 'tempfail' or 'skip'" in found


def test_section_for_no_stage(tmp_path: Path) -> None:
    rules = rules_folder(tmp_path, chain="chain: [first]\n", extra="\ncountde:\n  count: 2\n")
    assert build_problems(rules) == [
        f"{rules.directory / 'extra.yaml'}:2:1: section 'countde' belongs to no stage "
        "(known stages: counted, first, needy, picky)"]


def test_stage_refusing_its_rules_is_located(tmp_path: Path) -> None:
    rules = rules_folder(tmp_path, chain="chain: [first, picky]\n",
                         picky="# picky checks its templates at load time\npicky:\n"
                               "  timeout: 1\n")
    assert build_problems(rules) == [
        f"{rules.directory / 'picky.yaml'}:2:1: stage 'picky': template 'ack.txt' not found"]


class RequiredOptions(StageOptions):
    mailbox: str


class Required(Stage[StageOptions]):
    name = "required"
    Options = RequiredOptions


def test_stage_with_required_options_but_no_section(tmp_path: Path) -> None:
    rules = rules_folder(tmp_path, chain="chain:\n  - first\n  - required\n")
    with pytest.raises(ConfigError) as info:
        build_chain(rules, {**STAGES, "required": Required}, ENV, timeout=5)
    assert [str(p) for p in info.value.problems] == [
        f"{rules.directory / 'chain.yaml'}:3:5: stage 'required' needs a 'required' section: "
        "missing required setting 'mailbox'"]


def test_stage_listed_twice(tmp_path: Path) -> None:
    rules = rules_folder(tmp_path, chain="chain: [first, counted, first]\n")
    assert build_problems(rules) == [
        f"{rules.directory / 'chain.yaml'}:1:1: stage(s) listed twice in the chain: first"]


def test_required_stage_must_come_earlier(tmp_path: Path) -> None:
    rules = rules_folder(tmp_path, chain="chain:\n  - needy\n  - counted\n")
    assert build_problems(rules) == [
        f"{rules.directory / 'chain.yaml'}:2:5: stage 'needy' needs 'counted' earlier in "
        "the chain"]
    ok = rules_folder(tmp_path / "b", chain="chain: [counted, needy]\n")
    assert build_chain(ok, STAGES, ENV, timeout=5).names == ("counted", "needy")


def test_all_problems_reported_together(tmp_path: Path) -> None:
    rules = rules_folder(tmp_path, chain="chain: [nope, counted]\n",
                         counted="counted:\n  count: -1\n", stray="stray: {}\n")
    assert len(build_problems(rules)) == 3
