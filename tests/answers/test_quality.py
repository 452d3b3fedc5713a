"""How well the shipped library is suggested, on the frozen evaluation set (README.md here).

Each message goes through what the ``answers`` stage does with a customer's mail:
its own text (quotes, signature and disclaimers cut), its language's validated
answers, the ranking, the confidence against the companion threshold the shipped
rules give the after-sales route. Prints top-1 accuracy, recall at 3 and the share
of "none" messages that would get a companion:

    .venv/bin/pytest -q -s tests/answers/test_quality.py
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from mailflow.answers.suggest import Suggester
from mailflow.message.customer_text import customer_text

HERE = Path(__file__).parent
RULES = HERE.parents[1] / "rules"
TOP1, RECALL3, NONE_ABOVE = 0.75, 0.90, 0.05


@dataclass(frozen=True)
class Outcome:
    message: dict[str, Any]
    ranked: list[str]
    confidence: float

    @property
    def expected(self) -> str:
        return str(self.message["expected"])


@pytest.fixture(scope="module")
def outcomes() -> list[Outcome]:
    suggester = Suggester.load(RULES / "answers")
    messages = YAML(typ="safe").load((HERE / "eval.yaml").read_text(encoding="utf-8"))
    found = []
    for message in messages["messages"]:
        ranking = suggester.rank(message["language"], message["subject"],
                                 customer_text(message["text"]))
        found.append(Outcome(message, [m.answer.id for m in ranking.matches],
                             ranking.confidence))
    return found


def threshold() -> float:
    rules = YAML(typ="safe").load((RULES / "answers.yaml").read_text(encoding="utf-8"))
    return float(rules["answers"]["companion"]["sav"])


def test_the_set_is_what_its_readme_says(outcomes: list[Outcome]) -> None:
    assert len(outcomes) >= 150
    assert sum(o.expected == "none" for o in outcomes) >= 20
    assert sum(o.message["kind"] == "paraphrase" for o in outcomes) >= 30
    assert {o.message["language"] for o in outcomes} == {"fr", "en"}


def test_quality(outcomes: list[Outcome]) -> None:
    answered = [o for o in outcomes if o.expected != "none"]
    nones = [o for o in outcomes if o.expected == "none"]
    top1 = sum(o.ranked[:1] == [o.expected] for o in answered) / len(answered)
    recall3 = sum(o.expected in o.ranked[:3] for o in answered) / len(answered)
    limit = threshold()
    none_above = sum(o.confidence >= limit for o in nones) / len(nones)
    companions = sum(o.confidence >= limit for o in answered) / len(answered)
    right = sum(o.confidence >= limit and o.ranked[:1] == [o.expected]
                for o in answered) / len(answered)
    by_kind = {}
    for kind in ("direct", "paraphrase", "tricky"):
        some = [o for o in answered if o.message["kind"] == kind]
        by_kind[kind] = sum(o.ranked[:1] == [o.expected] for o in some) / max(1, len(some))
    print(f"\nanswers evaluation: {len(answered)} messages with an answer, {len(nones)} none"
          f"\n  top-1 accuracy        {top1:.1%}  (target >= {TOP1:.0%})"
          f"\n  recall at 3           {recall3:.1%}  (target >= {RECALL3:.0%})"
          f"\n  none above threshold  {none_above:.1%}  (target <= {NONE_ABOVE:.0%},"
          f" threshold {limit:.2f})"
          f"\n  companions sent       {companions:.1%} of messages with an answer"
          f" ({right:.1%} with the right one)"
          f"\n  top-1 by kind         " + ", ".join(f"{k} {v:.1%}" for k, v in by_kind.items()))
    assert top1 >= TOP1
    assert recall3 >= RECALL3
    assert none_above <= NONE_ABOVE
