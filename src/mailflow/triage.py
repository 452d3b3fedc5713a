"""Triage as signals: the priority is the sum of scored signals, mapped onto a scale.

Any stage or plugin adds a signal (``ctx.add_signal("vip", 5, "listed domain")``):
keywords, senders and automatic mail today (the ``prioritise`` stage), a
customer's mood or a VIP list tomorrow. The context keeps the triage, its
``X-Mailflow-Priority``/``X-Mailflow-Score`` headers and the case's recorded
priority in step; nobody assigns a level by hand. The scale is the
``prioritise`` stage's thresholds when it runs (service ``TRIAGE_SCALE``),
else the defaults below.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import model_validator

from mailflow.config import Model
from mailflow.values import Priority


class Scale(Model):
    """Score thresholds, going down: at or above ``urgent`` is urgent… below ``normal``
    is low."""

    urgent: float = 10
    high: float = 5
    normal: float = 0

    @model_validator(mode="after")
    def _ordered(self) -> Scale:
        if not self.urgent > self.high > self.normal:
            raise ValueError("thresholds must go down: urgent > high > normal")
        return self

    def level(self, score: float) -> Priority:
        if score >= self.urgent:
            return "urgent"
        if score >= self.high:
            return "high"
        if score >= self.normal:
            return "normal"
        return "low"


DEFAULT_SCALE = Scale()


@dataclass(frozen=True)
class Signal:
    """One reason to raise (or lower) a message's priority: a name (each counts once: a
    second signal of one name replaces the first), its points and what was seen."""

    name: str
    weight: float
    why: str = ""


@dataclass(frozen=True)
class Triage:
    """The priority level, its score and the signals that make it."""

    priority: Priority
    score: float = 0.0
    signals: tuple[Signal, ...] = ()

    @classmethod
    def of(cls, signals: Iterable[Signal], scale: Scale = DEFAULT_SCALE) -> Triage:
        kept = tuple({s.name: s for s in signals}.values())
        score = sum(s.weight for s in kept)
        return cls(scale.level(score), score, kept)

    def adding(self, signals: Iterable[Signal], scale: Scale = DEFAULT_SCALE) -> Triage:
        """This triage with ``signals`` added (or replacing those of the same names)."""
        return Triage.of((*self.signals, *signals), scale)
