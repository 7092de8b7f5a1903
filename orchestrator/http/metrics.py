"""/metrics in Prometheus text format, built from live state at scrape time.

A custom collector reads the server's counters, the model and the supervisor's snapshot when
Prometheus scrapes; nothing on the hot path touches a metric object.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..asgi import Receive, Scope, Send
from .responses import respond

if TYPE_CHECKING:
    from ..server import App

WORKER_STATES = ("STARTING", "RUNNING", "BACKOFF", "STOPPING", "STOPPED", "EXITED", "FATAL")


class OrchestratorCollector:
    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        app, stats = self.app, self.app.stats
        yield _gauge("orchestrator_connections", "Open Socket.IO connections", len(app.conns))
        yield _counter("orchestrator_connections_total", "Socket.IO connections accepted",
                       stats.connections_total)
        yield _gauge("orchestrator_users", "Logged-in users", len(app.model.users))
        sessions = GaugeMetricFamily("orchestrator_sessions", "Sessions by protocol", labels=["protocol"])
        by_protocol: dict[str, int] = {}
        for session in app.model.sessions.values():
            by_protocol[session.protocol] = by_protocol.get(session.protocol, 0) + 1
        for protocol, count in sorted(by_protocol.items()):
            sessions.add_metric([protocol], count)
        yield sessions
        yield _gauge("orchestrator_draining", "1 while draining after SIGTERM", int(app.draining))
        commands = CounterMetricFamily("orchestrator_commands", "Commands answered, by name and error code",
                                       labels=["command", "code"])
        for (name, code), count in sorted(stats.commands.items()):
            commands.add_metric([name, str(code)], count)
        yield commands
        yield _labelled_counter("orchestrator_events_in", "Events without ack received, by name", "event",
                                stats.events_in)
        yield _labelled_counter("orchestrator_events_out", "Events emitted per recipient, by name", "event",
                                stats.events_out)
        yield _counter("orchestrator_data_bytes_in", "SendData payload bytes received", stats.bytes_in)
        yield _counter("orchestrator_data_frames_in", "SendData frames received", stats.data_frames_in)
        yield _counter("orchestrator_data_frames_out", "DataReceived frames queued per recipient",
                       stats.data_frames_out)
        yield _counter("orchestrator_data_bytes_out", "DataReceived payload bytes queued per recipient",
                       stats.data_bytes_out)
        yield _labelled_counter("orchestrator_data_frames_dropped", "Data frames dropped, by reason",
                                "reason", stats.data_dropped)
        yield _labelled_counter("orchestrator_rejected_inputs", "Inputs refused or dropped, by reason",
                                "reason", stats.rejected)
        watch = app.loopwatch
        yield _gauge("orchestrator_event_loop_lag_seconds", "Latest event-loop lag", watch.lag_s)
        yield _gauge("orchestrator_event_loop_lag_max_seconds", "Largest event-loop lag since start",
                     watch.max_lag_s)
        yield _counter("orchestrator_gc_pause_seconds", "Time spent in garbage collection",
                       watch.gc_pause_s_total)
        yield _counter("orchestrator_gc_collections", "Garbage collections", watch.gc_collections)
        yield from _worker_metrics(app.streams.snapshot().get("workers", []))


def _worker_metrics(workers: list[dict[str, Any]]) -> Iterator[Metric]:
    state = GaugeMetricFamily("orchestrator_worker_state", "1 for the worker's current state",
                              labels=["worker", "kind", "state"])
    per_worker = ["worker", "kind"]
    restarts = CounterMetricFamily("orchestrator_worker_restarts", "Worker restarts", labels=per_worker)
    cpu = GaugeMetricFamily("orchestrator_worker_cpu_percent", "Worker CPU use", labels=per_worker)
    rss = GaugeMetricFamily("orchestrator_worker_rss_bytes", "Worker resident memory", labels=per_worker)
    sessions = GaugeMetricFamily("orchestrator_worker_sessions", "Sessions placed on the worker",
                                 labels=per_worker)
    own = GaugeMetricFamily("orchestrator_worker_stat", "Numeric values of the worker's own /stats",
                            labels=["worker", "kind", "stat"])
    for worker in workers:
        labels = [str(worker.get("name", "")), str(worker.get("kind", ""))]
        for name in WORKER_STATES:
            state.add_metric([*labels, name], 1 if worker.get("state") == name else 0)
        restarts.add_metric(labels, worker.get("restarts", 0) or 0)
        cpu.add_metric(labels, worker.get("cpu_percent", 0) or 0)
        rss.add_metric(labels, worker.get("rss_bytes", 0) or 0)
        sessions.add_metric(labels, len(worker.get("sessions", ()) or ()))
        for key, value in _numbers(worker.get("stats") or {}):
            own.add_metric([*labels, key], value)
    yield from (state, restarts, cpu, rss, sessions, own)


def _numbers(stats: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """Flatten a worker's /stats JSON into (dotted.key, number) pairs."""
    for key, value in stats.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            yield name, value
        elif isinstance(value, dict):
            yield from _numbers(value, name + ".")


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _labelled_counter(name: str, doc: str, label: str, counts: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, count in sorted(counts.items()):
        family.add_metric([key], count)
    return family


def registry_for(app: App) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OrchestratorCollector(app))  # type: ignore[arg-type]
    return registry


async def metrics(app: App, scope: Scope, receive: Receive, send: Send) -> None:
    await respond(send, 200, generate_latest(app.metrics_registry), CONTENT_TYPE_LATEST)
