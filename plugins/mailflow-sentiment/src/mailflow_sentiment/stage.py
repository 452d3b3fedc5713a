"""Stage ``sentiment``: each customer message scored, on the customer's own words.

Runs for inbound mail (new cases and follow-ups), after ``prioritise`` and before
``route``: it reads ``ctx.customer_text`` (no quoted reply, signature or disclaimer)
in ``ctx.language`` (French or English; the section's ``default_language`` when the
guess is unsure, other languages not scored), and asks for:

- the internal header ``X-Mailflow-Sentiment: negative; score=-0.62`` (an
  ``X-Mailflow-*`` header: the framework never lets it reach an outside recipient);
- the triage signal ``sentiment`` (``weight`` points for a negative message,
  ``positive_weight`` for a positive one): the priority, its headers and the case's
  recorded priority follow;
- when the case settles (``CaseSettled``, end of the chain: its route is known), a row
  in ``sentiment_moods`` (undone if the next hop refuses the message) and one count
  of ``mailflow_sentiment_messages_total{route, label}``.

Automatic mail, copies of a message already seen and mail without a case are not
scored. A failure skips the stage: a mood is never worth a customer's mail.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any

from mailflow.plugin import (
    CaseEvent,
    CaseSettled,
    Direction,
    Effects,
    Listener,
    MessageContext,
    Stage,
    StageEnv,
    StashKey,
)
from mailflow_sentiment import store
from mailflow_sentiment.options import SentimentOptions
from mailflow_sentiment.scoring import SCORED_LANGUAGES, Mood, score_text, warm_up

HEADER = "X-Mailflow-Sentiment"
#: the one metric the plugin exports (its dashboard reads nothing else)
METRIC = "mailflow_sentiment_messages_total"
SIGNAL = "sentiment"
#: the mood of the message in hand, from the stage to its listener
MOOD = StashKey[Mood]()


class SentimentStage(Stage[SentimentOptions]):
    name = "sentiment"
    description = "score the customer's mood; a negative message can raise its priority"
    directions = frozenset({Direction.INBOUND})
    on_error = "skip"

    def __init__(self, options: SentimentOptions, env: StageEnv) -> None:
        super().__init__(options, env)
        self.counter = env.metrics.counter(
            METRIC,
            "Customer messages scored by the sentiment plugin, by route and mood",
            ["route", "label"])
        warm_up()  # the lexicons load now (~0.2 s), not in the first customer's message

    def listeners(self) -> Iterable[tuple[type[CaseEvent], Listener]]:
        return [(CaseSettled, self.settled)]

    async def process(self, ctx: MessageContext) -> None:
        case = ctx.case
        if ctx.automatic is not None or case is None or case.status.is_duplicate:
            ctx.note(scored=False)
            return
        language = language_of(ctx, self.options.default_language)
        if language is None:
            ctx.note(scored=False, language=ctx.language.code)
            return
        mood = score_text(ctx.customer_text, language)
        ctx.stash[MOOD] = mood
        ctx.set_header(HEADER, mood.header())
        weight = {"negative": self.options.weight,
                  "positive": self.options.positive_weight}.get(mood.label, 0.0)
        if weight:
            ctx.add_signal(SIGNAL, weight, f"{mood.label} mood (score {mood.score:.2f})")
        ctx.note(mood=mood.label, score=mood.score, language=language, cues=list(mood.why))

    def settled(self, ctx: Effects, event: CaseSettled) -> None:
        """The message ended its chain on ``event.route``: recorded and counted."""
        if not isinstance(ctx, MessageContext) or MOOD not in ctx.stash:
            return
        mood = ctx.stash[MOOD]
        route = event.route or "none"
        self.counter.labels(route=route, label=mood.label).inc()
        ctx.write(partial(store.record, case=event.number, queue_id=ctx.queue_id, route=route,
                          label=mood.label, score=mood.score, language=mood.language,
                          sentence=mood.sentence if mood.label == "negative" else "",
                          at=ctx.received_at),
                  undo=partial(store.forget, queue_id=ctx.queue_id))


def language_of(ctx: MessageContext, default: str) -> str | None:
    """The language to score ``ctx`` in: its guess, ``default`` when unsure, None when
    it is one the plugin does not score."""
    code = ctx.language.code
    if code is None:
        return default
    return code if code in SCORED_LANGUAGES else None


def stages() -> list[type[Stage[Any]]]:
    return [SentimentStage]
