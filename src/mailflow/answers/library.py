"""The answer library: standard answers kept as files in the rules folder.

One answer in one language per file, ``<folder>/<theme>/<id>.<lang>.md``: a
YAML front matter between two ``---`` lines (id, short code, title, theme,
sub-theme, language, keywords, the merge fields it needs, status, owner,
review date), then the body, a Jinja template filled in with the case's
fields (:mod:`mailflow.answers.fields`). Translations share the ``id``. Teams
edit these files without touching Python; every mistake is reported at its
``file:line:column`` (front matter and template alike) by
:func:`load_library`, at start, on reload and by ``mailflow check``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jinja2 import Template, meta
from pydantic import Field, field_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from mailflow.answers.fields import MERGE_FIELDS, answer_environment, is_form_field, sample_fields
from mailflow.config import ConfigError, Model, Problem, position, validate
from mailflow.config.yaml_errors import explain
from mailflow.templates import check_template

_ID = r"^[a-z0-9][a-z0-9-]*$"
#: the quick reading of a front matter (libyaml, through ruamel.yaml.clib)
_FAST = YAML(typ="safe", pure=False)
_DELIMITER = "---"


class FrontMatter(Model):
    """What the front matter of an answer file may hold."""

    id: str = Field(pattern=_ID)
    code: str = Field(pattern=r"^[A-Z][A-Z0-9]{1,5}-[0-9]{1,4}$")
    title: str = Field(min_length=1)
    theme: str = Field(pattern=_ID)
    subtheme: str = ""
    language: str = Field(pattern=r"^[a-z]{2}$")
    keywords: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    status: Literal["draft", "validated"]
    owner: str = Field(min_length=1)
    review_by: dt.date
    #: how customers put it, in their words: ranked like the keywords
    examples: tuple[str, ...] = ()

    @field_validator("keywords", "examples")
    @classmethod
    def _no_blank(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not item.strip() for item in value):
            raise ValueError("an entry is empty")
        return tuple(item.strip() for item in value)


@dataclass(frozen=True)
class Answer:
    """One answer in one language, its template compiled."""

    meta: FrontMatter
    body: str
    template: Template
    file: str
    #: the line of the file the body starts on (for locating template problems)
    body_line: int

    @property
    def id(self) -> str:
        return self.meta.id

    @property
    def language(self) -> str:
        return self.meta.language

    @property
    def code(self) -> str:
        return self.meta.code

    @property
    def title(self) -> str:
        return self.meta.title

    @property
    def validated(self) -> bool:
        return self.meta.status == "validated"

    @property
    def key(self) -> tuple[str, str]:
        return self.meta.id, self.meta.language

    def text(self) -> str:
        """The body's words without the template's own syntax: what the ranking reads."""
        return _TEMPLATE_SYNTAX.sub(" ", self.body)


_TEMPLATE_SYNTAX = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)


@dataclass(frozen=True)
class Library:
    """Every answer of the folder, by (id, language)."""

    folder: Path
    answers: Mapping[tuple[str, str], Answer]

    def __len__(self) -> int:
        return len(self.answers)

    def __iter__(self) -> Iterator[Answer]:
        return iter(self.answers.values())

    def get(self, answer_id: str, language: str) -> Answer | None:
        return self.answers.get((answer_id, language))

    def versions(self, answer_id: str) -> list[Answer]:
        """Every language of one answer."""
        return [a for (i, _), a in sorted(self.answers.items()) if i == answer_id]

    def by_code(self, code: str) -> list[Answer]:
        return [a for a in self if a.code.upper() == code.upper()]

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(sorted({lang for _, lang in self.answers}))

    def validated(self, language: str) -> list[Answer]:
        """The answers that may be suggested in ``language``, in a stable order."""
        return [a for (_, lang), a in sorted(self.answers.items())
                if lang == language and a.validated]


def answer_files(folder: Path) -> Iterator[Path]:
    """``<theme>/<id>.<lang>.md`` below ``folder`` (hidden files are editors' own)."""
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*.md")):
        if not any(part.startswith(".") for part in path.relative_to(folder).parts) \
                and path.name.lower() != "readme.md":
            yield path


def load_library(folder: Path) -> Library:
    """Every answer file below ``folder``; ConfigError with every problem of every file."""
    answers: dict[tuple[str, str], Answer] = {}
    codes: dict[str, Answer] = {}
    problems: list[Problem] = []
    for path in answer_files(folder):
        try:
            answer = load_answer(path, folder)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        first = answers.get(answer.key)
        if first is not None:
            problems.append(Problem(answer.file, 2, 1, f"answer '{answer.id}' in"
                                    f" '{answer.language}' is already defined in {first.file}"))
            continue
        other = codes.get(answer.code)
        if other is not None and other.id != answer.id:
            problems.append(_at(answer, ("code",), f"code '{answer.code}' is already the code"
                                f" of answer '{other.id}' ({other.file})"))
        codes.setdefault(answer.code, answer)
        answers[answer.key] = answer
    if problems:
        raise ConfigError(problems)
    return Library(folder, answers)


def _at(answer: Answer, loc: tuple[str | int, ...], message: str) -> Problem:
    tree = _front_tree(Path(answer.file).read_text(encoding="utf-8"))
    line, column = position(tree, loc) if tree is not None else (0, 0)
    return Problem(answer.file, line + 1, column, message)


def _split(text: str, file: str) -> tuple[str, str, int]:
    """(front matter, body, the body's first line) of an answer file."""
    lines = text.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].strip() != _DELIMITER:
        raise ConfigError([Problem(file, 1, 1, "an answer file starts with a '---' line, then"
                                   " its front matter (id, title, …), then '---' and the body")])
    for index, line in enumerate(lines[1:], start=1):
        if line.strip() == _DELIMITER:
            return "\n".join(lines[1:index]), "\n".join(lines[index + 1:]), index + 2
    raise ConfigError([Problem(file, 1, 1, "the front matter has no closing '---' line")])


def _front_tree(text: str) -> Any:
    try:
        front, _, _ = _split(text, "")
        return YAML(typ="rt").load(front)
    except (ConfigError, YAMLError):
        return None


def load_answer(path: Path, folder: Path) -> Answer:
    """One answer file, checked: front matter, file name, template and merge fields."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(file, 0, 0, f"not UTF-8 text ({exc.reason})")]) from None
    except OSError as exc:
        raise ConfigError([Problem(file, 0, 0, f"cannot read: {exc.strerror}")]) from None
    front, body, body_line = _split(text, file)
    fast = _fast_front(front)
    if fast is not None and not _name_problems(path, folder, fast, None, file) \
            and not _field_problems(fast, None, file):
        template = _template(body, file, body_line, fast)
        if isinstance(template, Template):
            return Answer(fast, body, template, file, body_line)
    # a mistake somewhere: read again keeping positions, to say where
    try:
        tree = YAML(typ="rt").load(front)
    except MarkedYAMLError as exc:
        said = explain(exc, front)
        raise ConfigError([Problem(file, said.line + 1, said.column, said.message)]) from None
    except YAMLError as exc:
        raise ConfigError([Problem(file, 2, 0, f"YAML error: {exc}")]) from None
    if not isinstance(tree, CommentedMap):
        raise ConfigError([Problem(file, 2, 1, "the front matter must be a mapping of"
                                   " id, title, language…")])
    try:
        meta_ = validate(FrontMatter, tree, file, tree)
    except ConfigError as exc:
        raise ConfigError([_shifted(p) for p in exc.problems]) from None
    problems = _name_problems(path, folder, meta_, tree, file)
    problems.extend(_field_problems(meta_, tree, file))
    template = _template(body, file, body_line, meta_, tree)
    if isinstance(template, Template) and not problems:
        return Answer(meta_, body, template, file, body_line)
    raise ConfigError([*problems, *([] if isinstance(template, Template) else template)])


def _fast_front(front: str) -> FrontMatter | None:
    """The front matter read without positions (libyaml's parser, ten times faster):
    None when anything is wrong, to be read again with them."""
    try:
        data = _FAST.load(front)
        return FrontMatter.model_validate(data) if isinstance(data, dict) else None
    except (YAMLError, ValueError):
        return None


def _template(body: str, file: str, body_line: int, meta_: FrontMatter,
              tree: CommentedMap | None = None) -> Template | list[Problem]:
    """The body compiled and rendered once with sample fields, or its problems."""
    try:
        template = check_template(body, file, sample_fields(), answer_environment())
    except ConfigError as exc:
        return [Problem(p.file, p.line + body_line - 1 if p.line else 0, p.column, p.message)
                for p in exc.problems]
    undeclared = _undeclared(meta_, body, tree, file)
    return undeclared if undeclared else template


def _shifted(problem: Problem) -> Problem:
    """A front-matter position, counted from the file's first line."""
    return Problem(problem.file, problem.line + 1 if problem.line else 0, problem.column,
                   problem.message)


def _located(tree: CommentedMap | None, file: str, loc: tuple[str | int, ...],
             message: str) -> Problem:
    line, column = position(tree, loc) if tree is not None else (0, 0)
    return Problem(file, line + 1, column, message)


def _name_problems(path: Path, folder: Path, meta_: FrontMatter, tree: CommentedMap | None,
                   file: str) -> list[Problem]:
    """The file is named ``<id>.<lang>.md``, in its theme's folder."""
    problems = []
    expected = f"{meta_.id}.{meta_.language}.md"
    if path.name != expected:
        problems.append(_located(tree, file, ("id",), f"the file of answer '{meta_.id}' in"
                                 f" '{meta_.language}' must be named '{expected}'"))
    theme = path.parent.relative_to(folder).parts[:1]
    if theme and theme[0] != meta_.theme:
        problems.append(_located(tree, file, ("theme",), f"theme '{meta_.theme}' but the file"
                                 f" is in folder '{theme[0]}'"))
    return problems


def _field_problems(meta_: FrontMatter, tree: CommentedMap | None,
                    file: str) -> list[Problem]:
    """Every merge field named in ``fields:`` is one mailflow fills in."""
    problems = []
    known = list(MERGE_FIELDS)
    for index, name in enumerate(meta_.fields):
        if name in MERGE_FIELDS or is_form_field(name):
            continue
        close = difflib.get_close_matches(name, known, n=1)
        guess = f" (did you mean '{close[0]}'?)" if close else ""
        problems.append(_located(tree, file, ("fields", index), f"unknown merge field"
                                 f" '{name}'{guess}; known fields: {', '.join(known)},"
                                 " form.<field of the web form>"))
    return problems


def _undeclared(meta_: FrontMatter, body: str, tree: CommentedMap | None,
                file: str) -> list[Problem]:
    """A field the body uses must be in ``fields:``: the list is what editors read."""
    env = answer_environment()
    used = meta.find_undeclared_variables(env.parse(body))
    declared = {name.partition(".")[0] for name in meta_.fields}
    missing = sorted(used - declared)
    if not missing:
        return []
    return [_located(tree, file, ("fields",), f"the body uses {', '.join(missing)}: add"
                     f" {'it' if len(missing) == 1 else 'them'} to 'fields:'")]


def languages_of(library: Iterable[Answer]) -> set[str]:
    return {answer.language for answer in library}
