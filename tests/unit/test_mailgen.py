"""bench/mailgen.py: the benchmark's distinct customer mail is what its labels say.

The throughput benchmark counts acknowledgements against these labels, so a label
that lies makes the benchmark lie: each kind is checked here against the shipped
rules (prioritise, escalate) and mailflow's own robot detector.
"""

from __future__ import annotations

import email
import email.policy
import importlib.util
import re
import sys
import unicodedata
from collections import Counter
from email.message import EmailMessage
from email.utils import parseaddr
from types import ModuleType
from typing import Any

import pytest
from ruamel.yaml import YAML

from conftest import REPO
from mailflow.automatic import SHIPPED
from mailflow.message import Envelope, parse_message


def load_mailgen() -> ModuleType:
    """bench/ is no package: the module by its path (it puts bench/ on sys.path itself,
    for its siblings)."""
    spec = importlib.util.spec_from_file_location("mailgen", REPO / "bench" / "mailgen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mailgen"] = module
    spec.loader.exec_module(module)
    return module


mailgen = load_mailgen()
COUNT = 600
SIZE = 2048
CUSTOMER = ("new", "followup", "urgent", "legal")


@pytest.fixture(scope="module")
def mails() -> list[Any]:
    return mailgen.Generator(seed=7, size=SIZE).generate(COUNT)


@pytest.fixture(scope="module")
def parsed(mails: list[Any]) -> list[EmailMessage]:
    return [email.message_from_bytes(m.data, policy=email.policy.default) for m in mails]


def fold(text: str) -> str:
    """As the rules match: case- and accent-insensitive."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


def matcher(terms: list[str]) -> re.Pattern[str]:
    """``urgen*`` a prefix, other terms whole words or phrases (rules/prioritise.yaml)."""
    parts = [re.escape(fold(t[:-1])) + r"\w*" if t.endswith("*") else re.escape(fold(t))
             for t in terms]
    return re.compile(r"\b(?:" + "|".join(parts) + r")\b")


def rule_terms(name: str, section: str) -> dict[str, list[str]]:
    data = YAML(typ="safe").load((REPO / "rules" / name).read_text(encoding="utf-8"))
    if section == "prioritise":
        return {rule["name"]: rule["terms"] for rule in data["prioritise"]["rules"]}
    return {rule["name"]: rule["when"]["keyword"] for rule in data["escalate"]["rules"]}


def words(message: EmailMessage) -> str:
    """Subject and every text part, decoded and folded."""
    texts = [str(message["Subject"])]
    texts += [part.get_content() for part in message.walk()
              if part.get_content_type() in ("text/plain", "text/html")]
    return fold("\n".join(texts))


def test_the_same_seed_gives_the_same_bytes() -> None:
    first = mailgen.Generator(seed=11, size=SIZE).generate(150)
    again = mailgen.Generator(seed=11, size=SIZE).generate(150)
    other = mailgen.Generator(seed=12, size=SIZE).generate(150)
    assert [m.data for m in first] == [m.data for m in again]
    assert [m.label for m in first] == [m.label for m in again]
    assert [m.data for m in first] != [m.data for m in other]


def test_messages_are_distinct_but_for_the_copies(mails: list[Any],
                                                  parsed: list[EmailMessage]) -> None:
    originals = [(m, p) for m, p in zip(mails, parsed, strict=True) if m.label.kind != "copy"]
    ids = Counter(str(p["Message-ID"]) for _, p in originals)
    subjects = Counter(str(p["Subject"]) for _, p in originals)
    assert max(ids.values()) == 1 and max(subjects.values()) == 1
    senders = Counter(m.label.mail_from for m, _ in originals
                      if m.label.kind != "followup")  # the one kind that writes again
    assert senders.pop("") == Counter(m.label.kind for m in mails)["bounce"]  # null sender
    assert max(senders.values()) == 1
    for m in mails:
        if m.label.kind == "copy":
            original = mails[m.label.parent]
            assert m.data == original.data and m.label.parent < m.label.index
            assert original.label.kind in CUSTOMER
            assert m.label.message_id == original.label.message_id


def test_follow_ups_answer_an_earlier_message_of_the_same_sender(
        mails: list[Any], parsed: list[EmailMessage]) -> None:
    by_id = {str(p["Message-ID"]): i for i, p in enumerate(parsed) if mails[i].label.kind != "copy"}
    followups = [i for i, m in enumerate(mails) if m.label.kind == "followup"]
    assert followups
    for index in followups:
        message = parsed[index]
        parent = by_id[str(message["In-Reply-To"])]
        assert parent == mails[index].label.parent < index
        assert str(message["In-Reply-To"]) in str(message["References"])
        assert mails[parent].label.mail_from == mails[index].label.mail_from
        assert parseaddr(str(parsed[parent]["From"]))[1] == mails[index].label.mail_from
        assert re.match(r"(Re|RE|Relance|Chasing)\b", str(message["Subject"]))


def test_shares_are_roughly_as_configured(mails: list[Any]) -> None:
    kinds = Counter(m.label.kind for m in mails)
    for kind, share in mailgen.SHARES.items():
        assert abs(kinds[kind] / COUNT - share) < 0.04, (kind, kinds[kind])
    lots = mailgen.Generator(seed=3, size=SIZE, shares={"copy": 0.3}).generate(300)
    assert Counter(m.label.kind for m in lots)["copy"] > 40


def test_every_message_parses_cleanly_at_its_size(parsed: list[EmailMessage],
                                                 mails: list[Any]) -> None:
    for mail, message in zip(mails, parsed, strict=True):
        assert not [d for part in message.walk() for d in part.defects], mail.label
        assert message["Date"] and message["Message-ID"] and message["From"]
        assert message.get_body(("plain",)).get_content().strip()
        assert abs(len(mail.data) - SIZE) <= 0.05 * SIZE + 256, (mail.label.kind, len(mail.data))
    assert any(m.get_content_type() == "multipart/report" for m in parsed)
    for size in (10240, 1 << 20):
        some = mailgen.Generator(seed=5, size=size).generate(8 if size < 1 << 20 else 2)
        for mail in some:
            message = email.message_from_bytes(mail.data, policy=email.policy.default)
            assert not [d for part in message.walk() for d in part.defects]
            assert abs(len(mail.data) - size) <= 0.05 * size + 256
    assert any(part.get_content_type() == "application/pdf" for part in email.message_from_bytes(
        some[0].data, policy=email.policy.default).walk())


def test_labels_agree_with_the_rules_and_the_robot_detector(
        mails: list[Any], parsed: list[EmailMessage]) -> None:
    scored = matcher([t for terms in rule_terms("prioritise.yaml", "prioritise").values()
                      for t in terms])
    angry = rule_terms("prioritise.yaml", "prioritise")
    urgent = matcher(angry["urgency"] + angry["unhappy-customer"])
    legal = matcher(rule_terms("escalate.yaml", "escalate")["legal-notice"])
    for mail, message in zip(mails, parsed, strict=True):
        label, text = mail.label, words(message)
        assert label.ack == (label.kind in ("new", "urgent", "legal"))
        assert label.escalation == (label.kind == "legal")
        if label.kind == "new":
            assert not scored.search(text), (scored.search(text), label.subject)
        if label.kind == "urgent":
            assert urgent.search(text) and not legal.search(text), label.subject
        if label.kind == "legal":
            assert legal.search(text), label.subject
        seen = parse_message(mail.data, Envelope(label.mail_from, (label.rcpt_to,)))
        robot = SHIPPED.judge(seen)
        assert (robot is not None) == (label.kind in ("auto-reply", "bounce", "newsletter")), (
            label.kind, robot)
        if label.kind in CUSTOMER:
            assert not label.mail_from.endswith("example.com")
            assert SHIPPED.address(label.mail_from) is None
        assert label.rcpt_to in ("sav@example.com", "contact@example.com",
                                 "devis@example.com", "support@example.com")


def test_a_written_folder_reads_back(tmp_path: Any, mails: list[Any]) -> None:
    written = mailgen.write(mails[:20], tmp_path / "maildir")
    assert sorted(p.name for p in (tmp_path / "maildir").iterdir()) == [
        "cur", "labels.jsonl", "new", "tmp"]
    again = mailgen.read(tmp_path / "maildir")
    assert [m.data for m in again] == [m.data for m in mails[:20]]
    assert [m.label for m in again] == written
