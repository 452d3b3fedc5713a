"""Run ``mailflow`` commands in the test process: ``cli.main(argv)``, no subprocess.

``main`` configures logging for the whole process (structlog, the root
logger), as the real command does. ``cli_logging`` keeps that from leaking
into later tests: loggers are not cached on first use meanwhile (a cached one
would keep writing to a captured stream long closed), and the previous
configuration comes back afterwards.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import structlog

from mailflow import cli
from mailflow.logs import configure


@dataclass(frozen=True)
class CliResult:
    """What a command said and returned, shaped like ``subprocess.CompletedProcess``."""

    returncode: int
    stdout: str
    stderr: str


def _configure_uncached(level: str = "info", *, json: bool | None = None) -> None:
    configure(level, json=json)
    structlog.configure(cache_logger_on_first_use=False)


@contextlib.contextmanager
def cli_logging() -> Iterator[None]:
    """Let ``cli.main`` configure logging, then put the test process's back."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with mock.patch.object(cli, "configure", _configure_uncached):
            yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


def main(*args: str) -> int:
    """``cli.main`` with its exit status, argparse's usage errors included."""
    try:
        return cli.main(list(args))
    except SystemExit as exc:  # argparse: --help, or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 1


def run_cli(*args: str, cwd: str | os.PathLike[str] | None = None) -> CliResult:
    """``mailflow ARGS...`` in-process, from ``cwd``; its output captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        if cwd is not None:
            stack.enter_context(contextlib.chdir(Path(cwd)))
        stack.enter_context(cli_logging())
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        code = main(*args)
    return CliResult(code, out.getvalue(), err.getvalue())
