"""Configuration: one YAML file for the daemon, validated into frozen models.

Every error points at ``file:line:column`` with a sentence an operator can act
on, because a daemon that refuses to start at 3 a.m. must say exactly where.
With no file at all, the embedded defaults run a demo: 127.0.0.1:2525,
SQLite and a Maildir under ``./var/``, the shipped ``rules/``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

DEFAULT_LISTEN = "127.0.0.1:2525"
DEFAULT_STATE_DIR = "./var"
DEFAULT_RULES_DIR = "./rules"


@dataclass(frozen=True)
class Problem:
    """One configuration mistake, located in its file."""

    file: str
    line: int  # 1-based; 0 when unknown
    column: int  # 1-based; 0 when unknown
    message: str

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}: {self.message}"
        return f"{self.file}: {self.message}"


class ConfigError(Exception):
    """Raised with every problem found, so an operator fixes them in one go."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# --------------------------------------------------------------------------
# YAML loading with positions
# --------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    """Load one YAML file keeping line and column of every node."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), 0, 0, "file not found")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(str(path), 0, 0, f"not UTF-8 text ({exc.reason})")]) from None
    except OSError as exc:
        raise ConfigError([Problem(str(path), 0, 0, f"cannot read: {exc.strerror}")]) from None
    yaml = YAML(typ="rt")
    try:
        return yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        what = exc.problem or exc.context or "invalid YAML"
        raise ConfigError([Problem(str(path), line, col, f"YAML syntax error: {what}")]) from None
    except YAMLError as exc:
        raise ConfigError([Problem(str(path), 0, 0, f"YAML error: {exc}")]) from None


def position(node: Any, loc: Sequence[str | int]) -> tuple[int, int]:
    """Best 1-based (line, column) for the value at ``loc`` inside a ruamel tree."""
    line, col = (1, 1)
    if isinstance(node, CommentedMap | CommentedSeq):
        line, col = node.lc.line + 1, node.lc.col + 1
    for key in loc:
        if isinstance(node, CommentedMap) and key in node:
            kline, kcol = node.lc.key(key)
            line, col = kline + 1, kcol + 1
            node = node[key]
        elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
            iline, icol = node.lc.item(key)
            line, col = iline + 1, icol + 1
            node = node[key]
        else:
            break
    return line, col


def _describe(err: Mapping[str, Any]) -> str:
    """Turn a pydantic error into a sentence for a non-programmer."""
    loc = [str(part) for part in err["loc"]]
    where = ".".join(loc) if loc else "this section"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown setting '{loc[-1]}'"
    if kind == "missing":
        return f"missing required setting '{where}'"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"'{where}': {msg[0].lower()}{msg[1:]}" if msg else f"'{where}' is invalid"


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any, file: str, tree: Any = None,
             prefix: Sequence[str | int] = ()) -> M:
    """Validate ``data`` into ``model``; errors carry file:line:column."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [*prefix, *err["loc"]]
            if err["type"] == "missing":
                loc = loc[:-1]
            root = tree if tree is not None else data
            # plain data (command-line overrides, no file) has no position to show
            line, col = (position(root, loc) if isinstance(root, CommentedMap | CommentedSeq)
                         else (0, 0))
            problems.append(Problem(file, line, col, _describe(err)))
        raise ConfigError(problems) from None


# --------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------


def parse_host_port(value: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port)."""
    text = value.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, ""
    if not port_text:
        if default_port is None:
            raise ValueError(f"'{value}' needs a port, like 127.0.0.1:2525")
        return host or "127.0.0.1", default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"'{port_text}' is not a port number (0 to 65535)")
    return host or "127.0.0.1", int(port_text)


class Model(BaseModel):
    """Base for every config section: frozen, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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


class SmtpSettings(Model):
    """Limits of the listening side; defaults follow Postfix's."""

    hostname: str = Field(default_factory=lambda: os.uname().nodename)
    backlog: int = Field(1024, ge=1)
    max_message_size: int = Field(25 * 1024 * 1024, ge=1024)
    max_line_length: int = Field(64 * 1024, ge=1001)
    bare_newlines: Literal["normalize", "reject"] = "normalize"
    max_received_headers: int = Field(100, ge=1)
    idle_timeout: float = Field(300.0, gt=0)
    max_sessions: int = Field(1000, ge=1)
    max_sessions_per_client: int = Field(100, ge=1)
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


class Settings(Model):
    """The daemon's settings; rules live in their own folder."""

    listen: str = DEFAULT_LISTEN
    next_hop: NextHop | None = None
    state_dir: str = DEFAULT_STATE_DIR
    store: str | None = None
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
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    source: str = "<defaults>"

    @field_validator("smtp", "relay", "outbox", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        # ``smtp:`` with every line below it commented out means "the defaults"
        return {} if value is None else value

    @field_validator("next_hop", mode="before")
    @classmethod
    def _next_hop(cls, value: Any) -> Any:
        return NextHop.parse(value) if isinstance(value, str) else value

    @field_validator("store")
    @classmethod
    def _store(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("sqlite:///"):
            raise ValueError(f"'{value}' is not a supported store: use sqlite:///PATH")
        return value

    @field_validator("listen", "metrics")
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


def load_settings(path: str | os.PathLike[str] | None,
                  overrides: Mapping[str, Any] | None = None) -> Settings:
    """Read the config file (if any), apply command-line overrides, validate."""
    data: dict[str, Any] = {}
    tree: Any = None
    source = "<defaults>"
    if path is not None:
        source = str(path)
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
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    data["source"] = source
    settings = validate(Settings, data, source, tree)
    problems = settings.check_deadlines()
    if problems:
        line, col = _first_position(tree, (("chain_timeout",), ("relay", "timeout"),
                                           ("smtp", "idle_timeout")))
        raise ConfigError([Problem(source, line, col, p) for p in problems])
    return settings


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
