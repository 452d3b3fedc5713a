"""Merge fields: what an answer's template may use, and how a case fills them in.

``customer_name``, ``case`` (its number), ``promised`` (the answer time the
acknowledgement promised, in the answer's language), ``subject`` (the
customer's), ``agent_name`` (who signs) and ``form.<field>`` (a web form's
``Label: value`` lines, the label folded: ``form.numero_de_commande``).

A field the case lacks is not given to the template at all: printing it
raises (:class:`MissingField`), so an answer that needs it is not offered,
never sent with a ``-`` or a raw ``{{ case }}`` in it; ``{% if customer_name %}``
still reads a missing field as false, for a greeting that does without it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from mailflow.answers.analysis import fold

MERGE_FIELDS: dict[str, str] = {
    "customer_name": "the customer's name, as their From line gives it",
    "case": "the case number",
    "promised": "the answer time the acknowledgement promised",
    "subject": "the customer's subject",
    "agent_name": "the name of the agent who signs",
}
SAMPLE: dict[str, str] = {
    "customer_name": "Claire Martin", "case": "SAV-20260105-00042-7",
    "promised": "lundi 5 janvier 2026 à 17:00", "subject": "Commande 4711",
    "agent_name": "Alice Moreau",
}
_FORM_KEY = re.compile(r"^form\.([a-z0-9_]+)$")
_FORM_LINE = re.compile(r"^[ \t]*([^\n:]{1,40}?)[ \t]*:[ \t]*(\S[^\n]*?)[ \t]*$", re.MULTILINE)


class MissingField(StrictUndefined):
    """A field the case lacks: false in a test, an error anywhere it would be printed."""

    def __bool__(self) -> bool:  # type: ignore[override]
        return False


def answer_environment() -> SandboxedEnvironment:
    """The sandbox answers are rendered in: plain text, missing fields refused."""
    return SandboxedEnvironment(undefined=MissingField, autoescape=False,
                                keep_trailing_newline=True)


def is_form_field(name: str) -> bool:
    return _FORM_KEY.fullmatch(name) is not None


def form_key(label: str) -> str:
    """``Numéro de commande`` → ``numero_de_commande``."""
    return re.sub(r"[^a-z0-9]+", "_", fold(label)).strip("_")


def form_fields(text: str) -> dict[str, str]:
    """A web form's ``Label: value`` lines, by folded label (the first of each)."""
    found: dict[str, str] = {}
    for label, value in _FORM_LINE.findall(text[:20_000]):
        key = form_key(label)
        if key and key not in found:
            found[key] = value
    return found


class Later:
    """A field's text worked out only if a template prints it (a date in words costs more
    than the ranking of the message)."""

    __slots__ = ("_make", "_text")

    def __init__(self, make: Callable[[], str]) -> None:
        self._make = make
        self._text: str | None = None

    def __str__(self) -> str:
        if self._text is None:
            self._text = self._make()
        return self._text


def sample_fields() -> dict[str, Any]:
    """Every field with a plausible value: a template is rendered once with these when
    the library loads, so a mistake fails ``mailflow check``, not a customer's case."""
    return {**SAMPLE, "form": defaultdict(lambda: "4711")}


def present(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that have a value: the others stay missing (:class:`MissingField`)."""
    return {k: v for k, v in fields.items() if v not in (None, "") and v != {}}
