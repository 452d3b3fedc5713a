"""Templates the teams write in the rules folder, checked when the rules are loaded.

Jinja's strict undefined policy raises only when a template is rendered: a
typo in a field name (``{{ promise }}`` for ``{{ promised }}``) would pass
``mailflow check`` and a reload, then tempfail every new case. So every
template is parsed, searched for names its stage does not provide and
rendered once with sample fields whenever the rules load; a failure is a
configuration error at the template's ``file:line:column`` (the line only,
for a syntax error: Jinja knows no column), with the known fields listed.
A template file that cannot be read is reported at the rules line naming it.

A stage gets its sample fields from the very function that makes the real
ones, applied to :func:`sample_context`, so the two lists cannot drift apart.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from mailflow.clock import SYSTEM_CLOCK, Clock
from mailflow.config import ConfigError, Problem
from mailflow.context import CaseInfo, MessageContext, Triage
from mailflow.message import Envelope, parse_message
from mailflow.rules import RuleSet
from mailflow.values import CaseStatus

#: where a file name sits in the rules: section, then keys (``acknowledge.templates.fr``)
Where = Sequence[str | int]
Fields = Mapping[str, Any]

SAMPLE_CASE = "SAV-20260105-0042-7"
SAMPLE_CUSTOMER = "claire.martin@client.example"
SAMPLE_MAILBOX = "sav@example.com"
_SAMPLE_MESSAGE = (
    b"From: Claire Martin <claire.martin@client.example>\r\nTo: sav@example.com\r\n"
    b"Subject: Commande 4711 : colis non livr\xc3\xa9\r\n"
    b"Message-ID: <sample.0042@client.example>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    b"Bonjour, ma commande 4711 n'est pas arriv\xc3\xa9e.\r\n")
_NEWLINES = re.compile(r"\r\n|\r")  # Jinja's lexer reads every line break as "\n"
_JINJA_FRAME = "<template>"  # the file name Jinja gives the frames of a template's code


def template_environment() -> SandboxedEnvironment:
    """The sandbox rules templates run in: plain text (no HTML escaping), strict
    undefined (a missing field raises instead of printing nothing), final newline kept."""
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                keep_trailing_newline=True)


def sample_context(clock: Clock = SYSTEM_CLOCK) -> MessageContext:
    """A new case's inbound message with plausible values, to render templates at load."""
    envelope = Envelope(mail_from=SAMPLE_CUSTOMER, rcpt_to=(SAMPLE_MAILBOX,))
    case = CaseInfo(number=SAMPLE_CASE, status=CaseStatus.NEW, customer=SAMPLE_CUSTOMER,
                    customer_name="Claire Martin", mailbox=SAMPLE_MAILBOX, route="sav")
    return MessageContext(message=parse_message(_SAMPLE_MESSAGE, envelope), queue_id="SAMPLE",
                          recipients=[SAMPLE_MAILBOX], dry_run=True, clock=clock,
                          mailbox=SAMPLE_MAILBOX, case=case, triage=Triage("normal"))


def load_templates(rules: RuleSet, files: Mapping[str, str],
                   sample: Callable[[str], Fields], *, where: Where,
                   env: SandboxedEnvironment | None = None) -> dict[str, Template]:
    """Each of ``files`` (key → file in the rules folder), checked with ``sample(key)``;
    the problems of all of them in one ConfigError. ``where`` locates ``files``."""
    templates: dict[str, Template] = {}
    problems: list[Problem] = []
    for key, name in files.items():
        try:
            templates[key] = load_template(rules, name, sample(key), where=(*where, key),
                                           env=env)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return templates


def load_template(rules: RuleSet, name: str, fields: Fields, *, where: Where,
                  env: SandboxedEnvironment | None = None) -> Template:
    """The template file ``name`` of the rules folder, checked against ``fields``."""
    path, source = _read(rules, name, where)
    return check_template(source, str(path), fields, env or template_environment())


def check_template(source: str, file: str, fields: Fields,
                   env: SandboxedEnvironment) -> Template:
    """``source`` compiled, its names all among ``fields`` and rendered once with them;
    ConfigError located in ``file`` otherwise."""
    text = _NEWLINES.sub("\n", source)
    try:
        tree = env.parse(text)
        template = env.from_string(tree)  # an unknown filter or test is found here
    except TemplateSyntaxError as exc:
        raise ConfigError([_syntax(file, exc, text)]) from None
    problems = _unknown_fields(env, text, tree, file, fields)
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: (p.line, p.column)))
    try:
        template.render(**fields)
    except Exception as exc:  # whatever fails on the sample would fail on every message
        raise ConfigError([Problem(file, _failing_line(exc.__traceback__), 0,
                                   f"the template fails on sample values: {exc}")]) from None
    return template


def _read(rules: RuleSet, name: str, where: Where) -> tuple[Path, str]:
    try:
        path = rules.template_path(name)
    except ValueError as exc:
        raise ConfigError([_in_rules(rules, where, f"template file {exc}")]) from None
    try:
        return path, path.read_text(encoding="utf-8")
    except FileNotFoundError:
        message = f"template file '{name}' not found (looked in {path})"
    except UnicodeDecodeError as exc:
        message = f"template file '{name}' is not UTF-8 text ({exc.reason}; {path})"
    except OSError as exc:
        message = f"template file '{name}' cannot be read: {exc.strerror} ({path})"
    raise ConfigError([_in_rules(rules, where, message)])


def _in_rules(rules: RuleSet, where: Where, message: str) -> Problem:
    """A problem at the rules line naming the file (``templates.fr: …``)."""
    section = rules.section(str(where[0])) if where else None
    keys = tuple(where[1:]) if section is not None else tuple(where)
    label = ".".join(str(key) for key in keys)
    text = f"{label}: {message}" if label else message
    if section is None:
        return Problem(str(rules.directory), 0, 0, text)
    return section.problem(text, keys)


def _syntax(file: str, exc: TemplateSyntaxError, text: str) -> Problem:
    line = exc.lineno or 0
    lines = text.splitlines()
    column = syntax_column(lines[line - 1], exc.message or "") if 0 < line <= len(lines) else 0
    return Problem(file, line, column, f"template syntax error: {exc.message}")


_OPENING = re.compile(r"\{\{|\{%")
_QUOTED = re.compile(r"'([^']+)'")


def syntax_column(line: str, message: str) -> int:
    """Where on its line a template's syntax breaks (Jinja says the line only): the first
    ``{{``/``{%`` not closed by its own ``}}``/``%}`` before the next opening, else the
    token Jinja names (``unexpected '}'``), else the line's first tag; 0 if none."""
    openings = list(_OPENING.finditer(line))
    for index, opening in enumerate(openings):
        end = openings[index + 1].start() if index + 1 < len(openings) else len(line)
        closer = "}}" if opening.group() == "{{" else "%}"
        if closer not in line[opening.end():end]:
            return opening.start() + 1
    named = _QUOTED.search(message)
    start = openings[0].start() if openings else 0
    if named and (found := line.find(named.group(1), start)) >= 0:
        return found + 1
    return start + 1 if openings else 0


def _unknown_fields(env: SandboxedEnvironment, text: str, tree: nodes.Template, file: str,
                    fields: Fields) -> list[Problem]:
    unknown = meta.find_undeclared_variables(tree) - set(fields) - set(env.globals)
    known = ", ".join(fields)
    problems = []
    for name in unknown:
        close = difflib.get_close_matches(name, list(fields), n=1)
        guess = f" (did you mean '{close[0]}'?)" if close else ""
        line, column = _locate(env, text, tree, name)
        problems.append(Problem(file, line, column,
                                f"unknown field '{name}'{guess}; known fields: {known}"))
    return problems


def _locate(env: SandboxedEnvironment, text: str, tree: nodes.Template,
            name: str) -> tuple[int, int]:
    """Line and column where ``name`` is first read as a variable.

    The tree gives the line; the lexer's tokens are the template's own text in
    order, so finding each in turn gives its offset, hence the column.
    """
    lines = [node.lineno for node in tree.find_all(nodes.Name)
             if node.name == name and node.ctx == "load"]
    line = min(lines, default=1)
    offset, before = 0, ""
    for lineno, kind, value in env.lex(text):
        offset = max(text.find(value, offset), offset)
        if (kind == "name" and value == name and lineno == line
                and before not in (".", "|", "is")):
            return line, offset - text.rfind("\n", 0, offset)
        if kind != "whitespace":
            before = value
        offset += len(value)
    return line, 1


def _failing_line(tb: TracebackType | None) -> int:
    """The template line a render error came from (Jinja maps its frames to it)."""
    line = 0
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _JINJA_FRAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
