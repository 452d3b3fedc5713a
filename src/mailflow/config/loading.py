"""Generic configuration machinery: located problems, YAML with positions, models.

Every error points at ``file:line:column`` with a sentence an operator can act
on, because a daemon that refuses to start at 3 a.m. must say exactly where.
This module knows nothing of the daemon's own settings; rules files and plugin
sections use the same tools.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from mailflow.config.yaml_errors import explain


@dataclass(frozen=True)
class Problem:
    """One configuration mistake, located in its file."""

    file: str
    line: int  # 1-based; 0 when unknown
    column: int  # 1-based; 0 when unknown
    message: str

    def __str__(self) -> str:
        if self.line and self.column:
            return f"{self.file}:{self.line}:{self.column}: {self.message}"
        if self.line:  # a template's syntax error: Jinja knows the line only
            return f"{self.file}:{self.line}: {self.message}"
        return f"{self.file}: {self.message}"


class ConfigError(Exception):
    """Raised with every problem found, so an operator fixes them in one go."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


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
        said = explain(exc, text)
        raise ConfigError([Problem(str(path), said.line, said.column, said.message)]) from None
    except YAMLError as exc:
        raise ConfigError([Problem(str(path), 0, 0, f"YAML error: {exc}")]) from None


def position(node: Any, loc: Sequence[str | int], *, value: bool = False) -> tuple[int, int]:
    """Best 1-based (line, column) for the value at ``loc`` inside a ruamel tree: its key's,
    or with ``value`` the scalar's own (``timezone: Europe/Pariss`` points at the zone)."""
    line, col = (1, 1)
    if isinstance(node, CommentedMap | CommentedSeq):
        line, col = node.lc.line + 1, node.lc.col + 1
    for index, key in enumerate(loc):
        if isinstance(node, CommentedMap) and key in node:
            kline, kcol = node.lc.key(key)
            line, col = kline + 1, kcol + 1
            if value and index == len(loc) - 1 and not isinstance(
                    node[key], CommentedMap | CommentedSeq):
                vline, vcol = node.lc.value(key)
                line, col = vline + 1, vcol + 1
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
            line, col = (position(root, loc, value=err["type"] not in ("missing",
                                                                         "extra_forbidden"))
                         if isinstance(root, CommentedMap | CommentedSeq) else (0, 0))
            problems.append(Problem(file, line, col, _describe(err)))
        raise ConfigError(problems) from None


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
