"""The rules folder: the YAML that teams edit, kept apart from the daemon's settings.

Every ``*.yaml`` file in the folder is read; their top-level keys are merged.
Core keys are ``local_domains``, ``own_addresses``, ``chain``, ``plugins`` (the
installed plugin packages the rules need, enabled besides those the daemon's
configuration names), ``calendars`` (the business calendars every stage shares) and
``automatic`` (what marks automatic mail, for every stage alike); every other top-level key is the
section of the stage (or plugin) of that name, validated later by the stage
that owns it, so a typo is reported at ``file:line:column``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap

from mailflow.automatic import AutomaticDetector, AutomaticRules
from mailflow.business_hours import CalendarOptions
from mailflow.calendars import DEFAULT, Calendars, CalendarsSection
from mailflow.config import ConfigError, Problem, load_yaml, position, validate

CORE_KEYS = ("local_domains", "chain", "own_addresses", "plugins", "calendars", "automatic")


@dataclass(frozen=True)
class Section:
    """One top-level key of a rules file, with where it came from."""

    name: str
    data: Any
    file: str
    tree: Any  # the parent mapping, for positions
    line: int
    column: int

    def problem(self, message: str, loc: tuple[str | int, ...] = ()) -> Problem:
        line, col = position(self.tree, (self.name, *loc)) if loc else (self.line, self.column)
        return Problem(self.file, line, col, message)


@dataclass(frozen=True)
class RuleSet:
    """Everything read from the rules folder, before plugins validate their parts."""

    directory: Path
    local_domains: tuple[str, ...]
    own_addresses: tuple[str, ...]
    chain: tuple[str, ...]
    chain_section: Section | None
    #: installed plugins (entry-point names) the rules enable, and where they said so
    plugins: tuple[str, ...] = ()
    plugins_section: Section | None = None
    sections: Mapping[str, Section] = field(default_factory=dict)
    calendars: Calendars = field(default_factory=Calendars)
    automatic: AutomaticRules = field(default_factory=AutomaticRules)
    #: what is allowed but deserves a word (a deprecated key): `check` prints them
    warnings: tuple[Problem, ...] = ()

    def section(self, name: str) -> Section | None:
        return self.sections.get(name)

    def is_local(self, address: str) -> bool:
        """True when the address's domain is one of ours (case-insensitive)."""
        _, at, domain = address.rpartition("@")
        domain = domain.lower().rstrip(".")
        return bool(at and domain) and domain in self.local_domains

    def template_path(self, name: str) -> Path:
        """A file inside the rules folder; refuses anything that escapes it."""
        base = self.directory.resolve()
        candidate = (base / name).resolve()
        if not candidate.is_relative_to(base):
            raise ValueError(f"'{name}' is outside the rules folder")
        return candidate


def _files(directory: Path) -> Iterator[Path]:
    # hidden files are editors' locks and swap files, or macOS "._" forks: not rules
    yield from sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml")
                      and not p.name.startswith(".") and p.is_file())


def load_rules(directory: str | Path) -> RuleSet:
    """Read every YAML file in the rules folder into one RuleSet."""
    path = Path(directory)
    if not path.is_dir():
        raise ConfigError([Problem(str(path), 0, 0, "rules folder not found")])
    problems: list[Problem] = []
    sections: dict[str, Section] = {}
    for file in _files(path):
        try:
            tree = load_yaml(file)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if tree is None:
            continue
        if not isinstance(tree, CommentedMap):
            line, col = position(tree, ())
            problems.append(Problem(str(file), line, col,
                                    "a rules file must be a mapping of sections"))
            continue
        for key in tree:
            line, col = position(tree, (key,))
            if not isinstance(key, str):
                problems.append(Problem(str(file), line, col, "section names must be text"))
                continue
            if key in sections:
                first = sections[key]
                problems.append(Problem(str(file), line, col,
                                        f"section '{key}' is already defined at "
                                        f"{first.file}:{first.line}:{first.column}"))
                continue
            sections[key] = Section(key, tree[key], str(file), tree, line, col)
    domains, own, chain = _core(sections, problems)
    calendars = _calendars(sections, problems)
    warnings: list[Problem] = []
    automatic = _automatic(sections, problems, warnings)
    plugins = _string_list(sections.get("plugins"), problems, "plugin names")
    if problems:
        raise ConfigError(problems)
    return RuleSet(
        directory=path,
        local_domains=domains,
        own_addresses=own,
        chain=chain,
        chain_section=sections.get("chain"),
        plugins=plugins,
        plugins_section=sections.get("plugins"),
        sections={k: v for k, v in sections.items() if k not in CORE_KEYS},
        calendars=calendars,
        automatic=automatic,
        warnings=tuple(warnings),
    )


def _automatic(sections: Mapping[str, Section], problems: list[Problem],
               warnings: list[Problem]) -> AutomaticRules:
    """The ``automatic:`` section, validated now (a language without shipped markers is
    refused at its line). The deprecated ``acknowledge.robots`` is still read, with a
    warning: alone it stands for the section; beside it, its entries are added (an
    upgrade must not start answering robots the rules named)."""
    found: list[tuple[AutomaticRules, Section, tuple[str, ...]]] = []
    section = sections.get("automatic")
    if section is not None and section.data is not None:
        rules = _validated_automatic(section.data, section, ("automatic",), problems)
        if rules is not None:
            found.append((rules, section, ("automatic",)))
    ack = sections.get("acknowledge")
    if ack is not None and isinstance(ack.data, Mapping) and ack.data.get("robots") is not None:
        warnings.append(ack.problem(
            "'acknowledge.robots' is deprecated: move it to the top-level 'automatic:'"
            " section (it decides for every stage: priority and escalation included)",
            ("robots",)))
        rules = _validated_automatic(ack.data["robots"], ack, ("acknowledge", "robots"),
                                     problems)
        if rules is not None:
            found.append((rules, ack, ("acknowledge", "robots")))
    if not found:
        return AutomaticRules()
    merged = AutomaticRules(**{  # what either says, each field as written (else its default)
        field: list(dict.fromkeys(item for rules, _, _ in found if field in rules.model_fields_set
                                  for item in getattr(rules, field)))
        for field in ("languages", "subjects", "senders", "headers", "signs")
        if any(field in rules.model_fields_set for rules, _, _ in found)})
    try:
        AutomaticDetector(merged)
    except ValueError as exc:  # a language without shipped subject markers
        _, where, loc = found[0]
        problems.append(where.problem(str(exc), (*loc[1:], "languages")))
        return AutomaticRules()
    return merged


def _validated_automatic(data: Any, section: Section, where: tuple[str, ...],
                         problems: list[Problem]) -> AutomaticRules | None:
    try:
        return validate(AutomaticRules, data, section.file, section.tree, prefix=where)
    except ConfigError as exc:
        problems.extend(exc.problems)
        return None


def _calendars(sections: Mapping[str, Section], problems: list[Problem]) -> Calendars:
    """The ``calendars:`` section, validated now; without a ``default`` calendar, the
    deprecated inline ``acknowledge.calendar`` mapping stands for it."""
    options: dict[str, CalendarOptions] = {}
    section = sections.get("calendars")
    if section is not None:
        try:
            options = dict(validate(CalendarsSection, section.data, section.file,
                                    section.tree, prefix=("calendars",)).root)
        except ConfigError as exc:
            problems.extend(exc.problems)
    ack = sections.get("acknowledge")
    legacy = ack.data.get("calendar") if ack is not None and isinstance(
        ack.data, Mapping) else None
    if DEFAULT not in options and isinstance(legacy, Mapping):
        with contextlib.suppress(ValueError):  # the acknowledge stage reports its errors
            options[DEFAULT] = CalendarOptions.model_validate(legacy)
    try:
        return Calendars(options)
    except ValueError as exc:  # a calendar the holidays package cannot build
        problems.append(Problem(section.file if section else "calendars", 0, 0, str(exc)))
        return Calendars()


def _string_list(section: Section | None, problems: list[Problem], what: str) -> tuple[str, ...]:
    if section is None or section.data is None:
        return ()
    if not isinstance(section.data, list):
        problems.append(section.problem(f"'{section.name}' must be a list of {what}"))
        return ()
    items: list[str] = []
    for index, item in enumerate(section.data):
        if not isinstance(item, str) or not item.strip():
            problems.append(section.problem(f"item {index + 1} must be {what[:-1]}", (index,)))
        else:
            items.append(item.strip())
    return tuple(items)


def _core(sections: Mapping[str, Section],
          problems: list[Problem]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    domains = tuple(d.lower().rstrip(".") for d in
                    _string_list(sections.get("local_domains"), problems, "domain names"))
    own = tuple(a.lower() for a in
                _string_list(sections.get("own_addresses"), problems, "addresses"))
    chain = _string_list(sections.get("chain"), problems, "stage names")
    return domains, own, chain
