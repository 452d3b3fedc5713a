"""``mailflow try`` says what the verdict means: who hears what, and whether anything
is delivered or queued. Run from ``tmp_path`` through ``tests/clirunner.py``, with a
configuration file whose relative paths are its folder's.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from clirunner import cli_logging, run_cli
from conftest import REPO, full_chain_rules

FIXTURES = REPO / "tests" / "fixtures"
MESSAGE = (b"From: Claire Dupont <claire.dupont@client.test>\r\nTo: sav@example.com\r\n"
           b"Subject: Ma commande\r\nMessage-ID: <out-1@client.test>\r\n\r\n"
           b"Bonjour, ma commande 1234 n'est pas arrivee.\r\n")
ACK_THEN = "number, deduplicate, prioritise, route, acknowledge"


@pytest.fixture(autouse=True)
def _logging() -> Iterator[None]:
    with cli_logging():
        yield


def setup(tmp_path: Path, chain: str, **sections: object) -> tuple[Path, Path]:
    """(configuration file, folder to run from): rules, plugins and state beside the file."""
    conf = tmp_path / "conf"
    shutil.copytree(FIXTURES / "verdict_plugin", conf / "plugins")  # fixture_verdict
    full_chain_rules(conf / "rules", f"chain: [{chain}]\n", **sections)
    config = conf / "mailflow.yaml"
    config.write_text(f"state_dir: state\nrules: rules\n"
                      f"plugin_dirs: [plugins, {FIXTURES / 'plugin_dir'}]\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "m.eml").write_bytes(MESSAGE)
    return config, elsewhere


def tried(tmp_path: Path, chain: str, **sections: object) -> list[str]:
    config, cwd = setup(tmp_path, chain, **sections)
    done = run_cli("try", "m.eml", "--config", str(config), cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert not (config.parent / "state").exists()  # a dry run changes nothing
    return done.stdout.splitlines()


def test_a_failing_stage_means_a_tempfail_not_a_delivery(tmp_path: Path) -> None:
    lines = tried(tmp_path, f"{ACK_THEN}, fixture_explode")
    assert "verdict   tempfail  reply: 451 4.3.0 Temporary processing failure, try again later" \
        in lines
    assert ('outcome   the client would get "451 4.3.0 Temporary processing failure, try again'
            ' later" and retry later; nothing delivered') in lines
    assert not any(line.startswith(("deliver", "header")) for line in lines), lines
    # the ack the chain asked for is not queued: nothing of a refused message is committed
    (ack,) = [line for line in lines if line.startswith("outbox")]
    assert ack.startswith("outbox    ack to claire.dupont@client.test (")
    assert ack.endswith("  (not queued: the message is refused)")


def test_a_reject_without_a_reply_of_its_own_gets_the_daemon_s(tmp_path: Path) -> None:
    lines = tried(tmp_path, "headers, fixture_verdict", fixture_verdict={"verdict": "reject"})
    assert ('outcome   the client would get "550 5.7.1 Message refused by policy" and not retry;'
            ' nothing delivered') in lines
    assert not any(line.startswith(("deliver", "header")) for line in lines), lines


def test_a_reject_with_its_reply(tmp_path: Path) -> None:
    lines = tried(tmp_path, "headers, fixture_verdict",
                  fixture_verdict={"verdict": "reject", "reply": "554 5.7.1 Not here"})
    assert ('outcome   the client would get "554 5.7.1 Not here" and not retry;'
            ' nothing delivered') in lines


@pytest.mark.parametrize("verdict,said", [
    ("discard", "outcome   the client would get 250 and the message is dropped;"
                " nothing delivered"),
    ("quarantine", "outcome   the client would get 250 and the message is kept in the store's"
                   " quarantine; nothing delivered"),
])
def test_discard_and_quarantine_accept_but_deliver_nothing(tmp_path: Path, verdict: str,
                                                           said: str) -> None:
    lines = tried(tmp_path, f"{ACK_THEN}, fixture_verdict",
                  fixture_verdict={"verdict": verdict})
    assert said in lines
    assert not any(line.startswith(("deliver", "header")) for line in lines), lines
    # accepted: what the chain asked for is committed, the ack is sent
    (ack,) = [line for line in lines if line.startswith("outbox")]
    assert "not queued" not in ack


def test_deliver_still_says_to_whom(tmp_path: Path) -> None:
    lines = tried(tmp_path, "headers, fixture_verdict")
    assert "deliver   to sav@example.com" in lines
    assert not any(line.startswith("outcome") for line in lines)
