"""Where the CLI looks for the store and the rules, from any folder, and what it says
when they are not there. Every command runs from ``tmp_path`` (never the project
checkout) through ``tests/clirunner.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from ruamel.yaml import YAML

from clirunner import cli_logging, run_cli
from conftest import RULES
from mailflow import cases
from mailflow.config import settings as settings_module
from mailflow.plugins import builtin_schemas
from mailflow.store import open_store

NUMBER = "SAV-20261123-00001-5"
MESSAGE = (b"From: Claire <claire@client.test>\r\nTo: sav@example.com\r\n"
           b"Subject: Ma commande\r\nMessage-ID: <w-1@client.test>\r\n\r\nBonjour.\r\n")


@pytest.fixture(autouse=True)
def _logging() -> Iterator[None]:
    with cli_logging():
        yield


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    """Some other folder the user happens to be in: no var/, no rules/."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """mailflow installed from a package, not a checkout: defaults are the current folder's."""
    monkeypatch.setattr(settings_module, "project_checkout", lambda: None)


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project checkout mailflow is installed from in editable mode, as ``make run`` does."""
    folder = tmp_path / "checkout"
    shutil.copytree(RULES, folder / "rules")
    monkeypatch.setattr(settings_module, "project_checkout", lambda: folder)
    return folder


def seed(db: Path, *, told: dict[str, object] | None = None) -> None:
    """One case in a store at ``db``, as the daemon leaves it (``told``: what its ack said)."""
    async def write() -> None:
        store = open_store(f"sqlite:///{db}")
        await store.open(builtin_schemas())
        try:
            await store.run_write(partial(
                cases.insert_case, number=NUMBER, customer="claire@client.test",
                customer_name="Claire", subject="Ma commande", mailbox="sav@example.com"))
            if told:
                await store.run_write(partial(cases.update_case, number=NUMBER, **told))
        finally:
            await store.close()

    asyncio.run(write())


# -- no store: say where, create nothing ------------------------------------------------


@pytest.mark.parametrize("command", [("cases", "list"), ("cases", "show", NUMBER),
                                     ("agents", "list"), ("cases", "close", NUMBER),
                                     ("agents", "set", "bruno", "away")])
def test_without_a_store_nothing_is_created_and_the_path_is_named(
        cwd: Path, installed: None, command: tuple[str, ...]) -> None:
    done = run_cli(*command, cwd=cwd)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (f"mailflow {command[0]}: no store at {cwd / 'var' / 'mailflow.sqlite3'}"
                           " (started with `make run`? otherwise give --config or --state-dir)\n")
    assert list(cwd.iterdir()) == []  # no var/, no empty store


def test_a_relative_state_dir_is_named_in_full(cwd: Path, installed: None) -> None:
    done = run_cli("cases", "list", "--state-dir", "state", cwd=cwd)
    assert done.returncode == 1
    assert f"no store at {cwd / 'state' / 'mailflow.sqlite3'} " in done.stderr
    assert not (cwd / "state").exists()


def test_missing_rules_and_configuration_are_named_in_full(cwd: Path, installed: None) -> None:
    (cwd / "m.eml").write_bytes(MESSAGE)
    done = run_cli("try", "m.eml", cwd=cwd)
    assert done.returncode == 2
    assert done.stderr.startswith(f"{cwd / 'rules'}: rules folder not found\n")
    done = run_cli("check", "--config", "conf/mailflow.yaml", cwd=cwd)
    assert done.returncode == 2
    assert done.stderr.startswith(f"{cwd / 'conf' / 'mailflow.yaml'}: file not found\n")


# -- the demo's store and rules, from any folder ----------------------------------------


def test_without_a_configuration_the_checkout_s_state_and_rules_are_used(
        cwd: Path, checkout: Path) -> None:
    seed(checkout / "var" / "mailflow.sqlite3")
    listed = run_cli("cases", "list", cwd=cwd)
    assert listed.returncode == 0, listed.stderr
    header, first = listed.stdout.splitlines()[:2]
    assert header.split() == ["NUMBER", "STATUS", "OPENED", "CUSTOMER", "SUBJECT"]
    assert first.startswith(f"{NUMBER}     open ")
    assert header.index("CUSTOMER") == first.index("claire")  # the columns line up
    assert run_cli("cases", cwd=cwd).stdout == listed.stdout  # no action: the list
    agents = run_cli("agents", cwd=cwd)  # no action: who takes mail, not an error
    assert agents.returncode == 0, agents.stderr
    assert agents.stdout == run_cli("agents", "list", cwd=cwd).stdout != ""
    (cwd / "m.eml").write_bytes(MESSAGE)
    tried = run_cli("try", "m.eml", cwd=cwd)  # the message is found here, the rules there
    assert tried.returncode == 0, tried.stderr
    assert "direction inbound" in tried.stdout and "case      SAV-" in tried.stdout
    assert list(cwd.iterdir()) == [cwd / "m.eml"]


def test_paths_in_a_configuration_file_are_relative_to_it(tmp_path: Path, cwd: Path,
                                                          installed: None) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(RULES, conf / "rules")
    (conf / "mailflow.yaml").write_text("state_dir: state\nrules: rules\n", encoding="utf-8")
    seed(conf / "state" / "mailflow.sqlite3")
    done = run_cli("cases", "list", "--config", str(conf / "mailflow.yaml"), cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].startswith(NUMBER)


# -- cases show: local times with their zone, language, promise -------------------------


def with_calendar_zone(checkout: Path, zone: str | None) -> None:
    """The checkout's rules with the default calendar in ``zone`` (None: no calendars
    and no acknowledge section at all)."""
    path = checkout / "rules" / "calendars.yaml"
    if zone is None:
        path.unlink()
        (checkout / "rules" / "acknowledge.yaml").unlink()
        (checkout / "rules" / "chain.yaml").write_text("chain: [number]\n", encoding="utf-8")
        return
    yaml = YAML()
    data = yaml.load(path.read_text(encoding="utf-8"))
    data["calendars"]["default"]["timezone"] = zone
    with open(path, "w", encoding="utf-8") as fh:
        yaml.dump(data, fh)


def shown(cwd: Path) -> tuple[dict[str, str], dict[str, object]]:
    """``cases show``: its ``label value`` lines, and the same case as JSON."""
    text = run_cli("cases", "show", NUMBER, cwd=cwd)
    assert text.returncode == 0, text.stderr
    lines = dict(line.split(maxsplit=1) if not line.startswith("first reply") else
                 ("first reply", line.removeprefix("first reply").strip())
                 for line in text.stdout.splitlines() if not line.startswith(" "))
    data = json.loads(run_cli("cases", "show", NUMBER, "--json", cwd=cwd).stdout)
    return lines, data


def test_show_gives_local_times_in_the_calendar_s_zone_and_what_the_ack_told(
        cwd: Path, checkout: Path) -> None:
    with_calendar_zone(checkout, "Asia/Tokyo")  # no summer time: always JST
    promised = time.time() + 3 * 3600
    seed(checkout / "var" / "mailflow.sqlite3",
         told={"language": "fr", "promised_at": promised})
    lines, data = shown(cwd)
    tokyo = ZoneInfo("Asia/Tokyo")
    assert isinstance(data["created_at"], float)  # scripts keep the timestamp
    opened = datetime.fromtimestamp(data["created_at"], tokyo)
    assert lines["opened"] == opened.strftime("%Y-%m-%d %H:%M JST")
    assert lines["promised"] == datetime.fromtimestamp(promised, tokyo).strftime(
        "%Y-%m-%d %H:%M JST")
    assert data["promised_at"] == promised
    assert lines["language"] == "fr"
    assert lines["first reply"] == "not yet"
    assert lines["route"] == "-"  # not "None"
    assert "created_at" not in lines and "promised_at" not in lines


def test_show_without_an_ack_says_so(cwd: Path, checkout: Path) -> None:
    seed(checkout / "var" / "mailflow.sqlite3")
    lines, data = shown(cwd)
    assert lines["language"] == "- (no acknowledgement written)"
    assert lines["promised"] == "-"
    assert (data["language"], data["promised_at"]) == (None, None)


@contextlib.contextmanager
def system_zone(name: str) -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TZ")
        else:
            os.environ["TZ"] = saved
        time.tzset()


def test_show_without_a_calendar_gives_the_system_zone(cwd: Path, checkout: Path) -> None:
    with_calendar_zone(checkout, None)
    seed(checkout / "var" / "mailflow.sqlite3")
    with system_zone("Asia/Kolkata"):  # no summer time either: always IST
        lines, data = shown(cwd)
    assert isinstance(data["created_at"], float)
    opened = datetime.fromtimestamp(data["created_at"], ZoneInfo("Asia/Kolkata"))
    assert lines["opened"] == opened.strftime("%Y-%m-%d %H:%M IST")
