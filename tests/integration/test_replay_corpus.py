"""``mailflow replay`` on an mbox of the ../shared/corpus messages: every message replayed,
nothing refused, the robots not acknowledged, the people acknowledged once per case
(collected only where ../shared exists: see tests/conftest.py)."""

from __future__ import annotations

import csv
import mailbox
from email import message_from_bytes
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from clirunner import run_cli
from conftest import CORPUS, REPO, full_chain_rules

pytestmark = pytest.mark.slow


def test_the_corpus_as_an_mbox(tmp_path: Path) -> None:
    index = YAML(typ="safe").load((CORPUS / "index.yaml").read_text(encoding="utf-8"))
    box = mailbox.mbox(tmp_path / "corpus.mbox")
    for item in index["messages"]:
        box.add(message_from_bytes((CORPUS / item["file"]).read_bytes()))
    box.close()
    rows_file = tmp_path / "rows.csv"
    result = run_cli("replay", str(tmp_path / "corpus.mbox"), "--rules",
                     str(full_chain_rules(tmp_path / "rules")), "--state-dir",
                     str(tmp_path / "state"), "--output", str(rows_file), cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert f"{len(index['messages'])} messages replayed" in result.stdout
    with open(rows_file, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(index["messages"])
    assert all(row["reply"].startswith("250") for row in rows)
    robots = [row for row in rows if row["automatic"]]
    assert len(robots) >= 4  # an out-of-office, a DSN, a newsletter, a robot's address…
    assert all(row["ack"] != "sent" for row in robots)
    assert sum(row["ack"] == "sent" for row in rows) >= 10
    cases = [row["case"] for row in rows if row["ack"] == "sent"]
    assert len(cases) == len(set(cases))  # one acknowledgement per case
    assert not (tmp_path / "state").exists()
