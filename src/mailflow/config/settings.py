"""The daemon's own settings: one YAML file, validated into frozen models.

With no file at all, the embedded defaults run a demo: 127.0.0.1:2525,
SQLite and a Maildir under ``var/``, the shipped ``rules/``.

Every path comes out absolute, so each command of the CLI finds the same
store and rules from any folder: a relative path in the file is relative to
the file's folder, one on the command line to the current folder, and the
defaults without a file to the project checkout mailflow is installed from
in editable mode (what ``make run`` serves), else to the current folder.
"""

from __future__ import annotations

import functools
import importlib.metadata
import ipaddress
import json
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from urllib.request import url2pathname

from pydantic import BeforeValidator, Field, field_validator
from ruamel.yaml.comments import CommentedMap

from mailflow.config.loading import (
    ConfigError,
    Model,
    Problem,
    load_yaml,
    parse_host_port,
    position,
    validate,
)

DEFAULT_LISTEN = "127.0.0.1:2525"
DEFAULT_STATE_DIR = "./var"
DEFAULT_RULES_DIR = "./rules"


class NextHop(Model):
    """Where accepted mail goes: an SMTP server, or a Maildir for a demo."""

    kind: Literal["smtp", "maildir"]
    host: str = ""
    port: int = 25
    path: str = ""

    @classmethod
    def parse(cls, value: str) -> NextHop:
        if value.startswith("maildir:"):
            path = value.removeprefix("maildir:")
            if not path:
                raise ValueError("maildir: needs a folder, like maildir:./var/maildir")
            return cls(kind="maildir", path=path)
        parts = urlsplit(value)
        if parts.scheme != "smtp" or not parts.hostname:
            raise ValueError(f"'{value}' is not smtp://HOST:PORT or maildir:PATH")
        return cls(kind="smtp", host=parts.hostname, port=parts.port or 25)

    def __str__(self) -> str:
        if self.kind == "maildir":
            return f"maildir:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"smtp://{host}:{self.port}"


@functools.cache
def machine_name() -> str:
    """The machine's fully qualified name when the system knows one (``mx1.example.com``),
    else its host name: what our Message-IDs and ``Received:`` lines say by default."""
    fqdn = socket.getfqdn()
    if "." in fqdn and not fqdn.startswith("localhost"):
        return fqdn
    return socket.gethostname() or os.uname().nodename


#: what to do about a host name that is not a domain name (the log, and ``check``)
HOSTNAME_ADVICE = ("'{0}' is not a fully qualified domain name: acknowledgements would say"
                   " Message-ID <ack.…@{0}> and Received: by {0}; set smtp.hostname to the"
                   " machine's name in DNS (mailflow.example.com)")


def is_domain_name(name: str) -> bool:
    """A name other machines can resolve: dotted, not ``localhost`` nor an address."""
    try:
        ipaddress.ip_address(name.strip("[]"))
        return False
    except ValueError:
        return "." in name.strip(".") and not name.startswith("localhost")


class SmtpSettings(Model):
    """Limits of the listening side; defaults follow Postfix's."""

    #: the greeting's, the ``Received:`` lines' and our Message-IDs' name (the FQDN)
    hostname: str = Field(default_factory=machine_name)
    backlog: int = Field(1024, ge=1)
    max_message_size: int = Field(25 * 1024 * 1024, ge=1024)
    max_line_length: int = Field(64 * 1024, ge=1001)
    bare_newlines: Literal["normalize", "reject"] = "normalize"
    max_received_headers: int = Field(100, ge=1)
    idle_timeout: float = Field(300.0, gt=0)
    max_sessions: int = Field(1000, ge=1)
    max_sessions_per_client: int = Field(100, ge=1)
    #: messages in the works at once (per process); the others wait after DATA
    max_processing: int = Field(64, ge=1)
    max_recipients: int = Field(1000, ge=1)
    smtputf8: bool = True
    tls_cert: str | None = None
    tls_key: str | None = None
    require_tls: bool = False


class RelaySettings(Model):
    """The client side towards the next hop."""

    timeout: float = Field(60.0, gt=0)
    pool_size: int = Field(32, ge=1)
    max_messages_per_connection: int = Field(1000, ge=1)
    starttls: Literal["auto", "never", "require"] = "auto"


class OutboxSettings(Model):
    """Retries of the mail mailflow writes itself."""

    poll_interval: float = Field(1.0, gt=0)
    batch_size: int = Field(50, ge=1)
    backoff_initial: float = Field(30.0, gt=0)
    backoff_max: float = Field(3600.0, gt=0)
    max_attempts: int = Field(30, ge=1)


class SchedulerSettings(Model):
    """Firing of due timers (reminders, escalations, deadlines) and their retries."""

    poll_interval: float = Field(1.0, gt=0)
    batch_size: int = Field(50, ge=1)
    backoff_initial: float = Field(30.0, gt=0)
    backoff_max: float = Field(3600.0, gt=0)
    max_attempts: int = Field(10, ge=1)


def _plain_days(value: Any) -> float | None:
    """``retention: 180d`` (plain time only: a purge has no business hours) → seconds."""
    if value is None:
        return None
    from mailflow.durations import parse_duration

    duration = parse_duration(str(value))
    if duration.is_business:
        raise ValueError(f"'{value}': retention is plain time (180d), not business time")
    return duration.seconds


class StatisticsSettings(Model):
    """What the statistics keep, and who may read the report page."""

    #: per-agent figures (metrics, report); off where employee monitoring is not allowed
    per_agent: bool = True
    #: purge message records and closed cases older than this (seconds; ``180d`` in the
    #: file); the aggregated statistics stay. None: keep everything
    retention: Annotated[float | None, BeforeValidator(_plain_days)] = None
    #: required by /report when the ``metrics`` listener is bound beyond loopback
    report_token: str | None = Field(None, min_length=16)


class Settings(Model):
    """The daemon's settings; rules live in their own folder."""

    listen: str = DEFAULT_LISTEN
    #: optional second listener, fed by Postfix's submission service: agents' mail
    submission_listen: str | None = None
    next_hop: NextHop | None = None
    state_dir: str = DEFAULT_STATE_DIR
    store: str | None = None
    #: ``live``: mailflow acts; ``shadow``: the chain runs on live traffic, the mail is
    #: relayed as received and what mailflow would have done goes to ``shadow_store``
    mode: Literal["live", "shadow"] = "live"
    #: shadow mode's store (default: mailflow-shadow.sqlite3 beside the live one)
    shadow_store: str | None = None
    #: ``auto``: serve migrates the store at start; ``manual``: it refuses an older schema
    migrate: Literal["auto", "manual"] = "auto"
    #: this daemon's name among those sharing one database (the same across restarts)
    node_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=200,
                         pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    rules: str = DEFAULT_RULES_DIR
    metrics: str | None = None
    workers: int = Field(1, ge=1, le=64)
    trusted_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    chain_timeout: float = Field(60.0, gt=0)
    plugins: tuple[str, ...] = ()
    plugin_dirs: tuple[str, ...] = ()
    smtp: SmtpSettings = SmtpSettings()
    relay: RelaySettings = RelaySettings()
    outbox: OutboxSettings = OutboxSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    statistics: StatisticsSettings = StatisticsSettings()
    #: tests only: a file holding the Unix time the daemon runs on (needs --allow-test-clock)
    test_clock: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    source: str = "<defaults>"

    @field_validator("smtp", "relay", "outbox", "scheduler", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        # ``smtp:`` with every line below it commented out means "the defaults"
        return {} if value is None else value

    @field_validator("next_hop", mode="before")
    @classmethod
    def _next_hop(cls, value: Any) -> Any:
        return NextHop.parse(value) if isinstance(value, str) else value

    @field_validator("store", "shadow_store")
    @classmethod
    def _store(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite:///", "postgresql://",
                                                       "postgres://")):
            raise ValueError(f"'{value}' is not a supported store: use sqlite:///PATH or"
                             " postgresql://USER@HOST:PORT/DATABASE")
        return value

    @field_validator("listen", "submission_listen", "metrics")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            parse_host_port(value)
        return value

    @field_validator("trusted_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"'{net}' is not a network like 192.0.2.0/24") from None
        return value

    # Derived values, computed on demand: models stay plain data.

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_host_port(self.listen)

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        return parse_host_port(self.metrics) if self.metrics else None

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite:///{(self.state_path / 'mailflow.sqlite3').resolve()}"

    @property
    def shadow_store_url(self) -> str:
        """Where shadow mode records what mailflow would have done."""
        return self.shadow_store or (
            f"sqlite:///{(self.state_path / 'mailflow-shadow.sqlite3').resolve()}")

    @property
    def effective_next_hop(self) -> NextHop:
        return self.next_hop or NextHop(kind="maildir", path=str(self.state_path / "maildir"))

    @property
    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.trusted_networks)

    def check_deadlines(self) -> list[str]:
        """aiosmtpd does not reset its idle timer during DATA: deadlines must fit."""
        budget = self.chain_timeout + self.relay.timeout
        if budget >= self.smtp.idle_timeout * 0.8:
            return [
                f"chain_timeout ({self.chain_timeout:g}s) + relay.timeout "
                f"({self.relay.timeout:g}s) must end well inside smtp.idle_timeout "
                f"({self.smtp.idle_timeout:g}s): keep them under 80% of it"
            ]
        return []


#: Command-line options every command accepts, mapped onto Settings fields.
OVERRIDES = ("listen", "next_hop", "state_dir", "store", "rules", "metrics", "workers")


def project_checkout() -> Path | None:
    """The folder mailflow is installed from in editable mode (``pip install -e``, as
    ``make run`` does; PEP 610's ``direct_url.json`` says so), if it has a rules folder."""
    try:
        text = importlib.metadata.distribution("mailflow").read_text("direct_url.json")
        info = json.loads(text or "{}")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None
    url = info.get("url", "") if isinstance(info, dict) else ""
    if not (isinstance(info.get("dir_info"), dict) and info["dir_info"].get("editable")
            and isinstance(url, str) and url.startswith("file://")):
        return None
    folder = Path(url2pathname(urlsplit(url).path))
    return folder if (folder / DEFAULT_RULES_DIR).is_dir() else None


def defaults_home() -> Path:
    """Where the defaults' ``var/`` and ``rules/`` are, without a configuration file."""
    return project_checkout() or Path.cwd()


def _anchored(value: str, base: Path) -> str:
    """``value`` made absolute against ``base`` (left alone when already absolute)."""
    return os.path.normpath(os.path.join(base, value)) if value else value


def _anchored_store(url: str | None, base: Path) -> str | None:
    if url is None or not url.startswith("sqlite:///") or url.startswith("sqlite:////"):
        return url
    path, mark, query = url.removeprefix("sqlite:///").partition("?")
    return f"sqlite:///{_anchored(path, base)}{mark}{query}" if path else url


def _anchor_paths(settings: Settings, file_base: Path, overridden: set[str]) -> Settings:
    """Every relative path made absolute: against the current folder for the command
    line's, against ``file_base`` (the file's folder, or the defaults' home) otherwise."""

    def base(key: str) -> Path:
        return Path.cwd() if key in overridden else file_base

    hop = settings.next_hop
    if hop is not None and hop.kind == "maildir":
        hop = hop.model_copy(update={"path": _anchored(hop.path, base("next_hop"))})
    smtp = settings.smtp.model_copy(update={
        key: _anchored(value, file_base) for key in ("tls_cert", "tls_key")
        if isinstance(value := getattr(settings.smtp, key), str)})
    return settings.model_copy(update={
        "state_dir": _anchored(settings.state_dir, base("state_dir")),
        "rules": _anchored(settings.rules, base("rules")),
        "store": _anchored_store(settings.store, base("store")),
        "shadow_store": _anchored_store(settings.shadow_store, file_base),
        "plugin_dirs": tuple(_anchored(d, file_base) for d in settings.plugin_dirs),
        "test_clock": _anchored(settings.test_clock, file_base) if settings.test_clock else None,
        "next_hop": hop, "smtp": smtp,
    })


def load_settings(path: str | os.PathLike[str] | None,
                  overrides: Mapping[str, Any] | None = None) -> Settings:
    """Read the config file (if any), apply command-line overrides, validate; every
    path in the result is absolute (see the module's docstring)."""
    data: dict[str, Any] = {}
    tree: Any = None
    source = "<defaults>"
    if path is not None:
        path = os.path.abspath(path)  # named in full in every message
        source = path
        tree = load_yaml(Path(path))
        if tree is None:
            tree = CommentedMap()
        if not isinstance(tree, Mapping):
            line, col = position(tree, ())
            raise ConfigError([Problem(source, line, col,
                                       "the configuration must be a mapping of settings")])
        data = dict(tree)
    if "source" in data:
        line, col = position(tree, ("source",))
        raise ConfigError([Problem(source, line, col, "unknown setting 'source'")])
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    data.update(given)
    data["source"] = source
    settings = validate(Settings, data, source, tree)
    problems = settings.check_deadlines()
    if problems:
        line, col = _first_position(tree, (("chain_timeout",), ("relay", "timeout"),
                                           ("smtp", "idle_timeout")))
        raise ConfigError([Problem(source, line, col, p) for p in problems])
    file_base = Path(path).parent if path is not None else defaults_home()
    return _anchor_paths(settings, file_base, set(given))


def _first_position(tree: Any, paths: Sequence[Sequence[str]]) -> tuple[int, int]:
    """Where the first of ``paths`` is written in the file; (0, 0) when none is."""
    for path in paths:
        node = tree
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                break
            node = node[key]
        else:
            return position(tree, path)
    return 0, 0
