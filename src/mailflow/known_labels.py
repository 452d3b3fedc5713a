"""Series that start at zero: the label values the configuration makes known.

A labelled series appears at its first event; until then a dashboard panel says "No
data", and a rate needs a sample before the event to see it. Prometheus'
instrumentation practice is to start every series whose label values are known in
advance at 0. Three parties know them, and declare them the same way
(:class:`~mailflow.metrics.KnownLabels`):

- the framework, for its own metrics: verdicts, directions, SMTP reply classes,
  refusals, next-hop answers, its own outbox kinds and outcomes, the chain's stages,
  the timer kinds some plugin handles, reload results (:func:`framework_labels`);
- each stage of the chain, built-in or third-party, through
  :meth:`~mailflow.stage.Stage.known_labels` (routes, priorities, reasons, rules…);
- each plugin, for its metrics outside a stage (SMTP hooks, timers, housekeeping),
  through the ``mailflow_known_labels`` hook.

The daemon gathers them when it starts and at each reload (new routes appear), and
its metric factory starts the series (:meth:`~mailflow.metrics.MetricFactory.declare`).
A series once started stays (a counter never goes back), so a route a reload removed
keeps its last value.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, cast

import structlog

from mailflow.metrics import KnownLabels
from mailflow.values import Direction, Verdict

if TYPE_CHECKING:
    from mailflow.host import Host
    from mailflow.runtime import Runtime

log = structlog.get_logger("mailflow.metrics")

#: a message's outcome when the next hop refused it or could not be reached (besides
#: the chain's verdicts)
DOWNSTREAM = ("rejected-downstream", "tempfail-downstream")
#: the classes of the replies SMTP clients get, and of the next hop's answers
REPLY_CLASSES = ("2xx", "4xx", "5xx")
#: why a command is refused before DATA (``mailflow_smtp_rejections_total``)
REFUSALS = ("connect", "helo", "xforward", "bad_address", "mail_from", "too_many_recipients",
            "relay_denied", "rcpt_to")
#: the mail the framework itself writes: a copy retried for recipients the next hop
#: deferred, and a delivery report
OUTBOX_KINDS = ("relay", "bounce")
OUTBOX_OUTCOMES = ("retry", "failed")
#: how a stage fails (the whole chain's timeout is counted as the stage ``chain``)
STAGE_FAILURES = ("error", "timeout")
RELOAD_RESULTS = ("ok", "failed")


def framework_labels(runtime: Runtime) -> list[KnownLabels]:
    """The framework's own metrics' known label values, for the configuration ``runtime``."""
    stages = list(runtime.chain.names)
    kinds = sorted(runtime.timer_handlers)
    of = KnownLabels.of
    return [
        of("mailflow_messages_total", verdict=[*(v.value for v in Verdict), *DOWNSTREAM]),
        of("mailflow_messages_by_direction_total", direction=[d.value for d in Direction]),
        of("mailflow_smtp_replies_total", code=REPLY_CLASSES),
        of("mailflow_relay_results_total", code=REPLY_CLASSES),
        of("mailflow_smtp_rejections_total", reason=REFUSALS),
        of("mailflow_stage_duration_seconds", stage=stages),
        of("mailflow_stage_failures_total", stage=[*stages, "chain"], outcome=STAGE_FAILURES),
        of("mailflow_outbox_sent_total", kind=OUTBOX_KINDS),
        of("mailflow_outbox_failures_total", kind=OUTBOX_KINDS, outcome=OUTBOX_OUTCOMES),
        of("mailflow_timers_fired_total", kind=kinds),
        of("mailflow_timer_failures_total", kind=kinds),
        of("mailflow_config_reloads_total", result=RELOAD_RESULTS),
    ]


def declared_labels(runtime: Runtime, host_for: Callable[[str], Host]) -> Iterator[KnownLabels]:
    """Everything known of ``runtime``: the framework's, each stage's, each plugin's
    (``host_for(plugin)``: its view of the daemon). A stage or plugin that fails here
    is logged and skipped: a metric's zero is never worth a failed start."""
    yield from framework_labels(runtime)
    for stage in runtime.chain.stages:
        try:
            yield from list(stage.known_labels())
        except Exception:
            log.exception("known_labels_failed", stage=stage.name)
    for impl in runtime.pm.hook.mailflow_known_labels.get_hookimpls():
        name = impl.plugin_name
        if inspect.iscoroutinefunction(impl.function):
            log.error("known_labels_failed", plugin=name,
                      error="mailflow_known_labels must be a plain function")
            continue
        given: dict[str, object] = {"host": host_for(name),
                                    "options": runtime.plugin_options.get(name)}
        try:
            found = impl.function(**{arg: given[arg] for arg in impl.argnames})
            yield from list(cast("Iterable[KnownLabels]", found or ()))
        except Exception:
            log.exception("known_labels_failed", plugin=name)
