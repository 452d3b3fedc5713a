"""Stage ``prioritise``: score words, senders and headers; map the score to a level.

Terms are matched in the decoded Subject and text, case- and
accent-insensitive, on word boundaries, with ``*`` for prefixes ("urgen*")
and optional regular expressions (matched on the same folded text, where line
breaks are spaces; accents in a pattern are ignored too). A term found in the
Subject counts ``subject_factor`` times. Senders (VIP addresses or
``@domain``; for a web form, the customer it names) and bulk or list mail
(``Precedence``, ``List-*``, auto-replies) add weights too. The score maps
to ``urgent``, ``high``, ``normal`` or ``low`` through thresholds.

Adds ``X-Mailflow-Priority`` and ``X-Mailflow-Score``; sets the ``priority``
and ``score`` attributes (the acknowledgement's promised answer time and
escalation use them) and records the priority on the case.

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
      bulk_weight: -20          # lists, bulk, auto-replies

Metrics: ``mailflow_priority_total{level}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any

from pydantic import Field, field_validator, model_validator

from mailflow import autoreply, cases
from mailflow.config import Model
from mailflow.hookspecs import hookimpl
from mailflow.stage import Direction, MessageContext, Stage, StageEnv, StageOptions, Triage
from mailflow.store import Transaction
from mailflow.textmatch import compile_regexes, flat_parts, fold, parse_term
from mailflow.values import PRIORITIES, Priority

LEVELS = PRIORITIES


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


class Thresholds(Model):
    urgent: float = 10
    high: float = 5
    normal: float = 0

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
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

    def score(self, ctx: MessageContext) -> tuple[float, dict[str, float]]:
        """The score and what it is made of (rule or reason -> points)."""
        subject, text = flat_parts(ctx)  # folded, line breaks made spaces
        found_subject, found_text = self.matcher.find_parts(ctx)
        parts: dict[str, float] = {}
        hits: dict[str, float] = {}
        for where, body, factor, found in (
                ("subject", subject, self.options.subject_factor, found_subject),
                ("text", text, 1.0, found_text)):
            for index in found:
                term = self.matcher.terms[index]
                hits[term.tag] = max(hits.get(term.tag, 0.0), term.weight * factor)
                parts_key = f"{term.tag}: {term.text} ({where})"
                parts[parts_key] = term.weight * factor
            for rule, pattern in self.regexes:
                if pattern.search(body):
                    hits[rule.name] = max(hits.get(rule.name, 0.0), rule.weight * factor)
                    parts[f"{rule.name}: /{pattern.pattern}/ ({where})"] = rule.weight * factor
        score = sum(hits.values())  # each rule counts once, at its best place
        sender = ctx.message.envelope.mail_from.lower()
        # the customer behind a web form (found by `number`) counts, not the web server
        customer = ctx.customer
        keys = dict.fromkeys(k for address in (sender, customer) if address
                             for k in (address, "@" + address.rpartition("@")[2]))
        for key in keys:
            if key in self.options.senders:
                score += self.options.senders[key]
                parts[f"sender {key}"] = self.options.senders[key]
        if autoreply.robot_headers(ctx.message) or not sender:
            score += self.options.bulk_weight
            parts["bulk, list or automatic mail"] = self.options.bulk_weight
        return score, parts

    async def process(self, ctx: MessageContext) -> None:
        score, parts = self.score(ctx)
        level = self.options.thresholds.level(score)
        ctx.triage = Triage(priority=level, score=score)
        ctx.set_header("X-Mailflow-Priority", level)
        ctx.set_header("X-Mailflow-Score", f"{score:g}")
        if ctx.case is not None and ctx.case.status.from_customer:
            ctx.write(partial(_raise_priority, number=ctx.case.number, level=level))
        self.counter.labels(level=level).inc()
        ctx.note(level=level, score=score, matched=parts)


def _raise_priority(tx: Transaction, *, number: str, level: str) -> None:
    """A follow-up may make a case more urgent, never less."""
    row = cases.get_case(tx, number)
    if row is not None and (row.priority is None
                            or LEVELS.index(level) < LEVELS.index(row.priority)):
        cases.update_case(tx, number, priority=level)


@hookimpl(trylast=True)
def mailflow_stages() -> Iterable[type[Stage[Any]]]:
    return [PrioritiseStage]


__all__ = ["LEVELS", "PrioritiseStage", "fold"]
