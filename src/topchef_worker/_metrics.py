"""Prometheus metrics and the health endpoints of a running worker.

Metrics need the ``prometheus`` extra (``prometheus-client``); the health endpoints
need nothing.  :class:`MonitoringServer` serves ``/metrics``, ``/healthz`` (200 only
when the worker is healthy) and ``/readyz`` (200 once it serves jobs).
"""

from __future__ import annotations

import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable

from ._stats import WorkerState
from ._worker import Worker
from .events import (
    Event,
    HeartbeatFailed,
    JobClaimed,
    JobCompleted,
    JobFailed,
    JobRequeued,
    PollFailed,
)

__all__ = ["MonitoringServer", "PrometheusMetrics"]


def _is_state(worker: Worker, state: WorkerState) -> Callable[[], float]:
    return lambda: 1.0 if worker.state is state else 0.0


class PrometheusMetrics:
    """Worker metrics in a Prometheus registry, fed by the worker's events.

    Raises ImportError with an install hint when prometheus-client is missing.
    """

    def __init__(self, worker: Worker, registry: Any = None) -> None:
        try:
            import prometheus_client as prometheus
        except ImportError as error:
            raise ImportError(
                "metrics need prometheus-client: pip install 'topchef-worker[prometheus]'"
            ) from error
        self._prometheus = prometheus
        self.registry = registry or prometheus.CollectorRegistry()
        r = self.registry
        self.jobs = prometheus.Counter(
            "topchef_worker_jobs",
            "Jobs finished, by service and outcome.",
            ["service_id", "outcome"],
            registry=r,
        )
        self.duration = prometheus.Histogram(
            "topchef_worker_job_duration_seconds",
            "Time from a job's start to its handler's return.",
            ["service_id"],
            registry=r,
        )
        self.claim_latency = prometheus.Histogram(
            "topchef_worker_claim_latency_seconds",
            "Time from the poll that saw a job to its confirmed claim.",
            ["service_id"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.poll_errors = prometheus.Counter(
            "topchef_worker_poll_errors", "Failed polls and claims.", ["service_id"], registry=r
        )
        self.heartbeat_errors = prometheus.Counter(
            "topchef_worker_heartbeat_errors", "Failed heartbeats.", ["service_id"], registry=r
        )
        in_flight = prometheus.Gauge(
            "topchef_worker_jobs_in_flight", "Claimed jobs not yet delivered.", registry=r
        )
        in_flight.set_function(lambda: worker.stats().in_flight)
        state = prometheus.Gauge(
            "topchef_worker_state", "1 for the worker's current state.", ["state"], registry=r
        )
        for value in WorkerState:
            state.labels(value.value).set_function(_is_state(worker, value))
        worker.add_listener(self.observe)

    def observe(self, event: Event) -> None:
        """Update the metrics from one worker event."""
        if isinstance(event, JobCompleted):
            self.jobs.labels(event.service_id, "completed").inc()
            self.duration.labels(event.service_id).observe(event.duration)
        elif isinstance(event, JobFailed):
            outcome = "failed" if event.delivered else "undelivered"
            self.jobs.labels(event.service_id, outcome).inc()
            self.duration.labels(event.service_id).observe(event.duration)
        elif isinstance(event, JobRequeued):
            self.jobs.labels(event.service_id, "requeued").inc()
        elif isinstance(event, JobClaimed):
            self.claim_latency.labels(event.service_id).observe(event.claim_latency)
        elif isinstance(event, PollFailed):
            self.poll_errors.labels(event.service_id).inc()
        elif isinstance(event, HeartbeatFailed):
            self.heartbeat_errors.labels(event.service_id).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return self._prometheus.generate_latest(self.registry), self._prometheus.CONTENT_TYPE_LATEST


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = False
    block_on_close = True


class MonitoringServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` for one worker, on its own thread."""

    def __init__(
        self,
        worker: Worker,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        metrics: PrometheusMetrics | None = None,
    ) -> None:
        self.worker = worker
        self.metrics = metrics
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, content_type, body = owner.answer(self.path.split("?", 1)[0])
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = _Server((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body for a GET of *path*."""
        if path == "/metrics":
            if self.metrics is None:
                return (
                    503,
                    "text/plain",
                    b"metrics need: pip install 'topchef-worker[prometheus]'\n",
                )
            body, content_type = self.metrics.render()
            return 200, content_type, body
        if path in ("/healthz", "/readyz"):
            health = self.worker.health()
            ok = health.healthy if path == "/healthz" else health.ready
            report = {
                "state": health.state.value,
                "healthy": health.healthy,
                "ready": health.ready,
                "in_flight": health.in_flight,
                "reasons": list(health.reasons),
            }
            return (200 if ok else 503), "application/json", json.dumps(report).encode()
        return 404, "text/plain", b"not found\n"

    def start(self) -> MonitoringServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="topchef-monitoring",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
