"""The reviewed lists of complaint cues, one file per language (``data/cues.LANG.yaml``).

A general lexicon knows that "disappointed" is unhappy; it does not know that
"toujours pas reçu", "third time", "mise en demeure" or "chapeau l'artiste" are the
way customers complain, nor that "pas de problème" and "no worries" carry no
displeasure. Each file holds groups of patterns, each group a kind of language with
its polarity and points (see the files' heads). One regular expression per group,
matched on folded sentences (:func:`mailflow_sentiment.text.fold`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Literal

from ruamel.yaml import YAML

Polarity = Literal["negative", "positive", "ironic", "courtesy", "defuse", "boilerplate"]
POLARITIES: tuple[Polarity, ...] = ("negative", "positive", "ironic", "courtesy", "defuse",
                                    "boilerplate")
LANGUAGES = ("fr", "en")


@dataclass(frozen=True)
class Hit:
    """One cue found in a sentence: its group, polarity, points and the words matched."""

    group: str
    polarity: Polarity
    weight: float
    words: str
    start: int = 0
    end: int = 0
    #: the group's words mean their opposite after a negation ("pas mécontent")
    negatable: bool = False


@dataclass(frozen=True)
class Group:
    name: str
    polarity: Polarity
    weight: float
    pattern: re.Pattern[str]
    negatable: bool = False

    def find(self, folded: str) -> list[Hit]:
        return [Hit(self.name, self.polarity, self.weight, m.group(0), m.start(),
                    m.end(), self.negatable) for m in self.pattern.finditer(folded)]


class CueError(ValueError):
    """A cue file that cannot be used (said with the file and group)."""


def compile_group(name: str, data: Any, where: str) -> Group:
    """One group of a cue file: ``polarity``, ``weight`` and ``patterns``."""
    if not isinstance(data, dict):
        raise CueError(f"{where}: group '{name}' must be a mapping")
    polarity, weight = data.get("polarity"), data.get("weight", 0)
    patterns = data.get("patterns") or []
    if polarity not in POLARITIES:
        raise CueError(f"{where}: group '{name}': polarity must be one of {POLARITIES}")
    if not isinstance(weight, int | float) or not patterns or not all(
            isinstance(p, str) and p for p in patterns):
        raise CueError(f"{where}: group '{name}' needs a numeric weight and patterns")
    alternation = "|".join(f"(?:{p})" for p in patterns)
    try:
        compiled = re.compile(rf"(?<![a-z0-9'])(?:{alternation})(?![a-z0-9])")
    except re.error as exc:
        bad = next((p for p in patterns if not _compiles(p)), alternation)
        raise CueError(f"{where}: group '{name}': {bad!r} is not a regular expression:"
                       f" {exc}") from None
    return Group(name, polarity, float(weight), compiled, bool(data.get("negatable")))


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


@functools.cache
def cue_groups(language: str) -> tuple[Group, ...]:
    """The groups of ``language``'s shipped cue file ("fr" or "en"), compiled once."""
    if language not in LANGUAGES:
        raise CueError(f"no cues for language {language!r}")
    name = f"cues.{language}.yaml"
    text = files("mailflow_sentiment").joinpath("data").joinpath(name).read_text(encoding="utf-8")
    data = YAML(typ="safe").load(text)
    groups = data.get("groups") if isinstance(data, dict) else None
    if not isinstance(groups, dict) or data.get("language") != language:
        raise CueError(f"{name}: expected 'language: {language}' and 'groups:'")
    return tuple(compile_group(group, value, name) for group, value in groups.items())


def find(folded: str, language: str) -> list[Hit]:
    """Every cue of ``language`` in one folded sentence."""
    return [hit for group in cue_groups(language) for hit in group.find(folded)]
