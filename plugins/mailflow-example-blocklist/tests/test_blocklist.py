"""The blocklist example, tested as any plugin can be: mailflow's own fixtures
(``mailflow_*``), and nothing imported from mailflow but ``mailflow.plugin``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mailflow_example_blocklist import plugin as blocklist

from mailflow.plugin import SessionInfo, SmtpReply, Verdict

SECTION = {"senders": ["@spam.example", "pest@annoying.example"],
           "quarantine_subjects": ["(?i)crypto ?riches"]}


def mail(sender: str, subject: str = "Question") -> bytes:
    return (f"From: <{sender}>\r\nTo: sav@example.com\r\nSubject: {subject}\r\n"
            "Message-ID: <b1@client.example>\r\n\r\nBonjour.\r\n").encode()


@pytest.fixture
def rules(mailflow_rules: Any) -> Path:
    path: Path = mailflow_rules({"chain": ["blocklist"], "blocklist": SECTION})
    return path


@pytest.mark.parametrize(("address", "refused"), [
    ("anyone@spam.example", True), ("x@mx.spam.example", True),
    ("pest@annoying.example", True), ("other@annoying.example", False),
    ("", False),  # a bounce: never refused
])
async def test_mail_from(mailflow_call_hook: Any, address: str, refused: bool) -> None:
    options = blocklist.BlocklistOptions(**SECTION)
    answers = await mailflow_call_hook(blocklist, "mailflow_mail_from",
                                       session=SessionInfo(peer="192.0.2.8"),
                                       address=address, options=options)
    assert answers == [SmtpReply(550, options.reply, "5.7.1") if refused else None]


async def test_the_stage_marks_and_quarantines(rules: Path, mailflow_runtime: Any,
                                               mailflow_receive: Any) -> None:
    runtime = mailflow_runtime(rules, plugins=[blocklist])
    fine = await mailflow_receive(runtime, mail("claire@client.example"))
    assert fine.verdict is Verdict.DELIVER
    assert fine.header("X-Mailflow-Blocklist-Checked") == "yes"
    listed = await mailflow_receive(runtime, mail("boss@spam.example"),
                                    mail_from="relay@isp.example")
    assert listed.verdict is Verdict.QUARANTINE
    subject = await mailflow_receive(runtime, mail("claire@client.example", "CRYPTO riches!"))
    assert subject.verdict is Verdict.QUARANTINE


def test_check_finds_a_broken_pattern(mailflow_rules: Any, mailflow_check: Any) -> None:
    rules = mailflow_rules({"chain": ["blocklist"],
                            "blocklist": {"quarantine_subjects": ["(unclosed"]}})
    (problem,) = mailflow_check(rules, plugins=[blocklist])
    assert "blocklist.yaml:" in problem and "is not a regular expression" in problem


def test_refused_at_mail_from_by_the_real_daemon(rules: Path, mailflow_daemon: Any) -> None:
    daemon = mailflow_daemon(rules, plugins=["blocklist"])
    with daemon.smtp() as client:
        code, text = client.mail("someone@spam.example")
    assert code == 550 and text.startswith(b"5.7.1")
    code, _ = daemon.send(mail("claire@client.example"), mail_from="claire@client.example")
    assert code == 250
