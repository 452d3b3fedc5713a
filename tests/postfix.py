"""A real, private Postfix in front of the daemon, configured with the guide's files.

It runs deploy/postfix/ as an administrator installs it on a fresh Debian (main.cf,
master.cf, transport, mailflow_header_checks, sasl/smtpd.conf: whole files, Debian's
chrooted services included), with only the changes :meth:`PostfixInstance.changes` and
:meth:`PostfixInstance.additions` list: ports, the private instance's paths, the
company server's address, where "the internet" is, and quicker retries. Everything
else is the shipped text, so the tests prove what an administrator installs:

    client ─▶ smtpd "smtp" (port 25) ─▶ queue ─▶ "mailflow" transport ─▶ mailflow
    agent (STARTTLS, AUTH) ─▶ smtpd "submission" (port 587, chrooted, sasldb)
          ─▶ queue ─▶ "mailflow-submission" transport ─▶ mailflow's submission listener
    mailflow (next hop) ─▶ reinjection smtpd ─▶ queue
          ─▶ the company's domains: transport ─▶ relay:[company server]  (a sink)
          ─▶ anywhere else: the internet                                (another sink)

Config, queue (the chroot) and maillog live under the folder given (a pytest tmp
dir); only ``data_directory`` (the master's lock file) goes to a temporary folder of
its own, removed at :meth:`PostfixInstance.stop`: the master opens it as the
``postfix`` user, who cannot traverse pytest's 0700 folders. Nothing in /etc/postfix
or /var/spool/postfix is read or changed, and /etc/postfix/main.cf need not even exist
(a "No configuration" install). It needs root (Postfix starts only as root), the
``postfix`` user and ``postdrop`` group the Debian package creates, and ``postfix``
in the ``sasl`` group, as the guide says: :func:`unavailable` says what is missing
(the test then fails; ``make test`` installs it all).

Running as root also spares the ``alternate_config_directories`` dance: the
set-gid ``postqueue`` checks a non-default ``-c`` directory against the
default main.cf only for other users.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import smtplib
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from types import TracebackType
from typing import Any

from conftest import REPO, Daemon, Received, free_port, is_ack, parse_email, wait_for_port
from mailflow.config import load_settings
from mailflow.config.loading import parse_host_port
from mailflow.testing.nexthop import Sink

DEPLOY = REPO / "deploy" / "postfix"
EXAMPLE_CONFIG = REPO / "deploy" / "mailflow.yaml"
SBIN = Path("/usr/sbin")
#: the guide's files, as they go under /etc/postfix
FILES = ("main.cf", "master.cf", "transport", "mailflow_header_checks", "sasl/smtpd.conf")
#: where the test's own lines begin in the installed main.cf
ADDITIONS_MARK = "\n# --- the test's private instance ---\n"
#: Debian's own master.cf, as the package installs it in /etc/postfix
DEBIAN_MASTER_CF = Path("/usr/share/postfix/master.cf.dist")
#: main.cf's name for this machine: the Received lines Postfix writes say it
HOSTNAME = "mx.example.com"
#: the company's domain (main.cf's relay_domains), and the realm of agents' logins
#: (``saslpasswd2 -u``)
REALM = "example.com"
WAIT = 20.0  # seconds a message may take through Postfix, mailflow and Postfix again


def unavailable() -> str | None:
    """Why no private Postfix can run here, or None."""
    if not (SBIN / "postfix").exists():
        return "Postfix is not installed (make test installs the Debian package)"
    if os.geteuid() != 0:
        return "a private Postfix must be started as root"
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
        sasl = grp.getgrnam("sasl")
    except KeyError:
        return "the postfix user, or the postdrop or sasl group, is missing"
    if "postfix" not in sasl.gr_mem:
        return ("the postfix user is not in the sasl group, as deploy/postfix/README.md"
                " asks (adduser postfix sasl; make test does it)")
    for tool in ("saslpasswd2", "openssl"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (make test installs sasl2-bin and openssl)"
    if version_info() < (3, 4):
        return f"Postfix {version()} is older than 3.4 (maillog_file, postqueue -j)"
    return None


def version() -> str:
    """The installed Postfix's ``mail_version`` (3.7.11 on Debian 12)."""
    done = subprocess.run([str(SBIN / "postconf"), "-dh", "mail_version"], check=True,
                          capture_output=True, text=True, timeout=10)
    return done.stdout.strip()


def version_info() -> tuple[int, ...]:
    """(major, minor): main.cf settings and tools differ between Postfix releases."""
    return tuple(int(part) for part in version().split(".")[:2] if part.isdigit())


@dataclass(frozen=True)
class Queued:
    """One message in Postfix's queue, from ``postqueue -j`` (Postfix 3.1 and later)."""

    queue_id: str
    queue_name: str  # incoming, active, deferred, hold, maildrop
    sender: str
    recipients: tuple[str, ...]
    reasons: tuple[str, ...]  # delay_reason per recipient, once it was tried


def write_settled(path: Path, text: str) -> None:
    """Write a Postfix file dated a minute ago: Postfix waits, up to two seconds, for a
    configuration file written within the last second to settle (it might be half
    written), and every start and reload would pay it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    past = time.time() - 60
    os.utime(path, (past, past))


@dataclass(frozen=True)
class Change:
    """One difference between a shipped file and the private instance's copy: the one
    occurrence of ``shipped`` in ``file`` becomes ``test``."""

    file: str
    shipped: str
    test: str
    why: str


class PostfixInstance:
    """``postfix -c ROOT/etc start``: the guide's whole Postfix under ``root``, on free
    loopback ports.

    ``company_port``: the company mail server (the transport file's destination).
    ``internet_port``: where mail for any other domain goes (there is no internet here).
    ``filter_port``: mailflow's listener (``content_filter``); may be set until
    :meth:`start`. ``submission_filter_port``: mailflow's submission listener (the
    ``mailflow-submission`` transport); by default a port nothing listens on.
    ``logins``: agents' addresses and passwords for the sasldb.
    """

    def __init__(self, root: Path, company_port: int, internet_port: int,
                 filter_port: int | None = None, submission_filter_port: int | None = None,
                 logins: dict[str, str] | None = None) -> None:
        self.root = root
        self.config_dir = root / "etc"
        self.queue_dir = root / "spool"
        self.data_dir: Path | None = None  # made by start(), outside pytest's 0700 folders
        self.maillog = root / "maillog"
        self.tls_dir = root / "tls"
        self.company_port = company_port
        self.internet_port = internet_port
        self.filter_port = filter_port
        self.submission_filter_port = submission_filter_port or free_port()
        self.public_port = free_port()
        self.submission_port = free_port()
        self.reinject_port = free_port()
        self.logins = logins or {}
        #: main.cf's alternative: everything to the company server (:meth:`use_relayhost`)
        self.relayhost = False
        self.started_at = 0  # where the maillog of the last successful start begins
        self.running = False

    # -- configuration ------------------------------------------------------

    def changes(self) -> list[Change]:
        """Every change made to the shipped files, and why: the only ones."""
        settings = load_settings(EXAMPLE_CONFIG)
        host, port = settings.listen_address
        hop = settings.next_hop
        assert hop is not None and settings.submission_listen is not None
        sub_host, sub_port = parse_host_port(settings.submission_listen)
        assert self.filter_port is not None
        etc = f"{self.config_dir}/"
        return [
            # ports: free loopback ones instead of 25, 587 and mailflow.yaml's
            Change("master.cf", "\nsmtp      inet  n       -       y       -       -       smtpd\n",
                   f"\n127.0.0.1:{self.public_port} inet  n       -       y       -       -"
                   "       smtpd\n", "port 25: a free loopback port"),
            Change("master.cf", "\nsubmission inet n       -       y       -       -       smtpd\n",
                   f"\n127.0.0.1:{self.submission_port} inet n       -       y       -       -"
                   "       smtpd\n", "port 587: a free loopback port"),
            Change("master.cf", f"\n{hop.host}:{hop.port} inet ",
                   f"\n127.0.0.1:{self.reinject_port} inet ",
                   "the reinjection smtpd (mailflow.yaml's next_hop): a free port"),
            Change("master.cf", f"content_filter=mailflow-submission:[{sub_host}]:{sub_port}\n",
                   f"content_filter=mailflow-submission:[127.0.0.1]:"
                   f"{self.submission_filter_port}\n",
                   "mailflow's submission listener (submission_listen): the test daemon's"),
            Change("main.cf", f"content_filter = mailflow:[{host}]:{port}\n",
                   f"content_filter = mailflow:[127.0.0.1]:{self.filter_port}\n",
                   "mailflow's listener (listen): the test daemon's"),
            # the company server's address
            Change("transport", "relay:[mail.example.com]:25",
                   f"relay:[127.0.0.1]:{self.company_port}", "the company mail server: a sink"),
            *([Change("main.cf", "#relayhost = [mail.example.com]:25",
                      f"relayhost = [127.0.0.1]:{self.company_port}",
                      "the alternative, uncommented as the guide says; the company server")]
              if self.relayhost else []),
            # the private instance's paths
            Change("main.cf", "regexp:/etc/postfix/mailflow_header_checks",
                   f"regexp:{etc}mailflow_header_checks", "this instance's config directory"),
            Change("main.cf", "hash:/etc/postfix/transport", f"hash:{etc}transport",
                   "(the same)"),
            Change("main.cf", "/etc/ssl/certs/ssl-cert-snakeoil.pem",
                   str(self.tls_dir / "cert.pem"), "a certificate made for the test"),
            Change("main.cf", "/etc/ssl/private/ssl-cert-snakeoil.key",
                   str(self.tls_dir / "key.pem"), "its key"),
            Change("main.cf", "maillog_file = /var/log/postfix.log",
                   f"maillog_file = {self.maillog}", "this instance's log"),
        ]

    def additions(self) -> list[tuple[str, str]]:
        """main.cf lines appended to the shipped file (the last value of a parameter
        wins): (line, why). The shipped main.cf leaves these at Postfix's defaults."""
        assert self.data_dir is not None
        return [
            (f"queue_directory = {self.queue_dir}",
             "this instance's queue, and so its chroot (Debian: /var/spool/postfix)"),
            (f"data_directory = {self.data_dir}", "this instance's (Debian: /var/lib/postfix)"),
            (f"maillog_file_prefixes = {self.root}", "its log is not under /var"),
            *([] if self.relayhost else [
                (f"default_transport = smtp:[127.0.0.1]:{self.internet_port}",
                 "the internet (DNS, MX) is a sink: there is no other network here")]),
            ("queue_run_delay = 1s", "deferred mail is retried within seconds"),
            ("minimal_backoff_time = 1s", "(the same)"),
            ("maximal_backoff_time = 2s", "(the same)"),
        ]

    def installed(self, name: str) -> str:
        """A guide file with :meth:`changes` applied (and, for main.cf, the additions)."""
        text = (DEPLOY / name).read_text(encoding="utf-8")
        for change in self.changes():
            if change.file == name:
                found = text.count(change.shipped)
                assert found == 1, (
                    f"{name}: {change.shipped!r} found {found} times, not once:"
                    " the shipped file changed, update PostfixInstance.changes()")
                text = text.replace(change.shipped, change.test)
        if name == "main.cf":
            text += ADDITIONS_MARK + "".join(f"{line}\n" for line, _ in self.additions())
        return text

    def write_config(self) -> None:
        """The guide's files into this instance's config directory, and their tables."""
        for name in FILES:
            write_settled(self.config_dir / name, self.installed(name))
        self.run("postmap", f"hash:{self.config_dir / 'transport'}")

    def _make_certificate(self) -> None:
        """What replaces Debian's snakeoil certificate: self-signed, for mx.example.com
        and 127.0.0.1 (the address the test's clients connect to)."""
        self.tls_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-keyout", str(self.tls_dir / "key.pem"), "-out", str(self.tls_dir / "cert.pem"),
             "-subj", f"/CN={HOSTNAME}",
             "-addext", f"subjectAltName=DNS:{HOSTNAME},IP:127.0.0.1"],
            check=True, capture_output=True, timeout=30)

    def _make_sasldb(self) -> None:
        """The guide's steps for agents' logins: ``saslpasswd2 -c -u example.com LOGIN``
        for each (into /etc/sasldb2 there, this instance's ``sasldb2`` here: the
        machine's own is not the test's to change), then ``install -m 0640 -o root -g
        sasl`` it into the chroot, ``etc/sasldb2`` of the queue directory, where the
        chrooted submission smtpd reads it (``postfix`` is in ``sasl``: :func:`unavailable`).
        """
        source = self.root / "sasldb2"
        for login, password in self.logins.items():
            user, _, realm = login.partition("@")
            assert realm == REALM, login
            subprocess.run(["saslpasswd2", "-p", "-f", str(source), "-c", "-u", realm, user],
                           input=password, text=True, check=True, timeout=10)
        if self.logins:
            (self.queue_dir / "etc").mkdir(parents=True, exist_ok=True)
            subprocess.run(["install", "-m", "0640", "-o", "root", "-g", "sasl", str(source),
                            str(self.queue_dir / "etc" / "sasldb2")], check=True, timeout=10)

    @property
    def tls_context(self) -> ssl.SSLContext:
        """What an agent's mail client trusts: this instance's certificate."""
        return ssl.create_default_context(cafile=str(self.tls_dir / "cert.pem"))

    # -- commands -------------------------------------------------------------

    def run(self, command: str, *args: str, check: bool = True,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """``/usr/sbin/COMMAND -c CONFIG_DIR ARGS...``; output in the error if it fails."""
        done = subprocess.run([str(SBIN / command), "-c", str(self.config_dir), *args],
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise self._failed(done)
        return done

    def _failed(self, done: subprocess.CompletedProcess[str]) -> RuntimeError:
        return RuntimeError(f"{' '.join(done.args)} exited with {done.returncode}:\n"
                            f"{done.stdout}{done.stderr}{self.log_tail()}")

    def check(self, timeout: float = 10) -> list[str]:
        """``postfix check``, the guide's step before starting: what it printed and the
        warnings it logged (postfix-script logs them to the maillog, through postlogd
        while Postfix runs: a marker logged after them says when they are all in)."""
        mark = len(self.log)
        done = self.run("postfix", "check")
        marker = f"check done {time.monotonic_ns()}"
        self.run("postlog", "-t", "mailflow-test", marker)
        deadline = time.monotonic() + timeout
        while marker not in self.log[mark:]:
            if time.monotonic() > deadline:
                raise AssertionError(f"the marker never reached the maillog{self.log_tail()}")
            time.sleep(0.05)
        logged = self.log[mark:].partition(marker)[0].splitlines()
        return (done.stdout + done.stderr).splitlines() + [
            line for line in logged if "warning" in line or "fatal" in line]

    def _master_running(self, daemons: str) -> bool:
        """``master -t`` fails while a master holds this instance's lock."""
        env = {**os.environ, "MAIL_CONFIG": str(self.config_dir)}
        done = subprocess.run([f"{daemons}/master", "-t"], env=env, capture_output=True,
                              timeout=10)
        return done.returncode != 0

    def start(self, timeout: float = 30) -> PostfixInstance:
        """Configure, start, and wait until the smtpd ports answer. A port another
        process took since :func:`free_port` is retried on fresh ones, twice (so read
        the ports after this)."""
        if self.data_dir is None:
            parent = Path(tempfile.mkdtemp(prefix="mailflow-postfix-"))
            parent.chmod(0o711)  # the postfix user passes through, post-install makes data/
            self.data_dir = parent / "data"
            self._make_certificate()
            self._make_sasldb()
        self.queue_dir.mkdir(parents=True, exist_ok=True)  # post-install makes the rest
        for attempt in range(3):
            self.write_config()
            mark = len(self.log)
            done = self.run("postfix", "start", check=False, timeout=timeout)
            if done.returncode == 0:
                self.started_at = mark  # the log of a start that took its ports over
                break
            if attempt == 2 or "Address already in use" not in self.log[mark:]:
                raise self._failed(done)
            self.public_port, self.submission_port, self.reinject_port = (
                free_port(), free_port(), free_port())
        self.running = True
        try:
            for port in (self.public_port, self.submission_port, self.reinject_port):
                wait_for_port(port, timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}{self.log_tail()}") from None
        return self

    def retarget(self, filter_port: int) -> None:
        """Point ``content_filter`` at mailflow's port again, if it moved (``postfix
        reload``). Only for new mail: each queued message keeps the filter it was
        queued with (``postsuper -r`` would requeue it with the new one)."""
        if filter_port != self.filter_port:
            self.filter_port = filter_port
            self.write_config()
            self.reload()

    def use_relayhost(self, on: bool) -> None:
        """main.cf's alternative on (or off again): ``relayhost`` uncommented, so that
        everything goes to the company server (``postfix reload``)."""
        self.relayhost = on
        self.write_config()
        self.reload()

    def reload(self, timeout: float = 10) -> None:
        """``postfix reload``, then wait for the queue manager it restarts: mail that
        arrives while the old one still runs may be picked up by both, and stay in the
        incoming queue ("skipped, still being delivered") until the next scan."""
        before = self._queue_managers()
        self.run("postfix", "reload")
        deadline = time.monotonic() + timeout
        while True:
            now = self._queue_managers()
            if len(now) == 1 and not now & before:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"qmgr not restarted after reload: {before} -> {now}"
                                     f"{self.log_tail()}")
            time.sleep(0.05)

    def _queue_managers(self) -> set[int]:
        """The pids of this instance's qmgr: the master's children of that name."""
        try:
            master = int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return set()
        found = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
                name = stat.read_text().partition("(")[2].rpartition(")")[0]
            except OSError:
                continue
            if int(fields[1]) == master and name == "qmgr":
                found.add(int(stat.parent.name))
        return found

    def stop(self, timeout: float = 15) -> None:
        """Stop the master and its children, waiting (bounded) for its lock to go."""
        if self.running:
            daemons = self.run("postconf", "-h", "daemon_directory").stdout.strip()
            self.run("postfix", "abort", check=False)  # SIGTERM, as "stop" without its sleeps
            deadline = time.monotonic() + timeout
            while self._master_running(daemons):
                if time.monotonic() > deadline:
                    self.run("postfix", "stop", check=False)  # ends with kill -9
                    break
                time.sleep(0.05)
            self.running = False
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)
            self.data_dir = None

    def __enter__(self) -> PostfixInstance:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- the queue ------------------------------------------------------------

    def queue(self) -> list[Queued]:
        """Every message still in Postfix's queue (``postqueue -j``)."""
        out = self.run("postqueue", "-j").stdout
        found = []
        for line in out.splitlines():
            item = json.loads(line)
            rcpts = item.get("recipients", [])
            found.append(Queued(item["queue_id"], item["queue_name"], item["sender"],
                                tuple(r["address"] for r in rcpts),
                                tuple(r["delay_reason"] for r in rcpts
                                      if r.get("delay_reason"))))
        return found

    def _wait(self, what: str, found: Callable[[list[Queued]], bool],
              timeout: float) -> list[Queued]:
        deadline = time.monotonic() + timeout
        while True:
            queued = self.queue()
            if found(queued):
                return queued
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} within {timeout}s; Postfix's queue: {queued}"
                                     f"{self.log_tail()}")
            time.sleep(0.1)

    def wait_deferred(self, sender: str, timeout: float = 20) -> Queued:
        """The message from ``sender``, once it sits in the deferred queue (tried, failed)."""
        def deferred(queued: list[Queued]) -> list[Queued]:
            return [q for q in queued if q.sender == sender and q.queue_name == "deferred"]

        return deferred(self._wait(f"no deferred message from {sender}",
                                   lambda queued: bool(deferred(queued)), timeout))[0]

    def wait_empty(self, timeout: float = 20) -> None:
        """Until Postfix holds no message at all: everything delivered (or bounced)."""
        self._wait("the queue did not empty", lambda queued: not queued, timeout)

    def flush(self) -> None:
        """``postqueue -f``: try every queued message now, dead destinations included."""
        self.run("postqueue", "-f")

    # -- debugging ------------------------------------------------------------

    @property
    def started_log(self) -> str:
        """The maillog since the start that succeeded (a start retried on fresh ports
        leaves its "Address already in use" before)."""
        return self.log[self.started_at:]

    @property
    def log(self) -> str:
        try:
            return self.maillog.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, size: int = 4000) -> str:
        """The end of the maillog, with its path, for an assertion message."""
        return f"\n--- {self.maillog} (end) ---\n{self.log[-size:]}"


# ---------------------------------------------------------------------------
# the whole path: Postfix, mailflow, the company server and the internet
# ---------------------------------------------------------------------------


@dataclass
class Stack:
    """A private Postfix and a daemon wired as in production, with two sinks: the
    company mail server (mail for example.com) and the internet (any other domain)."""

    postfix: PostfixInstance
    daemon: Daemon
    company: Sink
    internet: Sink

    def client(self, port: int, source: str = "127.0.0.1") -> smtplib.SMTP:
        """An SMTP client of one of Postfix's smtpd ports, from ``source``."""
        return smtplib.SMTP("127.0.0.1", port, timeout=WAIT, source_address=(source, 0))

    def send(self, sender: str, data: bytes, *rcpts: str, source: str = "127.0.0.1") -> None:
        """One message into Postfix's port 25, as the internet (or the office) sends it."""
        with self.client(self.postfix.public_port, source) as smtp:
            smtp.ehlo("mx.customer.test")
            refused = smtp.sendmail(sender, list(rcpts), data)
            assert not refused, refused

    def submit(self, login: str, password: str, sender: str, data: bytes, *rcpts: str,
               source: str = "127.0.0.1") -> None:
        """One message through the submission port, as an agent's mail client sends it:
        STARTTLS (the certificate checked), then AUTH."""
        with self.client(self.postfix.submission_port, source) as smtp:
            smtp.ehlo("laptop.home.test")
            smtp.starttls(context=self.postfix.tls_context)
            smtp.ehlo("laptop.home.test")
            smtp.login(login, password)
            refused = smtp.sendmail(sender, list(rcpts), data)
            assert not refused, refused

    def misrouted(self) -> list[tuple[str, list[str]]]:
        """Mail at the wrong server: at the company's, for another domain (unless main.cf's
        relayhost sends everything there); at the internet, for the company's domain."""
        def local(rcpt: str) -> bool:
            return rcpt.lower().endswith(f"@{REALM}")

        wrong = [("internet", r.rcpt_tos) for r in self.internet.messages
                 if any(local(rcpt) for rcpt in r.rcpt_tos)]
        if not self.postfix.relayhost:
            wrong += [("company", r.rcpt_tos) for r in self.company.messages
                      if not all(local(rcpt) for rcpt in r.rcpt_tos)]
        return wrong

    def wait_for(self, what: str, at: Sink, match: Callable[[Received, EmailMessage], bool],
                 timeout: float = WAIT) -> tuple[Received, EmailMessage]:
        """The one message at sink ``at`` that ``match`` picks, polled for up to
        ``timeout``; mail at the wrong server (:meth:`misrouted`) fails at once."""
        deadline = time.monotonic() + timeout
        while True:
            found = [(r, m) for r in at.messages for m in [parse_email(r.data)]
                     if match(r, m)]
            assert not self.misrouted(), f"delivered to the wrong server: {self.misrouted()}"
            if found:
                assert len(found) == 1, f"{what}: {len(found)} copies at the sink"
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} at the sink within {timeout}s"
                                     f"{self.postfix.log_tail()}\n--- daemon log (end) ---\n"
                                     f"{self.daemon.log[-3000:]}")
            time.sleep(0.05)

    def relayed(self, message_id: str, at: Sink | None = None) -> tuple[Received, EmailMessage]:
        """A message (not an ack) as the company mail server (or ``at``) got it."""
        return self.wait_for(f"relayed copy of {message_id}", at or self.company,
                             lambda r, m: m["Message-ID"] == message_id and not is_ack(r, m))

    def ack_of(self, message_id: str, customer: str) -> tuple[Received, EmailMessage]:
        """mailflow's acknowledgement of ``message_id``, sent out to ``customer``."""
        return self.wait_for(f"acknowledgement of {message_id}", self.internet,
                             lambda r, m: is_ack(r, m) and r.rcpt_tos == [customer]
                             and m["In-Reply-To"] == message_id)

    def start_mailflow(self) -> None:
        """mailflow (again: same state), with Postfix's content_filter on its port."""
        self.daemon.start()
        self.postfix.retarget(self.daemon.port)  # only if the daemon had to take another port


@contextmanager
def running_stack(root: Path, rules: Path, config: dict[str, Any] | None = None,
                  logins: dict[str, str] | None = None) -> Iterator[Stack]:
    """Two sinks, the guide's Postfix and a daemon with ``config`` (its submission
    listener on a port of its own), all started, all stopped at the end."""
    problem = unavailable()
    if problem is not None:  # never a skip: make test installs what this needs
        raise RuntimeError(f"no private Postfix can run here: {problem}")
    company, internet = Sink(), Sink()
    submission = free_port()
    # each needs the other's port: the daemon's next hop is set once Postfix has its own
    daemon = Daemon(root / "mailflow", "smtp://127.0.0.1:1",
                    {"submission_listen": f"127.0.0.1:{submission}", **(config or {})}, rules)
    postfix = PostfixInstance(root / "postfix", company.port, internet.port,
                              filter_port=daemon.port, submission_filter_port=submission,
                              logins=logins)
    try:
        company.start()
        internet.start()
        postfix.start()
        daemon.config["next_hop"] = f"smtp://127.0.0.1:{postfix.reinject_port}"
        stack = Stack(postfix, daemon, company, internet)
        stack.start_mailflow()
        yield stack
    finally:
        daemon.stop()
        postfix.stop()
        company.stop()
        internet.stop()


def question(sender: str, subject: str, body: str, to: str = "sav@example.com",
             headers: str = "") -> tuple[str, bytes]:
    """(Message-ID, bytes) of a customer's plain question to a service mailbox."""
    message_id = make_msgid(domain="customer.test")
    data = (f"From: Client <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: Mon, 23 Nov 2026 09:30:00 +0100\r\nMessage-ID: {message_id}\r\n{headers}"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n").encode()
    return message_id, data


def received_by(msg: EmailMessage) -> list[str]:
    """The hosts of the Received headers, newest first: the path the message took."""
    hosts = []
    for value in msg.get_all("Received") or []:
        by = re.search(r"\sby\s+(\S+)", str(value))  # Postfix folds before "by"
        hosts.append(by.group(1) if by else "?")
    return hosts
