"""A real, private Postfix in front of the daemon, for one test module.

It runs the very lines of deploy/postfix/ (main.cf.snippet, master.cf.snippet,
mailflow_header_checks), with the example config's ports replaced by free
loopback ones, so the tests prove what an administrator installs:

    test client ─▶ public smtpd ─▶ queue ─▶ "mailflow" transport ─▶ mailflow
    mailflow (next hop) ─▶ reinjection smtpd ─▶ queue ─▶ relayhost = the test's sink

Config, queue and maillog live under the folder given (a pytest tmp dir);
only ``data_directory`` (the master's lock file) goes to a temporary folder of
its own, removed at :meth:`PostfixInstance.stop`: the master opens it as the
``postfix`` user, who cannot traverse pytest's 0700 folders. Nothing in
/etc/postfix or /var/spool/postfix is read or changed, and /etc/postfix/main.cf
need not even exist (a "No configuration" install). It needs root (Postfix
starts only as root) and the ``postfix`` user and ``postdrop`` group the
Debian package creates: :func:`unavailable` says why not (the test then fails).

Running as root also spares the ``alternate_config_directories`` dance: the
set-gid ``postqueue`` checks a non-default ``-c`` directory against the
default main.cf only for other users.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ruamel.yaml import YAML

from conftest import REPO, free_port, wait_for_port
from mailflow.config import load_settings

DEPLOY = REPO / "deploy" / "postfix"
EXAMPLE_CONFIG = REPO / "deploy" / "mailflow.yaml"
SBIN = Path("/usr/sbin")
#: the hostname this Postfix greets with: never the sink's or mailflow's, or its smtp
#: client would see "mail for ... loops back to myself"
HOSTNAME = "postfix.test"


def unavailable() -> str | None:
    """Why no private Postfix can run here, or None."""
    if not (SBIN / "postfix").exists():
        return "Postfix is not installed (make test installs the Debian package)"
    if os.geteuid() != 0:
        return "a private Postfix must be started as root"
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        return "the postfix user or the postdrop group is missing"
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


#: the services of a stock master.cf this instance needs, none chrooted (a chroot would
#: need copies of /etc files inside the queue folder)
BASE_MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:{public} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

#: what a real server's main.cf would hold anyway, pointed at the test's folder and
#: ports; the deploy snippet is appended to it
BASE_MAIN_CF = """\
compatibility_level = {compatibility}
queue_directory = {queue}
data_directory = {data}
maillog_file = {maillog}
maillog_file_prefixes = {root}
myhostname = {hostname}
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = {relay_domains}
# the company mail server: the test's sink, for every recipient
relayhost = [127.0.0.1]:{relay_port}
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtputf8_enable = yes
biff = no
# a deferred message is tried again within seconds, not minutes
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"""


def _local_domains() -> list[str]:
    """The shipped rules' local domains: Postfix relays exactly those from anyone."""
    data = YAML(typ="safe").load((REPO / "rules" / "domains.yaml").read_text(encoding="utf-8"))
    return [str(domain) for domain in data["local_domains"]]


class PostfixInstance:
    """``postfix -c ROOT/etc start``: a whole Postfix under ``root``, on free ports.

    ``relay_port``: where everything leaving Postfix goes (the sink).
    ``filter_port``: mailflow's, for ``content_filter``; may be set until :meth:`start`.
    """

    def __init__(self, root: Path, relay_port: int, filter_port: int | None = None) -> None:
        self.root = root
        self.config_dir = root / "etc"
        self.queue_dir = root / "spool"
        self.data_dir: Path | None = None  # made by start(), outside pytest's 0700 folders
        self.maillog = root / "maillog"
        self.relay_port = relay_port
        self.filter_port = filter_port
        self.public_port = free_port()
        self.reinject_port = free_port()
        #: with :meth:`enable_submission`: Postfix's submission smtpd, and mailflow's
        #: second listener it feeds
        self.submission_port: int | None = None
        self.mailflow_submission_port: int | None = None
        self._logins: dict[str, str] = {}
        self.running = False

    # -- configuration ------------------------------------------------------

    def _deploy_text(self, name: str) -> str:
        """A deploy/postfix file with the example config's ports and paths made ours."""
        settings = load_settings(EXAMPLE_CONFIG)
        host, port = settings.listen_address
        hop = settings.next_hop
        assert hop is not None and self.filter_port is not None
        text = (DEPLOY / name).read_text(encoding="utf-8")
        text = text.replace(f"[{host}]:{port}", f"[127.0.0.1]:{self.filter_port}")
        text = text.replace(f"{hop.host}:{hop.port}", f"127.0.0.1:{self.reinject_port}")
        return text.replace("/etc/postfix/", f"{self.config_dir}/")

    def enable_submission(self, mailflow_submission_port: int,
                          logins: dict[str, str]) -> None:
        """Part 3 of master.cf.snippet uncommented (before :meth:`start`): agents log in
        with SASL (Cyrus, a sasldb of ``logins``: address -> password) on a submission
        smtpd of its own, whose mail goes to mailflow's second listener. No TLS here: the
        snippet's ``smtpd_tls_security_level=encrypt`` is made ``none``, the one change."""
        if shutil.which("saslpasswd2") is None:
            raise RuntimeError("saslpasswd2 is missing (make test installs sasl2-bin)")
        self.submission_port = free_port()
        self.mailflow_submission_port = mailflow_submission_port
        self._logins = logins

    def _write_sasl(self) -> None:
        """smtpd.conf, and the sasldb where the ``postfix`` user (smtpd after it dropped
        privileges) can read it: the data directory's parent, not pytest's 0700 tmp."""
        assert self.data_dir is not None
        sasl_dir = self.data_dir.parent / "sasl"
        sasl_dir.mkdir(exist_ok=True)
        db = sasl_dir / "sasldb2"
        for login, password in self._logins.items():
            user, _, realm = login.partition("@")
            subprocess.run(["saslpasswd2", "-p", "-c", "-f", str(db), "-u", realm, user],
                           input=password, text=True, check=True, timeout=10)
        # Debian's Postfix reads $config_directory/sasl/smtpd.conf (its README.Debian),
        # before smtpd drops its privileges; the sasldb is opened after
        (self.config_dir / "sasl").mkdir(exist_ok=True)
        (self.config_dir / "sasl" / "smtpd.conf").write_text(
            f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\n"
            f"sasldb_path: {db}\n", encoding="utf-8")
        postfix = pwd.getpwnam("postfix")
        for path in (sasl_dir, db):
            os.chown(path, postfix.pw_uid, postfix.pw_gid)

    def _submission_master_cf(self) -> str:
        """The commented part 3 of the snippet, uncommented, on this instance's ports."""
        text = self._deploy_text("master.cf.snippet")
        lines = text.split("# 3.", 1)[1].splitlines()
        service = [line[1:] for line in lines if line.startswith("#submission")
                   or line.startswith("#mailflow-submission") or line.startswith("#    -o")]
        out = "\n".join(service) + "\n"
        out = out.replace("submission inet n       -       y",
                          f"127.0.0.1:{self.submission_port} inet n - n")
        out = out.replace("smtpd_tls_security_level=encrypt", "smtpd_tls_security_level=none")
        out = out.replace("[127.0.0.1]:10027", f"[127.0.0.1]:{self.mailflow_submission_port}")
        assert f"mailflow-submission:[127.0.0.1]:{self.mailflow_submission_port}" in out, out
        return out

    def write_config(self) -> None:
        """main.cf and master.cf: the base above, then the deploy snippets."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        assert self.data_dir is not None
        main_cf = BASE_MAIN_CF.format(
            queue=self.queue_dir, data=self.data_dir, maillog=self.maillog, root=self.root,
            compatibility="3.6" if version_info() >= (3, 6) else "2",
            hostname=HOSTNAME, relay_domains=" ".join(_local_domains()),
            relay_port=self.relay_port)
        main_cf += "\n" + self._deploy_text("main.cf.snippet")
        master_cf = (BASE_MASTER_CF.format(public=self.public_port) + "\n"
                     + self._deploy_text("master.cf.snippet"))
        if self.submission_port is not None:
            self._write_sasl()
            master_cf += "\n" + self._submission_master_cf()
        (self.config_dir / "main.cf").write_text(main_cf, encoding="utf-8")
        (self.config_dir / "master.cf").write_text(master_cf, encoding="utf-8")
        assert f"content_filter = mailflow:[127.0.0.1]:{self.filter_port}\n" in main_cf
        assert f"\n127.0.0.1:{self.reinject_port} inet " in master_cf
        shutil.copyfile(DEPLOY / "mailflow_header_checks",
                        self.config_dir / "mailflow_header_checks")

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

    def _master_running(self, daemons: str) -> bool:
        """``master -t`` fails while a master holds this instance's lock."""
        env = {**os.environ, "MAIL_CONFIG": str(self.config_dir)}
        done = subprocess.run([f"{daemons}/master", "-t"], env=env, capture_output=True,
                              timeout=10)
        return done.returncode != 0

    def start(self, timeout: float = 30) -> PostfixInstance:
        """Configure, start, and wait until both smtpd ports answer. A port another
        process took since :func:`free_port` is retried on fresh ones, twice (so read
        ``public_port`` and ``reinject_port`` after this)."""
        if self.data_dir is None:
            parent = Path(tempfile.mkdtemp(prefix="mailflow-postfix-"))
            parent.chmod(0o711)  # the postfix user passes through, post-install makes data/
            self.data_dir = parent / "data"
        self.queue_dir.mkdir(parents=True, exist_ok=True)  # post-install makes the rest
        for attempt in range(3):
            self.write_config()
            mark = len(self.log)
            done = self.run("postfix", "start", check=False, timeout=timeout)
            if done.returncode == 0:
                break
            if attempt == 2 or "Address already in use" not in self.log[mark:]:
                raise self._failed(done)
            self.public_port, self.reinject_port = free_port(), free_port()
        self.running = True
        try:
            for port in (self.public_port, self.reinject_port, self.submission_port):
                if port is not None:
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
            self.run("postfix", "reload")

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
    def log(self) -> str:
        try:
            return self.maillog.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, size: int = 4000) -> str:
        """The end of the maillog, with its path, for an assertion message."""
        return f"\n--- {self.maillog} (end) ---\n{self.log[-size:]}"
