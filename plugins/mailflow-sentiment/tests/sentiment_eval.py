"""The frozen evaluation set (``eval/messages.yaml``) as mail, and the figures for it.

Each entry becomes the message its customer sent (quoted replies, signatures and
disclaimers included) to the mailbox of its language; what the plugin decides for it
is compared with its label. Run as a script, it scores every message on the
customer's text the framework extracts and prints the figures:

    .venv/bin/python plugins/mailflow-sentiment/tests/sentiment_eval.py
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

EVAL = Path(__file__).parent / "eval" / "messages.yaml"
LABELS = ("negative", "neutral", "positive")
MAILBOX = {"fr": "sav@example.com", "en": "support@example.com"}


def messages() -> list[dict[str, Any]]:
    data = YAML(typ="safe").load(EVAL.read_text(encoding="utf-8"))
    return list(data["messages"])


def as_mail(entry: dict[str, Any]) -> bytes:
    """The entry as its customer sent it."""
    mail = EmailMessage(policy=SMTP)
    mail["From"] = f"client-{entry['id']}@client.example"
    mail["To"] = MAILBOX[entry["language"]]
    mail["Subject"] = entry["subject"]
    mail["Message-ID"] = f"<{entry['id']}@client.example>"
    mail.set_content(entry["text"], cte="8bit")
    return mail.as_bytes()


@dataclass(frozen=True)
class Figures:
    """What the scorer said against the labels, for one language or all."""

    name: str
    confusion: dict[tuple[str, str], int]  # (label, decided) -> messages

    @property
    def count(self) -> int:
        return sum(self.confusion.values())

    def _n(self, label: str | None = None, decided: str | None = None) -> int:
        return sum(n for (lb, dc), n in self.confusion.items()
                   if label in (None, lb) and decided in (None, dc))

    @property
    def precision(self) -> float:
        found = self._n(decided="negative")
        return self._n("negative", "negative") / found if found else 0.0

    @property
    def recall(self) -> float:
        wanted = self._n(label="negative")
        return self._n("negative", "negative") / wanted if wanted else 0.0

    @property
    def accuracy(self) -> float:
        return sum(self._n(lb, lb) for lb in LABELS) / self.count if self.count else 0.0

    def lines(self) -> list[str]:
        head = (f"{self.name}: {self.count} messages, negative precision {self.precision:.1%}"
                f" recall {self.recall:.1%}; accuracy over three labels {self.accuracy:.1%}")
        table = ["  " + "label / decided".ljust(18) + "".join(f"{d:>10}" for d in LABELS)]
        table += [f"  {lb:<18}" + "".join(f"{self._n(lb, d):>10}" for d in LABELS)
                  for lb in LABELS]
        return [head, *table]


def figures(results: Iterable[tuple[dict[str, Any], str]]) -> list[Figures]:
    """All messages, then each language: (entry, decided label) pairs counted."""
    pairs = list(results)
    found = []
    for name, languages in (("all", ("fr", "en")), ("fr", ("fr",)), ("en", ("en",))):
        confusion: dict[tuple[str, str], int] = {}
        for entry, decided in pairs:
            if entry["language"] in languages:
                key = (entry["label"], decided)
                confusion[key] = confusion.get(key, 0) + 1
        found.append(Figures(name, confusion))
    return found


def report(found: Sequence[Figures], misses: Sequence[str] = ()) -> str:
    lines = [line for fig in found for line in fig.lines()]
    return "\n".join(["mood evaluation (tests/eval/messages.yaml)", *lines, *misses])


def main() -> None:
    from mailflow_sentiment.scoring import score_text
    from mailflow_sentiment.stage import language_of

    from mailflow.testing import make_context

    results, misses = [], []
    for entry in messages():
        ctx = make_context(as_mail(entry))
        mood = score_text(ctx.customer_text, language_of(ctx, "fr") or "fr")
        results.append((entry, mood.label))
        if mood.label != entry["label"]:
            misses.append(f"  {entry['id']} {entry['kind']}: {entry['label']} read as"
                          f" {mood.label} ({mood.score:+.2f})")
    print(report(figures(results), ["missed:", *misses] if misses else []))


if __name__ == "__main__":
    main()
