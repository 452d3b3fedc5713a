"""Prometheus metrics and the /metrics + /healthz endpoint (and the report's pages).

Metrics live on an injected ``CollectorRegistry`` (no module-level globals,
so tests build a fresh one). The endpoint binds to loopback unless told
otherwise; it is served by prometheus_client's own WSGI app on a thread.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler
from prometheus_client.metrics import MetricWrapperBase

if TYPE_CHECKING:
    from mailflow.host import Route

SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                   10, 30, 60)


class Metrics:
    """Every metric the framework exports; plugins add theirs through the `MetricFactory`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.messages = Counter("mailflow_messages_total",
                                "Messages handled after DATA, by final verdict", ["verdict"],
                                registry=r)
        self.directions = Counter("mailflow_messages_by_direction_total",
                                  "Messages after DATA by direction (inbound, reply, internal,"
                                  " passthrough)", ["direction"], registry=r)
        for direction in ("inbound", "reply", "internal", "passthrough"):
            self.directions.labels(direction=direction)
        self.smtp_replies = Counter("mailflow_smtp_replies_total",
                                    "Replies sent to SMTP clients after DATA, by code class",
                                    ["code"], registry=r)
        self.rejections = Counter("mailflow_smtp_rejections_total",
                                  "Commands refused before DATA, by reason", ["reason"],
                                  registry=r)
        self.sessions = Gauge("mailflow_smtp_sessions", "Open SMTP sessions", registry=r,
                              multiprocess_mode="livesum")
        self.stage_seconds = Histogram("mailflow_stage_duration_seconds",
                                       "Time spent in each chain stage", ["stage"],
                                       buckets=SECONDS_BUCKETS, registry=r)
        self.stage_failures = Counter("mailflow_stage_failures_total",
                                      "Stages that raised or timed out", ["stage", "outcome"],
                                      registry=r)
        self.message_seconds = Histogram("mailflow_message_duration_seconds",
                                         "From end of DATA to the reply, per message",
                                         buckets=SECONDS_BUCKETS, registry=r)
        self.relay_seconds = Histogram("mailflow_relay_duration_seconds",
                                       "Time the next hop took per message",
                                       buckets=SECONDS_BUCKETS, registry=r)
        self.relay_results = Counter("mailflow_relay_results_total",
                                     "Next hop answers by code class", ["code"], registry=r)
        self.outbox_sent = Counter("mailflow_outbox_sent_total",
                                   "Mail written by mailflow and accepted by the next hop",
                                   ["kind"], registry=r)
        self.outbox_failures = Counter("mailflow_outbox_failures_total",
                                       "Outbox send attempts that failed", ["kind", "outcome"],
                                       registry=r)
        self.outbox_pending = Gauge("mailflow_outbox_pending",
                                    "Outbox rows waiting to be sent", registry=r,
                                    multiprocess_mode="livemax")
        self.outbox_oldest_age = Gauge("mailflow_outbox_oldest_age_seconds",
                                       "Age of the oldest outbox row waiting to be sent"
                                       " (0 when none waits)", registry=r,
                                       multiprocess_mode="livemax")
        self.scheduler_heartbeat = Gauge("mailflow_scheduler_heartbeat_timestamp_seconds",
                                         "Unix time of the scheduler's last pass (a stalled"
                                         " scheduler's grows old)", registry=r,
                                         multiprocess_mode="livemax")
        self.timers_fired = Counter("mailflow_timers_fired_total",
                                    "Timers whose handler ran and whose effects committed",
                                    ["kind"], registry=r)
        self.timer_failures = Counter("mailflow_timer_failures_total",
                                      "Timer handler runs that failed (nothing committed)",
                                      ["kind"], registry=r)
        self.timers_due = Gauge("mailflow_timers_due", "Active timers due now, not yet fired",
                                registry=r, multiprocess_mode="livemax")
        self.scheduler_lag = Gauge("mailflow_scheduler_lag_seconds",
                                   "How long the oldest due timer with a handler has waited"
                                   " to fire", registry=r, multiprocess_mode="livemax")
        self.timers_unhandled = Gauge("mailflow_timers_unhandled",
                                      "Due timers of a kind no plugin handles (left active)",
                                      registry=r, multiprocess_mode="livemax")
        self.store_errors = Counter("mailflow_store_errors_total",
                                    "Store operations that failed", registry=r)
        self.reloads = Counter("mailflow_config_reloads_total",
                               "Configuration reloads by result", ["result"], registry=r)
        self.up = Gauge("mailflow_healthy", "1 when the daemon can accept mail", registry=r,
                        multiprocess_mode="livemin")
        self.mode = Gauge("mailflow_mode_info", "1 for the mode the daemon runs in: live, or"
                          " shadow (the mail relayed as received, decisions recorded apart)",
                          ["mode"], registry=r, multiprocess_mode="livemax")


@dataclass(frozen=True)
class KnownLabels:
    """Values a metric's labels are known to take before their first event (the rules'
    routes, a stage's reasons): each of their series is exported at 0 from the start, so
    a dashboard shows 0 rather than "No data". Several declarations of one metric add
    up, label by label; the series started are every combination of the known values."""

    metric: str
    values: Mapping[str, tuple[str, ...]]

    @classmethod
    def of(cls, metric: str, **values: Iterable[str]) -> KnownLabels:
        """``KnownLabels.of("mailflow_routed_total", route=["sav", "sales"])``."""
        return cls(metric, {label: tuple(dict.fromkeys(str(v) for v in given))
                            for label, given in values.items()})


class MetricFactory:
    """Hands stages their metrics on the daemon's registry, once per name.

    Stages are rebuilt on every reload; asking again for a metric returns
    the one already registered instead of failing as a duplicate. It also keeps the
    label values declared known (:class:`KnownLabels`) and starts their series at 0,
    on the metrics made already and on those made later.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._made: dict[str, Any] = {}
        #: metric -> label -> its known values (insertion-ordered)
        self._known: dict[str, dict[str, dict[str, None]]] = {}

    def _get(self, kind: type[Any], name: str, documentation: str,
             labels: Sequence[str], **kwargs: Any) -> Any:
        if not name.startswith("mailflow_"):
            raise ValueError(f"metric names begin with mailflow_: {name}")
        metric = self._made.get(name)
        if metric is None:
            metric = kind(name, documentation, list(labels), registry=self.registry, **kwargs)
            self._made[name] = metric
            self._start(name)  # a mistake is reported by the next ``declare``
        return metric

    def adopt(self, metrics: Iterable[object]) -> None:
        """Make the framework's own metrics (:class:`Metrics`) known by name, so that
        declarations may name them too (an outbox kind a stage writes)."""
        for metric in metrics:
            if isinstance(metric, MetricWrapperBase):
                (family,) = metric.describe()
                name = family.name + ("_total" if family.type == "counter" else "")
                self._made.setdefault(name, metric)

    def declare(self, known: Iterable[KnownLabels]) -> list[str]:
        """Add ``known`` to the label values known, and start at 0 every series of them
        on the metrics made; the mistakes (a label a metric does not have), one line each.
        A metric not made yet gets its series when it is."""
        for item in known:
            labels = self._known.setdefault(item.metric, {})
            for label, values in item.values.items():
                labels.setdefault(label, {}).update(dict.fromkeys(values))
        return [problem for name in self._known if name in self._made
                for problem in [self._start(name)] if problem]

    def known(self, name: str) -> dict[str, tuple[str, ...]]:
        """label -> the values declared known for metric ``name``."""
        return {label: tuple(values) for label, values in self._known.get(name, {}).items()}

    def _start(self, name: str) -> str | None:
        labels = self._known.get(name)
        if not labels:
            return None
        names = list(labels)
        try:
            for values in itertools.product(*(labels[label] for label in names)):
                self._made[name].labels(**dict(zip(names, values, strict=True)))
        except ValueError as exc:  # labels the metric has not (or not all of them)
            return f"{name}: known values of {', '.join(names)}: {exc}"
        return None

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return self._get(Counter, name, documentation, labels)  # type: ignore[no-any-return]

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = (),
              multiprocess_mode: str = "all") -> Gauge:
        """``multiprocess_mode``: how workers' values add up (``livemax``: a figure every
        worker reads from the store)."""
        return self._get(Gauge, name, documentation,  # type: ignore[no-any-return]
                         labels, multiprocess_mode=multiprocess_mode)

    def histogram(self, name: str, documentation: str, labels: Sequence[str] = (),
                  buckets: Sequence[float] = SECONDS_BUCKETS) -> Histogram:
        return self._get(Histogram, name, documentation,  # type: ignore[no-any-return]
                         labels, buckets=tuple(buckets))


HealthCheck = Callable[[], tuple[bool, str]]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def exposition_registry(registry: CollectorRegistry) -> CollectorRegistry:
    """What /metrics shows: this process's registry, or every worker's in multiprocess mode."""
    if not os.environ.get(MULTIPROC_ENV):
        return registry
    from prometheus_client import multiprocess

    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
    return merged


def worker_exited(pid: int) -> None:
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _route_app(routes: Sequence[Route]) -> Callable[[str], Route | None]:
    """The route of a path: an exact one, else the longest ending in ``/`` that the path
    lies under."""
    exact = {r.path: r for r in routes if not r.path.endswith("/")}
    prefixes = sorted((r for r in routes if r.path.endswith("/")),
                      key=lambda r: len(r.path), reverse=True)

    def find(path: str) -> Route | None:
        if path in exact:
            return exact[path]
        return next((r for r in prefixes if path.startswith(r.path)), None)

    return find


def serve_http(address: tuple[str, int], registry: CollectorRegistry,
               health: HealthCheck, routes: Sequence[Route] = ()) -> WSGIServer:
    """Serve /metrics and /healthz on ``address`` from a daemon thread, with the plugins'
    ``routes`` (the report's); any other path is answered 404."""
    metrics_app = make_wsgi_app(registry)
    page_for = _route_app(routes)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            ok, detail = health()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "text/plain; charset=utf-8")])
            return [f"{'ok' if ok else 'unhealthy'}: {detail}\n".encode()]
        route = page_for(path)
        if route is not None:
            method = str(environ.get("REQUEST_METHOD", "GET")).upper()
            if method not in {m.upper() for m in route.methods}:
                start_response("405 Method Not Allowed",
                               [("Content-Type", "text/plain; charset=utf-8"),
                                ("Allow", ", ".join(route.methods))])
                return [f"{method} is not served at {path}\n".encode()]
            return route.app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: /metrics, /healthz and the plugins' pages are served here\n"]

    host, port = address
    server_class = ThreadingWSGIServer
    if ":" in host:
        import socket

        class V6Server(ThreadingWSGIServer):
            address_family = socket.AF_INET6

        server_class = V6Server
    server = make_server(host, port, app, server_class, handler_class=_SilentHandler)
    thread = threading.Thread(target=server.serve_forever, name="mailflow-metrics", daemon=True)
    thread.start()
    return server
