"""The shipped rules escalate the corpus's legal notice to the lawyer, who is not the agent
handling the case, and ``mailflow timers list`` shows its follow-up."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from clirunner import run_cli
from conftest import CORPUS, Daemon, Sink, full_chain_rules, parse_email

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def test_corpus_legal_notice_goes_to_the_expert(daemon_factory: Any, tmp_path: Path,
                                                sink: Sink) -> None:
    t0 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    d: Daemon = daemon_factory(rules=full_chain_rules(tmp_path / "rules-src"), test_clock=t0)
    data = (CORPUS / "fr_juridique_expert.eml").read_bytes()
    code, text = d.send(data, mail_from="juridique@asso-conso-exemple.fr",
                        rcpt_to=["contact@example.com"])
    assert code == 250, text
    sink.wait_for(3)
    d.settle()
    relayed = [m for m in sink.messages if m.mail_from == "juridique@asso-conso-exemple.fr"]
    assert [m.rcpt_tos for m in relayed] == [["lea.garnier@example.com"]]
    (forward,) = [m for m in sink.messages if "maitre.durand@example.com" in m.rcpt_tos]
    case = parse_email(relayed[0].data)["X-Mailflow-Case"]
    assert case in str(parse_email(forward.data)["Subject"])
    listed = run_cli("timers", "list", "--config", str(d.config_path))
    assert any(case in line and "escalate.remind" in line
               for line in listed.stdout.splitlines()), listed.stdout
