"""Plugins through the real daemon: an installed entry point, a plugin folder, failures.

Needs the example plugin installed (``make test`` does it for every plugins/*/):
``pip install -e plugins/mailflow-example-blocklist``.
"""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from clirunner import CliResult, run_cli
from conftest import REPO, RULES, Daemon, Sink

pytestmark = pytest.mark.slow  # starts the daemon: `pytest -m 'not slow'` leaves it out

PLUGIN_DIR = REPO / "tests" / "fixtures" / "plugin_dir"



@pytest.fixture(autouse=True)
def _example_plugin_installed() -> None:
    """`make test` installs it; a missing plugin is a failure to read, not a skip."""
    if "blocklist" not in {ep.name for ep in entry_points(group="mailflow.plugins")}:
        pytest.fail("the example plugin is not installed:"
                    " pip install -e plugins/mailflow-example-blocklist")


def write_rules(directory: Path, chain: list[str], **sections: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"local_domains": ["example.com"], "chain": chain,
                            "headers": {"add": {"X-Mailflow-Gateway": "mailflow"}}}
    data.update(sections)
    with open(directory / "rules.yaml", "w", encoding="utf-8") as fh:
        YAML().dump(data, fh)
    return directory


def message(subject: str = "Hello", sender: str = "claire@client.test",
            mid: str = "plugin-1@client.test") -> bytes:
    return (f"From: Claire <{sender}>\r\nTo: sav@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <{mid}>\r\n\r\nBody.\r\n").encode()


def mail_from_reply(d: Daemon, sender: str) -> tuple[int, bytes]:
    with d.smtp() as client:
        return client.mail(sender)


def cli(*args: str) -> CliResult:
    """``mailflow ARGS...``, in-process, from the repository."""
    return run_cli(*args, cwd=REPO)


BLOCKLIST = {"senders": ["spammer@bad.test", "@blocked.test"],
             "quarantine_subjects": ["lottery|you have won"]}


# -- the example entry-point plugin -----------------------------------------------------


def test_enabled_blocklist_refuses_at_mail_from_and_its_stage_runs(
        daemon_factory: Any, tmp_path: Path, sink: Sink) -> None:
    rules = write_rules(tmp_path / "r", ["headers", "blocklist"], blocklist=BLOCKLIST)
    d: Daemon = daemon_factory(config={"plugins": ["blocklist"]}, rules=rules)
    for sender in ("spammer@bad.test", "SPAMMER@Bad.Test", "anyone@blocked.test",
                   "x@mx.blocked.test"):
        code, text = mail_from_reply(d, sender)
        assert code == 550, (sender, code, text)
        assert text.startswith(b"5.7.1"), text
    assert mail_from_reply(d, "")[0] == 250  # bounces always pass
    assert mail_from_reply(d, "friend@notblocked.test")[0] == 250

    code, text = d.send(message(), mail_from="friend@notblocked.test")
    assert code == 250, text
    (got,) = sink.wait_for(1)
    assert b"X-Mailflow-Blocklist-Checked: yes\r\n" in got.data

    # the stage quarantines by subject: accepted (250), kept, not relayed
    code, text = d.send(message("You have WON the lottery", mid="lottery@client.test"))
    assert code == 250, text
    assert b"quarantine" in text
    # and by a listed From: behind an innocent envelope sender
    code, text = d.send(message(sender="spammer@bad.test", mid="from@client.test"))
    assert code == 250, text
    assert b"quarantine" in text
    d.wait_for_log("blocklist_quarantined")
    assert len(sink.messages) == 1
    assert "blocklist_refused" in d.log
    assert "Traceback" not in d.log


def test_installed_but_not_enabled_is_inert(daemon_factory: Any, tmp_path: Path,
                                            sink: Sink) -> None:
    rules = write_rules(tmp_path / "r", ["headers"])
    d: Daemon = daemon_factory(rules=rules)
    assert mail_from_reply(d, "spammer@bad.test")[0] == 250
    code, text = d.send(message("You have won the lottery"), mail_from="spammer@bad.test")
    assert code == 250, text
    (got,) = sink.wait_for(1)
    assert b"Blocklist" not in got.data
    # and its stage is unknown to the chain until the plugin is named in the configuration
    bad = write_rules(tmp_path / "r2", ["headers", "blocklist"], blocklist=BLOCKLIST)
    unnamed: Daemon = daemon_factory(rules=bad, start=False)
    unnamed.write_config()
    result = cli("check", "--config", str(unnamed.config_path))
    assert result.returncode != 0
    assert "no stage named 'blocklist'" in result.stderr


def test_check_lists_the_enabled_plugin(daemon_factory: Any, tmp_path: Path) -> None:
    rules = write_rules(tmp_path / "r", ["headers", "blocklist"], blocklist=BLOCKLIST)
    d: Daemon = daemon_factory(config={"plugins": ["blocklist"]}, rules=rules, start=False)
    d.write_config()
    result = cli("check", "--config", str(d.config_path))
    assert result.returncode == 0, result.stderr
    assert "blocklist" in result.stdout
    # a mistake in the plugin's section is located like any other
    bad = write_rules(tmp_path / "r2", ["headers", "blocklist"],
                      blocklist={"senders": ["ok@x.test"], "quarantine_subjects": ["(unclosed"]})
    d2: Daemon = daemon_factory(config={"plugins": ["blocklist"]}, rules=bad, start=False)
    d2.write_config()
    result = cli("check", "--config", str(d2.config_path))
    assert result.returncode != 0
    assert "rules.yaml:" in result.stderr and "not a regular expression" in result.stderr


# -- single-file plugins from plugin_dirs -------------------------------------------------


def folder_daemon(daemon_factory: Any, tmp_path: Path, chain: list[str],
                  **sections: Any) -> Daemon:
    rules = write_rules(tmp_path / "r", chain, **sections)
    d: Daemon = daemon_factory(config={"plugin_dirs": [str(PLUGIN_DIR)]}, rules=rules)
    return d


def test_plugin_dir_stage_runs_in_the_chain(daemon_factory: Any, tmp_path: Path,
                                            sink: Sink) -> None:
    d = folder_daemon(daemon_factory, tmp_path, ["headers", "fixture_tag"],
                      fixture_tag={"value": "from-the-folder"})
    original = message()
    code, text = d.send(original)
    assert code == 250, text
    (got,) = sink.wait_for(1)
    assert got.data.endswith(original)
    assert b"X-Fixture-Tag: from-the-folder\r\n" in got.data


def test_stage_that_raises_tempfails_and_the_daemon_keeps_serving(
        daemon_factory: Any, tmp_path: Path, sink: Sink) -> None:
    d = folder_daemon(daemon_factory, tmp_path, ["headers", "fixture_explode"],
                      fixture_explode={"when_subject": "boom"})
    code, text = d.send(message("boom"))
    assert code == 451, (code, text)
    assert text.startswith(b"4.")
    assert not sink.messages
    code, text = d.send(message("calm", mid="calm@client.test"))
    assert code == 250, text
    (got,) = sink.wait_for(1)
    assert b"Subject: calm" in got.data
    assert d.proc is not None and d.proc.poll() is None
    assert "stage_failed" in d.log and "deliberate failure" in d.log


def test_stage_with_on_error_skip_is_skipped_without_its_changes(
        daemon_factory: Any, tmp_path: Path, sink: Sink) -> None:
    d = folder_daemon(daemon_factory, tmp_path, ["headers", "fixture_explode", "fixture_tag"],
                      fixture_explode={"on_error": "skip"})
    code, text = d.send(message("boom"))
    assert code == 250, text
    (got,) = sink.wait_for(1)
    assert b"X-Fixture-Explode" not in got.data  # what it did before raising is undone
    assert b"X-Fixture-Tag: tagged\r\n" in got.data  # the chain went on
    assert b"X-Mailflow-Gateway: mailflow\r\n" in got.data


def test_stage_that_hangs_past_its_timeout_tempfails(daemon_factory: Any, tmp_path: Path,
                                                     sink: Sink) -> None:
    d = folder_daemon(daemon_factory, tmp_path, ["headers", "fixture_hang"],
                      fixture_hang={"timeout": 0.5})
    code, text = d.send(message())
    assert code == 451, (code, text)
    assert not sink.messages
    assert d.proc is not None and d.proc.poll() is None


# -- the CLI --------------------------------------------------------------------------------


def test_check_reports_an_unknown_stage_with_its_position(daemon_factory: Any,
                                                          tmp_path: Path) -> None:
    rules = tmp_path / "r"
    rules.mkdir()
    (rules / "chain.yaml").write_text("local_domains: [example.com]\n"
                                      "chain:\n  - headers\n  - no_such_stage\n",
                                      encoding="utf-8")
    d: Daemon = daemon_factory(rules=rules, start=False)
    d.write_config()
    result = cli("check", "--config", str(d.config_path))
    assert result.returncode != 0
    assert f"{d.rules / 'chain.yaml'}:4:5: no stage named 'no_such_stage'" in result.stderr


def test_check_accepts_the_shipped_rules(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(rules=RULES, start=False)
    d.write_config()
    result = cli("check", "--config", str(d.config_path))
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


def test_try_json_prints_the_decisions(daemon_factory: Any, tmp_path: Path) -> None:
    rules = write_rules(tmp_path / "r", ["headers", "fixture_tag"],
                        fixture_tag={"value": "dry"})
    d: Daemon = daemon_factory(config={"plugin_dirs": [str(PLUGIN_DIR)]}, rules=rules,
                               start=False)
    d.write_config()
    eml = tmp_path / "m.eml"
    eml.write_bytes(message("Dry run").replace(b"\r\n", b"\n"))
    result = cli("try", "--json", "--config", str(d.config_path), str(eml),
                 "--rcpt-to", "sav@example.com")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["chain"] == ["headers", "fixture_tag"]
    assert [x["stage"] for x in report["decisions"]] == ["headers", "fixture_tag"]
    assert all(x["outcome"] == "ok" for x in report["decisions"])
    assert report["verdict"] == "deliver"
    assert {"name": "X-Fixture-Tag", "value": "dry"} in report["headers"]
    assert report["envelope"]["mail_from"] == "claire@client.test"
    assert report["message"]["subject"] == "Dry run"
    assert not (d.tmp / "state" / "mailflow.sqlite3").exists()  # a dry run changes nothing
