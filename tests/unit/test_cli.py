"""``mailflow check | try | cases | agents | version``, run in-process through ``cli.main``."""

from __future__ import annotations

import asyncio
import importlib.metadata
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import clirunner
from clirunner import cli_logging, run_cli
from conftest import RULES
from mailflow import __version__, cases, cli, intake
from mailflow.plugins import builtin_schemas
from mailflow.store import open_store

MESSAGE = (b"From: Claire Dupont <Claire.Dupont@client.test>\r\n"
           b"To: SAV <sav@example.com>\r\nSubject: Ma commande\r\n"
           b"Message-ID: <cli-1@client.test>\r\n"
           b"Date: Mon, 23 Nov 2026 09:30:00 +0100\r\n\r\n"
           b"Bonjour, ma commande 1234 n'est pas arrivee.\r\n")


@pytest.fixture(autouse=True)
def _logging() -> Iterator[None]:
    with cli_logging():
        yield


@pytest.fixture
def relay_rules(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "chain.yaml").write_text(
        "local_domains: [example.com]\nchain: [headers]\n"
        "headers:\n  add:\n    X-Mailflow-Gateway: mailflow\n", encoding="utf-8")
    return rules


@pytest.fixture
def eml(tmp_path: Path) -> Path:
    path = tmp_path / "message.eml"
    path.write_bytes(MESSAGE)
    return path


def state(tmp_path: Path) -> list[str]:
    return ["--state-dir", str(tmp_path / "state")]


def try_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert cli.main(["try", "--json", *args]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


# -- the console script, version, usage -----------------------------------------------


def test_the_console_script_runs() -> None:
    """The one command run as a process: the installed entry point and ``python -m``."""
    script = Path(sys.executable).with_name("mailflow")
    for command in ([str(script)], [sys.executable, "-m", "mailflow.cli"]):
        done = subprocess.run([*command, "version"], capture_output=True, text=True,
                              timeout=60, check=False)
        assert (done.returncode, done.stdout) == (0, f"mailflow {__version__}\n"), done.stderr


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["version"]) == 0
    assert capsys.readouterr().out == f"mailflow {__version__}\n"


def test_dash_dash_version(capsys: pytest.CaptureFixture[str]) -> None:
    """What a newcomer types first: ``mailflow --version``, the installed version."""
    assert clirunner.main("--version") == 0
    assert capsys.readouterr().out == f"mailflow {importlib.metadata.version('mailflow')}\n"


# argparse's own --version and --help swallow the failed write and exit 0
@pytest.mark.parametrize("argv,code", [(["version"], cli.BROKEN_PIPE), (["--version"], 0),
                                       (["cases", "--help"], 0)])
def test_a_closed_pipe_ends_quietly(tmp_path: Path, argv: list[str], code: int) -> None:
    """``mailflow ... | head``: the reader went away; no traceback, no BrokenPipe line
    (cases, from a real store, in tests/integration/test_first_hour.py)."""
    script = Path(sys.executable).with_name("mailflow")
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: the first write fails, deterministically
    try:
        done = subprocess.run([str(script), *argv], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=60, check=False, cwd=tmp_path)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (code, "")


def test_a_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["try"])
    assert exc.value.code == 2
    assert "MESSAGE.eml" in capsys.readouterr().err


# -- check ----------------------------------------------------------------------------


def test_check_accepts_the_shipped_rules(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "--rules", str(RULES), *state(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "configuration OK: " in out
    assert f"rules OK: {RULES}" in out
    assert "chain: number, deduplicate, prioritise, sentiment, route, sla, " in out
    assert "acknowledge, answers, replies" in out
    assert ("service mailboxes: contact@example.com, devis@example.com, facturation@example.com,"
            " juridique@example.com, sav@example.com, support@example.com") in out
    agents = re.search(r"^agents: (\d+) known", out, re.MULTILINE)
    assert agents is not None and int(agents.group(1)) >= 6  # the teams' members at least


def test_check_reports_a_problem_at_its_position(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "chain.yaml").write_text("local_domains: [example.com]\n"
                                      "chain:\n  - headers\n  - no_such_stage\n",
                                      encoding="utf-8")
    assert cli.main(["check", "--rules", str(rules), *state(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{rules / 'chain.yaml'}:4:5: no stage named 'no_such_stage'" in err
    assert "mailflow: 1 configuration error(s)" in err


def test_missing_files_are_reported_not_raised(tmp_path: Path, relay_rules: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "--config", str(tmp_path / "nowhere.yaml")]) == 2
    assert f"{tmp_path / 'nowhere.yaml'}: file not found" in capsys.readouterr().err
    missing = tmp_path / "missing.eml"
    assert cli.main(["try", str(missing), "--rules", str(relay_rules), *state(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mailflow: ") and str(missing) in err


# -- try --------------------------------------------------------------------------------


def test_try_json_reports_the_decisions(tmp_path: Path, relay_rules: Path, eml: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    report = try_json(capsys, str(eml), "--rules", str(relay_rules), *state(tmp_path))
    # the envelope comes from From: and To:, as written
    assert report["envelope"] == {"mail_from": "Claire.Dupont@client.test",
                                  "rcpt_to": ["sav@example.com"], "peer": "192.0.2.1"}
    assert report["message"]["subject"] == "Ma commande"
    assert report["chain"] == ["headers"]
    assert [d["stage"] for d in report["decisions"]] == ["headers"]
    assert report["verdict"] == "deliver"
    assert {"name": "X-Mailflow-Gateway", "value": "mailflow"} in report["headers"]
    assert report["recipients"] == ["sav@example.com"]
    assert report["intake"] == {"refusal": None, "refused_recipients": {},
                                "newlines_fixed": False, "headers_removed": 0}
    assert (report["direction"], report["case"], report["triage"]) == ("inbound", None, None)
    assert report["stash"] == {}
    assert "attributes" not in report and "cache" not in report
    assert not (tmp_path / "state").exists()  # a dry run changes nothing
    assert report["message"]["cut"] == []  # nothing but the customer's words


def test_try_shows_what_is_not_the_customers_own_text(
        tmp_path: Path, relay_rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reply = tmp_path / "reply.eml"
    reply.write_bytes(MESSAGE.replace(b"arrivee.\r\n", b"arrivee.\r\n\r\nLe lun. 23 nov. 2026"
                                      b" 10:02, SAV <sav@example.com> a \xc3\xa9crit :\r\n"
                                      b"> Bonjour\r\n"))
    report = try_json(capsys, str(reply), "--rules", str(relay_rules), *state(tmp_path))
    assert report["message"]["cut"] == [
        {"reason": "attribution", "lines": [3, 3],
         "first": "Le lun. 23 nov. 2026 10:02, SAV <sav@example.com> a écrit :"},
        {"reason": "quote", "lines": [4, 4], "first": "> Bonjour"}]
    assert report["message"]["own_text_chars"] == len(
        "Bonjour, ma commande 1234 n'est pas arrivee.")
    assert cli.main(["try", str(reply), "--rules", str(relay_rules), *state(tmp_path)]) == 0
    assert "  quote        lines 4-4: '> Bonjour'" in capsys.readouterr().out.splitlines()


def test_try_shows_the_case_and_triage_never_the_caches(
        tmp_path: Path, eml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = try_json(capsys, str(eml), "--rules", str(RULES), *state(tmp_path))
    case = report["case"]
    assert case["status"] == "new" and case["customer"] == "claire.dupont@client.test"
    assert case["number"].startswith("SAV-")
    assert report["triage"]["priority"] in ("urgent", "high", "normal", "low")
    text = json.dumps(report)
    assert "_folded" not in text and "_flat" not in text and "_scan" not in text
    assert not (tmp_path / "state").exists()


def test_try_shows_the_direction_and_why(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         ) -> None:
    supplier = tmp_path / "supplier.eml"
    supplier.write_bytes(b"From: contact@fournisseur.test\r\nTo: jean@example.com\r\n"
                         b"Subject: Facture\r\nMessage-ID: <f-1@fournisseur.test>\r\n"
                         b"\r\nVoici.\r\n")
    report = try_json(capsys, str(supplier), "--rules", str(RULES), *state(tmp_path))
    assert (report["direction"], report["case"]) == ("passthrough", None)
    # passed mail: only the stage that counts it looks at it
    assert [d["stage"] for d in report["decisions"]] == ["statistics"]
    assert report["direction_reason"] == "no service mailbox among the recipients"
    agent = tmp_path / "agent.eml"
    agent.write_bytes(b"From: alice.moreau@example.com\r\nTo: claire@client.test\r\n"
                      b"Subject: Re: votre commande\r\nMessage-ID: <a-1@example.com>\r\n"
                      b"\r\nOui.\r\n")
    # from the office network (loopback is trusted by default): a reply, to no case yet
    assert cli.main(["try", str(agent), "--rules", str(RULES), *state(tmp_path),
                     "--peer", "127.0.0.1"]) == 0
    out = capsys.readouterr().out
    assert "direction passthrough (reply to no case)" in out
    assert "replies" in out  # the replies stage ran, and found nothing
    # the same address from outside, to a service mailbox: customer mail like any other
    report = try_json(capsys, str(agent), "--rules", str(RULES), *state(tmp_path),
                      "--rcpt-to", "sav@example.com")
    assert report["direction"] == "inbound" and report["case"]["status"] == "new"


def test_try_runs_the_chain_only_for_accepted_recipients(
        tmp_path: Path, relay_rules: Path, eml: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    report = try_json(capsys, str(eml), "--rules", str(relay_rules), *state(tmp_path),
                      "--rcpt-to", "sav@example.com", "--rcpt-to", "someone@elsewhere.test")
    assert report["envelope"]["rcpt_to"] == ["sav@example.com", "someone@elsewhere.test"]
    assert report["intake"]["refused_recipients"] == {
        "someone@elsewhere.test": "550 5.7.1 Relaying denied: not a local domain"}
    assert report["verdict"] == "deliver"
    assert report["recipients"] == ["sav@example.com"]


def test_try_refuses_relaying_for_strangers_as_the_daemon_does(
        tmp_path: Path, relay_rules: Path, eml: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(eml), "--rules", str(relay_rules), *state(tmp_path),
            "--rcpt-to", "someone@elsewhere.test"]
    report = try_json(capsys, *args)
    assert report["verdict"] == "reject"
    assert report["reply"] == "550 5.7.1 Relaying denied: not a local domain"
    assert report["decisions"] == [] and report["recipients"] == []
    trusted = try_json(capsys, *args, "--peer", "127.0.0.1")
    assert trusted["verdict"] == "deliver"
    assert trusted["recipients"] == ["someone@elsewhere.test"]


def test_try_applies_the_bare_newline_policy(tmp_path: Path, relay_rules: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    eml = tmp_path / "lf.eml"
    eml.write_bytes(MESSAGE.replace(b"\r\n", b"\n"))
    args = [str(eml), "--rules", str(relay_rules), *state(tmp_path)]
    report = try_json(capsys, *args)
    assert report["verdict"] == "deliver" and report["intake"]["newlines_fixed"]
    config = tmp_path / "strict.yaml"
    config.write_text("smtp:\n  bare_newlines: reject\n", encoding="utf-8")
    strict = try_json(capsys, *args, "--config", str(config), "--rcpt-to", "sav@example.com")
    assert strict["verdict"] == "reject"
    assert strict["reply"] == intake.BARE_NEWLINES_REPLY
    assert strict["intake"]["refusal"] == intake.BARE_NEWLINES_REPLY


def test_try_refuses_a_mail_loop(tmp_path: Path, relay_rules: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    eml = tmp_path / "loop.eml"
    eml.write_bytes(b"Received: from a.test by b.test; Thu, 1 Jan 2026 00:00:00 +0000\r\n"
                    * 101 + MESSAGE)
    report = try_json(capsys, str(eml), "--rules", str(relay_rules), *state(tmp_path))
    assert report["verdict"] == "reject" and report["reply"] == intake.TOO_MANY_HOPS_REPLY
    assert report["decisions"] == []
    assert report["message"]["subject"] == "Ma commande"  # parsed, so shown


def test_try_removes_internal_headers_only_for_strangers(
        tmp_path: Path, relay_rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
    eml = tmp_path / "forged.eml"
    eml.write_bytes(b"X-Mailflow-Case: SAV-FORGED-1\r\nX-Mailflow-Route: vip\r\n" + MESSAGE)
    args = [str(eml), "--rules", str(relay_rules), *state(tmp_path)]
    assert try_json(capsys, *args)["intake"]["headers_removed"] == 2
    trusted = try_json(capsys, *args, "--peer", "127.0.0.1",
                       "--rcpt-to", "sav@example.com")
    assert trusted["intake"]["headers_removed"] == 0


def test_try_parses_the_message_once(tmp_path: Path, relay_rules: Path, eml: Path,
                                     monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    parses: list[bytes] = []
    parse = intake.parse_message

    def counting(raw: bytes, *args: Any, **kwargs: Any) -> Any:
        parses.append(raw)
        return parse(raw, *args, **kwargs)

    monkeypatch.setattr(intake, "parse_message", counting)
    try_json(capsys, str(eml), "--rules", str(relay_rules), *state(tmp_path))
    assert parses == [MESSAGE]


def test_try_reads_stdin_and_speaks_to_humans(tmp_path: Path, relay_rules: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(MESSAGE)))
    assert cli.main(["try", "-", "--rules", str(relay_rules), *state(tmp_path),
                     "--rcpt-to", "sav@example.com", "--rcpt-to", "x@elsewhere.test"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "message   'Ma commande'  <cli-1@client.test>  (text/plain)"
    assert lines[1] == ("envelope  from <Claire.Dupont@client.test> to sav@example.com, "
                        "x@elsewhere.test (peer 192.0.2.1)")
    assert "refused   x@elsewhere.test: 550 5.7.1 Relaying denied: not a local domain" in lines
    assert "chain     headers" in lines
    assert "verdict   deliver" in lines
    assert "deliver   to sav@example.com" in lines
    assert "header    X-Mailflow-Gateway: mailflow" in lines


# -- cases ------------------------------------------------------------------------------


def seed_case(tmp_path: Path, number: str) -> None:
    async def seed() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'state' / 'mailflow.sqlite3'}")
        await store.open(builtin_schemas())
        try:
            await store.run_write(partial(
                cases.insert_case, number=number, customer="claire@client.test",
                customer_name="Claire", subject="Ma commande", mailbox="sav@example.com"))
            await store.run_write(partial(
                cases.add_case_message, number=number, message_id="cli-1@client.test",
                role="customer", sender="claire@client.test", queue_id="Q1"))
        finally:
            await store.close()

    asyncio.run(seed())


def test_cases_list_show_close_reopen(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    seed_case(tmp_path, "SAV-20261123-00001-5")
    capsys.readouterr()  # the store's own log lines
    assert cli.main(["cases", "list", *state(tmp_path)]) == 0
    (header, line) = capsys.readouterr().out.splitlines()
    assert header.startswith("NUMBER ")
    assert line.startswith("SAV-20261123-00001-5     open ")
    assert "claire@client.test" in line and line.endswith("Ma commande")

    assert cli.main(["cases", "show", "sav-20261123-00001-5", "--json", *state(tmp_path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["number"], shown["status"]) == ("SAV-20261123-00001-5", "open")
    assert [(m["message_id"], m["role"]) for m in shown["messages"]] == [
        ("cli-1@client.test", "customer")]

    assert cli.main(["cases", "close", "SAV-20261123-00001-5", *state(tmp_path)]) == 0
    assert capsys.readouterr().out == "SAV-20261123-00001-5 closed\n"
    assert cli.main(["cases", "list", "--status", "open", "--json", *state(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert cli.main(["cases", "reopen", "SAV-20261123-00001-5", *state(tmp_path)]) == 0
    assert capsys.readouterr().out == "SAV-20261123-00001-5 open\n"


def empty_store(tmp_path: Path) -> None:
    """The store a daemon creates on its first start, before any mail."""
    async def create() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'state' / 'mailflow.sqlite3'}")
        await store.open(builtin_schemas())
        await store.close()

    asyncio.run(create())


def test_cases_need_a_known_number(tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    empty_store(tmp_path)
    assert cli.main(["cases", "show", *state(tmp_path)]) == 2
    assert "give a case number" in capsys.readouterr().err
    assert cli.main(["cases", "close", "SAV-0", *state(tmp_path)]) == 1
    assert capsys.readouterr().err == "no case SAV-0\n"


# -- agents -----------------------------------------------------------------------------


def test_agents_list_and_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty_store(tmp_path)
    capsys.readouterr()  # the store's own log lines
    args = ["--rules", str(RULES), *state(tmp_path)]
    assert cli.main(["agents", "list", *args]) == 0
    listed = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert listed["bruno"] == "present" and listed["carole.martin"] == "present"
    assert cli.main(["agents", "set", "Bruno", "away", *args]) == 0
    assert capsys.readouterr().out == "bruno away\n"
    assert cli.main(["agents", "list", *args]) == 0
    assert "bruno                away" in capsys.readouterr().out.splitlines()


def test_agents_set_takes_a_name_or_the_full_address(tmp_path: Path) -> None:
    empty_store(tmp_path)
    args = ["--rules", str(RULES), *state(tmp_path)]
    # a member named in the rules (bruno.petit@example.com is `name: bruno`)
    done = run_cli("agents", "set", "Bruno.Petit@Example.com", "away", *args, cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "bruno away\n", "")
    # a member without a name goes by the local part; so does an account manager
    assert run_cli("agents", "set", "david.simon@example.com", "away", *args,
                   cwd=tmp_path).stdout == "david.simon away\n"
    assert run_cli("agents", "set", "carole.martin@example.com", "away", *args,
                   cwd=tmp_path).stdout == "carole.martin away\n"
    listed = dict(line.split() for line in run_cli("agents", "list", *args,
                                                   cwd=tmp_path).stdout.splitlines())
    assert {name for name, status in listed.items() if status == "away"} == {
        "bruno", "david.simon", "carole.martin"}
    # the right local part at the wrong address is nobody routing knows
    done = run_cli("agents", "set", "bruno@example.com", "away", *args, cwd=tmp_path)
    assert done.returncode == 2
    assert "no agent with the address 'bruno@example.com' in the route rules" in done.stderr
    assert "bruno" in done.stderr.partition("known:")[2]


def test_agents_set_refuses_an_unknown_name(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    empty_store(tmp_path)
    args = ["--rules", str(RULES), *state(tmp_path)]
    assert cli.main(["agents", "set", "brunoo", "away", *args]) == 2
    err = capsys.readouterr().err
    assert "no agent named 'brunoo'" in err and "bruno" in err
    assert cli.main(["agents", "set", "bruno", *args]) == 2
    assert "mailflow agents set NAME|ADDRESS away|present" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["cases", "show", "--config", "c.yaml", "SAV-1"],
    ["cases", "show", "SAV-1", "--config", "c.yaml"],
    ["cases", "--config", "c.yaml", "show", "SAV-1"],
])
def test_options_before_or_after_the_arguments(argv: list[str]) -> None:
    from mailflow.cli import parse

    args = parse(argv)
    assert (args.command, args.action, args.number, args.config) == (
        "cases", "show", "SAV-1", "c.yaml")


def test_timers_and_agents_take_options_anywhere() -> None:
    from mailflow.cli import parse

    timers = parse(["timers", "cancel", "--config", "c.yaml", "12"])
    assert (timers.action, timers.id, timers.config) == ("cancel", 12, "c.yaml")
    agents = parse(["agents", "set", "--rules", "r", "bruno", "away"])
    assert (agents.name, agents.status, agents.rules) == ("bruno", "away", "r")


def test_the_command_line_imports_no_metrics_before_serve_sets_them_up() -> None:
    """prometheus_client picks its value store when imported: ``serve`` sets the workers'
    shared one first, so nothing the command line imports may import it before."""
    probe = ("import sys, mailflow.cli, mailflow.cli.serve; mailflow.cli.build_parser();"
             " print('prometheus_client' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False", done.stderr
