"""A newcomer's first hour, as the README tells it: ``make run``, the swaks example,
the acknowledgement in the Maildir, then the CLI from any folder.

The daemon is started as ``make run`` starts it: ``mailflow serve`` with no
configuration file, from a project checkout (here a copy with the shipped rules,
which the launcher declares the checkout mailflow is installed from), only the
port changed. The CLI then runs in-process from another folder, with no
``--config`` and no ``--state-dir``, and must find that daemon's store and rules.
"""

from __future__ import annotations

import email.utils
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from babel.dates import format_date

from clirunner import run_cli
from conftest import REPO, RULES, drain_outbox, free_port, parse_email, wait_for_port
from mailflow import cli
from mailflow.config import settings as settings_module

pytestmark = pytest.mark.slow  # starts the daemon: `pytest -m 'not slow'` leaves it out

README = REPO / "README.md"
FIXTURES = REPO / "tests" / "fixtures"
#: ``mailflow serve`` with no configuration, its defaults anchored at the given checkout
LAUNCHER = """\
import sys
from pathlib import Path
from mailflow.cli import main
from mailflow.config import settings
settings.project_checkout = lambda: Path(sys.argv[1])
sys.exit(main(["serve", "--listen", sys.argv[2], "--metrics", sys.argv[3]]))
"""


@dataclass
class Demo:
    """The daemon ``make run`` starts, in its checkout."""

    checkout: Path
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    web: int  # where `make run` serves /metrics, /healthz and /report

    @property
    def maildir(self) -> Path:
        return self.checkout / "var" / "maildir" / "new"

    @property
    def db(self) -> Path:
        return self.checkout / "var" / "mailflow.sqlite3"

    def mails(self) -> list[EmailMessage]:
        return [parse_email(path.read_bytes()) for path in sorted(self.maildir.glob("*"))]

    def acks_to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.mails() if m["Auto-Submitted"] == "auto-replied"
                and m["Delivered-To"] == address]

    def settle(self) -> None:
        drain_outbox(self.db)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    checkout = tmp_path_factory.mktemp("checkout")
    shutil.copytree(RULES, checkout / "rules")
    port, web = free_port(), free_port()
    log_path = checkout / "make-run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(checkout),
                                 f"127.0.0.1:{port}", f"127.0.0.1:{web}"], cwd=checkout,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc=proc)
        wait_for_port(web, proc=proc)
        yield Demo(checkout, port, proc, log_path, web)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def at_the_checkout(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process CLI installed from the same checkout as the daemon."""
    monkeypatch.setattr(settings_module, "project_checkout", lambda: demo.checkout)


def readme_swaks() -> dict[str, str]:
    """The options of the README's first swaks command."""
    found = re.search(r"^\s*(swaks --server \S+[^\n`]*)$", README.read_text(encoding="utf-8"),
                      re.MULTILINE)
    assert found, "the README shows no swaks command"
    words = found.group(1).split()
    return dict(zip(words[1::2], words[2::2], strict=True))


def swaks(demo: Demo, sender: str, to: str, body: str = "This is a test mailing") -> str:
    """What swaks sends by default, from ``sender``; returns the Message-ID."""
    now = email.utils.formatdate(localtime=True)
    message_id = email.utils.make_msgid(domain=socket.gethostname())
    data = (f"Date: {now}\r\nTo: {to}\r\nFrom: {sender}\r\nSubject: test {now}\r\n"
            f"Message-Id: {message_id}\r\n"
            f"X-Mailer: swaks v20240103.0 jetmore.org/john/code/swaks/\r\n\r\n{body}\r\n\r\n")
    with smtplib.SMTP("127.0.0.1", demo.port, timeout=30) as client:
        client.sendmail(sender, [to], data.encode("utf-8"))
    return message_id


def case_of(demo: Demo, message_id: str) -> str:
    for mail in demo.mails():
        if mail["Message-Id"] == message_id and mail["X-Mailflow-Case"]:
            return str(mail["X-Mailflow-Case"])
    raise AssertionError(f"{message_id} not relayed into {demo.maildir}")


def test_the_readme_s_first_example_gets_an_ack_in_the_maildir(demo: Demo) -> None:
    options = readme_swaks()
    sender, to = options["--from"], options["--to"]
    assert options["--server"] == "127.0.0.1:2525"  # what `make run` listens on
    message_id = swaks(demo, sender, to)
    demo.settle()
    case = case_of(demo, message_id)
    (ack,) = demo.acks_to(sender)
    assert case in str(ack["Subject"])
    # the README says where to look, and that is where it is
    text = README.read_text(encoding="utf-8")
    assert "var/maildir/new/" in text and str(demo.maildir).endswith("var/maildir/new")


def test_swaks_s_own_sender_would_get_no_ack(demo: Demo) -> None:
    """Why the README gives ``--from``: swaks's default sender (root@host) is a robot's."""
    root = f"root@{socket.gethostname()}"
    message_id = swaks(demo, root, "sav@example.com")
    demo.settle()
    case_of(demo, message_id)  # relayed with its case, but
    assert demo.acks_to(root) == []


def test_the_cli_finds_the_daemon_s_store_and_rules_from_any_folder(
        demo: Demo, at_the_checkout: None, tmp_path: Path) -> None:
    message_id = swaks(demo, "claire@client.example.net", "sav@example.com",
                       "Bonjour, ma commande 4821 n'est pas arrivée. Merci de me répondre.")
    demo.settle()
    case = case_of(demo, message_id)
    listed = run_cli("cases", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert any(line.startswith(case) for line in listed.stdout.splitlines()), listed.stdout

    shown = run_cli("cases", "show", case, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    lines = {line[:12].strip(): line[13:] for line in shown.stdout.splitlines()
             if not line.startswith(" ")}
    assert lines["language"] == "fr"  # the acknowledgement's
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d CES?T", lines["opened"]), lines
    # the promise is the one the acknowledgement made, in the calendar's zone (Paris)
    promised = datetime.strptime(lines["promised"].rpartition(" ")[0], "%Y-%m-%d %H:%M")
    (ack,) = demo.acks_to("claire@client.example.net")
    body = ack.get_body(("plain",))
    assert body is not None
    said = format_date(promised, "d MMMM y", locale="fr") + f" à {promised:%H:%M}"
    assert said in body.get_content(), (said, body.get_content())
    assert list(tmp_path.iterdir()) == []  # nothing created where the command ran


def test_agents_by_address_and_try_from_any_folder(demo: Demo, at_the_checkout: None,
                                                   tmp_path: Path) -> None:
    done = run_cli("agents", "set", "bruno.petit@example.com", "away", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "bruno away\n"), done.stderr
    listed = dict(line.split() for line in run_cli("agents", "list",
                                                   cwd=tmp_path).stdout.splitlines())
    assert listed["bruno"] == "away"
    assert run_cli("agents", "set", "bruno", "present", cwd=tmp_path).returncode == 0
    (tmp_path / "message.eml").write_bytes(
        b"From: client@example.net\r\nTo: sav@example.com\r\nSubject: Ma commande\r\n"
        b"Message-ID: <try-1@example.net>\r\n\r\nBonjour.\r\n")
    tried = run_cli("try", "message.eml", cwd=tmp_path)
    assert tried.returncode == 0, tried.stderr
    assert "direction inbound (for service mailbox sav@example.com)" in tried.stdout


def test_cases_list_into_a_closed_pipe_ends_quietly(demo: Demo) -> None:
    """``mailflow cases list | head``: no traceback, no BrokenPipe line, status 141."""
    for n in range(3):
        swaks(demo, f"client{n}@example.net", "sav@example.com")
    demo.settle()
    script = Path(sys.executable).with_name("mailflow")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line
    try:
        done = subprocess.run([str(script), "cases", "list", "--state-dir",
                               str(demo.checkout / "var"), "--rules",
                               str(demo.checkout / "rules")], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60, check=False)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (cli.BROKEN_PIPE, "")
    listed = subprocess.run([str(script), "cases", "list", "--state-dir",
                             str(demo.checkout / "var")], capture_output=True, text=True,
                            timeout=60, check=True)
    assert len(listed.stdout.splitlines()) >= 3  # there was something to write


@pytest.mark.parametrize("chain,section", [
    ("headers, fixture_verdict", {"verdict": "reject"}),
    ("headers, fixture_verdict", {"verdict": "tempfail", "reply": "451 4.7.1 Later please"}),
    ("headers, fixture_explode", None),
])
def test_try_says_the_reply_the_daemon_gives(daemon_factory: Any, tmp_path: Path, chain: str,
                                             section: dict[str, str] | None) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    (rules / "chain.yaml").write_text(f"chain: [{chain}]\n", encoding="utf-8")
    if section is not None:
        (rules / "verdict.yaml").write_text(
            "fixture_verdict:\n" + "".join(f"  {k}: {v!r}\n" for k, v in section.items()),
            encoding="utf-8")
    plugins = [str(FIXTURES / "verdict_plugin"), str(FIXTURES / "plugin_dir")]
    daemon = daemon_factory(config={"plugin_dirs": plugins}, rules=rules)
    message = (b"From: claire@client.test\r\nTo: sav@example.com\r\nSubject: Commande\r\n"
               b"Message-ID: <parity-1@client.test>\r\n\r\nBonjour.\r\n")
    code, text = daemon.send(message, mail_from="claire@client.test")
    (tmp_path / "m.eml").write_bytes(message)
    tried = run_cli("try", "m.eml", "--config", str(daemon.config_path), cwd=tmp_path)
    assert tried.returncode == 0, tried.stderr
    (outcome,) = [line for line in tried.stdout.splitlines() if line.startswith("outcome")]
    assert f'would get "{code} {text.decode()}"' in outcome
    assert outcome.endswith("; nothing delivered")


def test_make_run_serves_its_web_pages_on_loopback_and_says_where(demo: Demo) -> None:
    """`make run` gives serve `--metrics` on loopback; the ready line names the pages."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    run_metrics = re.search(r"^RUN_METRICS \?= (\S+)$", makefile, re.MULTILINE)
    assert run_metrics and run_metrics.group(1).startswith("127.0.0.1:")
    assert "serve --metrics $(RUN_METRICS)" in makefile
    web = f"http://127.0.0.1:{demo.web}"
    log = demo.log_path.read_text(encoding="utf-8")
    assert (f"metrics on {web}/metrics, health {web}/healthz, report {web}/report") in log
    for path, expected in (("/metrics", "mailflow_"), ("/healthz", "ok"),
                           ("/report", "<html")):
        with urllib.request.urlopen(web + path, timeout=10) as reply:
            assert reply.status == 200
            assert expected in reply.read().decode("utf-8", "replace").lower(), path
    readme = README.read_text(encoding="utf-8")
    assert f"http://{run_metrics.group(1)}/report" in readme
