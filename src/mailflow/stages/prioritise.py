"""Stage ``prioritise``: score words, senders and automatic mail as triage signals.

Terms are matched in the decoded Subject and text, case- and
accent-insensitive, on word boundaries, with ``*`` for prefixes ("urgen*")
and optional regular expressions (matched on the same folded text, where line
breaks are spaces; accents in a pattern are ignored too). A term found in the
Subject counts ``subject_factor`` times. Senders (VIP addresses or
``@domain``; for a web form, the customer it names) and automatic mail
(``ctx.automatic``: lists, bulk, auto-replies, bounces, whatever sign the
rules' ``automatic:`` section says) add weights too. Each is one signal
(``ctx.add_signal``, :mod:`mailflow.triage`): other stages and plugins add
theirs, and the sum maps to ``urgent``, ``high``, ``normal`` or ``low``
through the thresholds this stage provides to the chain (service
``TRIAGE_SCALE``).

The context then carries ``X-Mailflow-Priority`` and ``X-Mailflow-Score``
and ``ctx.triage`` (the acknowledgement's promised answer time and escalation
use them), and the case records the priority at the end of the chain.

Configuration (rules section ``prioritise``)::

    prioritise:
      thresholds: {urgent: 10, high: 5, normal: 0}   # below normal: low
      subject_factor: 2
      rules:
        - name: legal
          weight: 6
          terms: ["litige", "mise en demeure", "avocat*"]
          regex: ['\\bLRAR\\b']
      senders: {"director@bigclient.fr": 5, "@bigclient.fr": 2}
      bulk_weight: -20          # automatic mail: lists, bulk, auto-replies, bounces

Metrics: ``mailflow_priority_total{level}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import Field, field_validator, model_validator

from mailflow.config import Model
from mailflow.hookspecs import hookimpl
from mailflow.services import TRIAGE_SCALE, Services
from mailflow.stage import (
    Direction,
    KnownLabels,
    MessageContext,
    Signal,
    Stage,
    StageEnv,
    StageOptions,
)
from mailflow.textmatch import compile_regexes, flat_parts, fold, parse_term
from mailflow.triage import Scale
from mailflow.values import PRIORITIES

LEVELS = PRIORITIES
#: the rules' ``thresholds:`` are the triage scale
Thresholds = Scale


class ScoreRule(Model):
    name: str
    weight: float
    terms: tuple[str, ...] = ()
    regex: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _something(self) -> ScoreRule:
        if not self.terms and not self.regex:
            raise ValueError(f"rule '{self.name}' needs terms or regex")
        for term in self.terms:
            parse_term(term)
        compile_regexes((self.name, r) for r in self.regex)
        return self


class PrioritiseOptions(StageOptions):
    thresholds: Thresholds = Thresholds()
    subject_factor: float = Field(2.0, ge=0)
    rules: tuple[ScoreRule, ...] = ()
    senders: dict[str, float] = Field(default_factory=dict)
    bulk_weight: float = -20.0

    @field_validator("rules")
    @classmethod
    def _unique(cls, value: tuple[ScoreRule, ...]) -> tuple[ScoreRule, ...]:
        names = [rule.name for rule in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:  # each rule counts once: two rules of one name would count as one
            raise ValueError(f"rule name(s) used twice: {', '.join(twice)}")
        return value

    @field_validator("senders")
    @classmethod
    def _lower(cls, value: dict[str, float]) -> dict[str, float]:
        return {k.lower(): v for k, v in value.items()}


class PrioritiseStage(Stage[PrioritiseOptions]):
    name = "prioritise"
    description = "score keywords, senders and bulk headers; set the priority level"
    directions = frozenset({Direction.INBOUND})

    def __init__(self, options: PrioritiseOptions, env: StageEnv) -> None:
        super().__init__(options, env)
        terms = [parse_term(t, rule.name, rule.weight) for rule in options.rules
                 for t in rule.terms]
        self.matcher = env.terms.matcher(terms)  # one automaton for every stage's terms
        self.regexes = [(rule, pattern) for rule in options.rules
                        for _, pattern in compile_regexes((rule.name, r) for r in rule.regex)]
        self.counter = env.metrics.counter("mailflow_priority_total",
                                           "Messages by priority level", ["level"])

    def provide(self, services: Services) -> None:
        services.provide(TRIAGE_SCALE, self.options.thresholds, self.name)

    def known_labels(self) -> Iterable[KnownLabels]:
        return [KnownLabels.of("mailflow_priority_total", level=LEVELS)]

    def signals(self, ctx: MessageContext) -> tuple[list[Signal], dict[str, float]]:
        """One signal per rule (at its best place: a term in the Subject counts
        ``subject_factor`` times), per listed sender, and for automatic mail; and every
        match, for ``mailflow try`` (what matched -> points)."""
        subject, text = flat_parts(ctx)  # folded, line breaks made spaces
        found_subject, found_text = self.matcher.find_parts(ctx)
        best: dict[str, tuple[float, str]] = {}
        parts: dict[str, float] = {}

        def hit(rule: str, points: float, what: str) -> None:
            parts[f"{rule}: {what}"] = points
            if rule not in best or points > best[rule][0]:
                best[rule] = (points, what)

        for where, body, factor, found in (
                ("subject", subject, self.options.subject_factor, found_subject),
                ("text", text, 1.0, found_text)):
            for index in found:
                term = self.matcher.terms[index]
                hit(term.tag, term.weight * factor, f"{term.text} ({where})")
            for rule, pattern in self.regexes:
                if pattern.search(body):
                    hit(rule.name, rule.weight * factor, f"/{pattern.pattern}/ ({where})")
        signals = [Signal(f"keywords:{rule}", points, what)
                   for rule, (points, what) in best.items()]
        sender = ctx.message.envelope.mail_from.lower()
        # the customer behind a web form (found by `number`) counts, not the web server
        keys = dict.fromkeys(k for address in (sender, ctx.customer) if address
                             for k in (address, "@" + address.rpartition("@")[2]))
        for key in keys:
            if key in self.options.senders:
                signals.append(Signal(f"sender:{key}", self.options.senders[key],
                                      "listed sender"))
                parts[f"sender {key}"] = self.options.senders[key]
        if ctx.automatic is not None:
            signals.append(Signal("automatic", self.options.bulk_weight, ctx.automatic.why))
            parts["bulk, list or automatic mail"] = self.options.bulk_weight
        return signals, parts

    async def process(self, ctx: MessageContext) -> None:
        signals, parts = self.signals(ctx)
        triage = ctx.add_signals(signals)
        self.counter.labels(level=triage.priority).inc()
        ctx.note(level=triage.priority, score=triage.score, matched=parts)


@hookimpl(trylast=True)
def mailflow_stages() -> Iterable[type[Stage[Any]]]:
    return [PrioritiseStage]


__all__ = ["LEVELS", "PrioritiseStage", "fold"]
