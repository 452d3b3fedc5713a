"""YAML syntax errors in plain words: where the mistake is, and what to change.

ruamel.yaml says what its parser expected (``expected <block end>, but found
'<block mapping start>'``), which tells the person editing the rules nothing.
The common mistakes (indentation, a tab, ``key:value``, an unclosed quote or
bracket, a key written twice, ``: `` inside an unquoted value) each leave a
recognisable trace in the parser's error and the line it points at; the hint
names the mistake and the parser's own words follow it, for the rest.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ruamel.yaml.error import MarkedYAMLError

INDENTATION = ("the indentation does not line up with the lines above "
               "(a key is indented more or less than its siblings)")
_LINE_BREAK = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")  # YAML's line breaks, as ruamel counts
_GLUED_COLON = re.compile(r"[^\s:]:(?=[^\s:/])")  # ``key:value``; not ``::`` nor ``http://``
_DUPLICATE = re.compile(r'found duplicate key "(.*?)" with value')


@dataclass(frozen=True)
class Explained:
    """A YAML error as an operator reads it: 1-based position and one sentence."""

    line: int  # 0 when unknown
    column: int
    message: str


@dataclass(frozen=True)
class _Error:
    """What ruamel reported, with the source lines to look at."""

    problem: str
    context: str
    line: int  # the problem's position, 1-based (0: none)
    column: int
    context_line: int
    context_column: int
    lines: Sequence[str]

    def text(self, line: int) -> str:
        return self.lines[line - 1] if 0 < line <= len(self.lines) else ""

    def previous(self, line: int) -> int:
        """The nearest line above ``line`` holding something other than a comment."""
        for number in range(line - 1, 0, -1):
            stripped = self.text(number).strip()
            if stripped and not stripped.startswith("#"):
                return number
        return 0


Hint = tuple[str, int, int]  # message, line, column


def explain(exc: MarkedYAMLError, text: str) -> Explained:
    """The error ``exc`` raised while loading ``text``, in plain words with a position."""
    problem_mark, context_mark = exc.problem_mark, exc.context_mark
    line, column = _at(problem_mark) if problem_mark is not None else _at(context_mark)
    cline, ccolumn = _at(context_mark) if context_mark is not None else (line, column)
    error = _Error(exc.problem or "", exc.context or "", line, column, cline, ccolumn,
                   _LINE_BREAK.split(text))
    said = error.problem or error.context or "invalid YAML"
    for hint in _HINTS:
        found = hint(error)
        if found is not None:
            message, line, column = found
            return Explained(line, column, f"{message} — YAML: {said}")
    context = f"{error.context}: " if error.context and error.problem else ""
    return Explained(line, column, f"YAML syntax error: {context}{said}")


def _at(mark: object) -> tuple[int, int]:
    line, column = getattr(mark, "line", None), getattr(mark, "column", None)
    if isinstance(line, int) and isinstance(column, int):
        return line + 1, column + 1
    return 0, 0


def _indent(text: str) -> int:
    return len(text) - len(text.lstrip(" "))


def _tab(e: _Error) -> Hint | None:
    if e.text(e.line)[e.column - 1:e.column] == "\t" or "'\\t'" in e.problem:
        return ("a tab character: YAML indents with spaces only (replace the tab by spaces)",
                e.line, e.column)
    return None


def _duplicate(e: _Error) -> Hint | None:
    found = _DUPLICATE.match(e.problem)
    if found is None:
        return None
    key = found.group(1)
    first = next((n for n in range(e.context_line, e.line)
                  if e.text(n)[e.column - 1:].startswith((f"{key}:", f"'{key}':", f'"{key}":'))
                  and _indent(e.text(n)) == e.column - 1), 0)
    where = f" (first at line {first})" if first else ""
    return (f"the key '{key}' is written twice in the same mapping{where}: keep one",
            e.line, e.column)


def _unclosed_quote(e: _Error) -> Hint | None:
    if "quoted scalar" not in e.context or "end of stream" not in e.problem:
        return None
    return ("this quote is never closed: end the value with the same quote "
            "(inside '…' a single quote is written '')", e.context_line, e.context_column)


def _escape(e: _Error) -> Hint | None:
    if "double-quoted" not in e.context or "escape" not in e.problem:
        return None
    column = e.column - 1 if e.text(e.line)[e.column - 2:e.column - 1] == "\\" else e.column
    return ('inside "…" a backslash starts an escape: write \\\\ for one backslash, '
            "or put the value in single quotes", e.line, column)


def _unclosed_bracket(e: _Error) -> Hint | None:
    for kind, opening, closing in (("flow sequence", "[", "]"), ("flow mapping", "{", "}")):
        if kind in e.context and e.problem.startswith("expected ','"):
            return (f"this '{opening}' is not closed by a '{closing}' before line {e.line}"
                    " (or a comma is missing between two items)",
                    e.context_line, e.context_column)
    if "flow node" in e.context and "<stream end>" in e.problem:
        return ("the file ends inside a '[…]' or '{…}': a bracket is not closed",
                e.line, e.column)
    if re.search(r"found '[\]}]'", e.problem):
        return ("a closing bracket without its opening one", e.line, e.column)
    return None


def _block_end(e: _Error) -> Hint | None:
    if not e.problem.startswith("expected <block end>"):
        return None
    if "found '?'" in e.problem and "block collection" in e.context:
        return ("this key is at the level of the list's '- ' items: indent it like the keys "
                "of the item above, or start it with '- '", e.line, e.column)
    if "<block mapping start>" in e.problem or "<block sequence start>" in e.problem or (
            "found '?'" in e.problem):
        return INDENTATION, e.line, e.column
    before = e.text(e.line)[:e.column - 1].rstrip()
    if "'<scalar>'" in e.problem and before.endswith(("'", '"')):
        return ("text after a quoted value: put the whole value inside the quotes "
                "(inside '…' a single quote is written '')", e.line, e.column)
    return None


def _missing_colon(e: _Error) -> Hint | None:
    """``could not find expected ':'``: the line of the simple key is not ``key: value``."""
    if "simple key" not in e.context or "expected ':'" not in e.problem:
        return None
    glued = _glued(e, e.context_line)
    if glued is not None:
        return glued
    return ("this line is not a 'key: value' like the lines around it (a colon is missing, "
            "or a value goes on without quotes or indentation)", e.context_line, e.context_column)


def _glued(e: _Error, line: int) -> Hint | None:
    """``key:value``, which YAML reads as one word."""
    text = e.text(line)
    if ": " in text or text.rstrip().endswith(":"):
        return None
    found = _GLUED_COLON.search(text)
    if found is None:
        return None
    return ("a colon must be followed by a space: write 'key: value', not 'key:value'",
            line, found.start() + 2)


def _mapping_here(e: _Error) -> Hint | None:
    """``mapping values are not allowed here``: a ``: `` where no key can start."""
    if not e.problem.startswith("mapping values are not allowed"):
        return None
    text = e.text(e.line)
    before = text[:e.column - 1].strip().removeprefix("- ")
    if ": " in before:
        key, _, value = text.strip().partition(": ")
        quoted = value.split(" #")[0].strip().replace("\\", "\\\\").replace('"', '\\"')
        return (f'a value holding ": " must be quoted, e.g. {key}: "{quoted}"',
                e.line, e.column)
    above = e.previous(e.line)
    glued = _glued(e, above) if above else None
    if glued is not None:
        return glued
    if above and _indent(text) > _indent(e.text(above)):
        return INDENTATION, e.line, _indent(text) + 1
    return ("a ': ' where no key can start: quote the value, or check the indentation",
            e.line, e.column)


def _cannot_start(e: _Error) -> Hint | None:
    found = re.match(r"found character '(.)' that cannot start any token", e.problem)
    if found is None:
        return None
    return (f"a value cannot start with '{found.group(1)}': put it in quotes", e.line, e.column)


def _alias(e: _Error) -> Hint | None:
    found = re.match(r"found undefined alias '(.*)'", e.problem)
    if found is None:
        return None
    return (f"'*{found.group(1)}' names no '&{found.group(1)}' above; a value starting with '*'"
            " must be quoted", e.line, e.column)


_HINTS: tuple[Callable[[_Error], Hint | None], ...] = (
    _tab, _duplicate, _unclosed_quote, _escape, _unclosed_bracket, _block_end, _missing_colon,
    _mapping_here, _cannot_start, _alias)
