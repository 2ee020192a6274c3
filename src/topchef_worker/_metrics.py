"""Prometheus metrics and the health endpoints of a running worker.

Metrics need the ``prometheus`` extra (``prometheus-client``); the health endpoints
need nothing.  :class:`MonitoringServer` serves ``/metrics``, ``/healthz`` (liveness:
200 while this process works, TopChef outages included) and ``/readyz`` (readiness:
200 while the worker can take jobs).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from ._lease import ServiceRole
from ._stats import WorkerState
from ._worker import Worker
from .events import (
    Event,
    HeartbeatFailed,
    JobClaimed,
    JobCompleted,
    JobFailed,
    JobRequeued,
    JobRetrying,
    PollFailed,
    RoleChanged,
)

__all__ = ["MonitoringServer", "PrometheusMetrics"]

_log = logging.getLogger("topchef_worker")


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
        self.retries = prometheus.Counter(
            "topchef_worker_job_retries",
            "Handler attempts started again after an error in retry_on.",
            ["service_id"],
            registry=r,
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
        self.role = prometheus.Gauge(
            "topchef_worker_service_role",
            "1 for each service's role: active, standby (another worker serves it) or shared.",
            ["service_id", "role"],
            registry=r,
        )
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
        elif isinstance(event, JobRetrying):
            self.retries.labels(event.service_id).inc()
        elif isinstance(event, JobRequeued):
            self.jobs.labels(event.service_id, "requeued").inc()
        elif isinstance(event, JobClaimed):
            self.claim_latency.labels(event.service_id).observe(event.claim_latency)
        elif isinstance(event, PollFailed):
            self.poll_errors.labels(event.service_id).inc()
        elif isinstance(event, HeartbeatFailed):
            self.heartbeat_errors.labels(event.service_id).inc()
        elif isinstance(event, RoleChanged):
            for role in ServiceRole:
                self.role.labels(event.service_id, role.value).set(
                    1.0 if role is event.role else 0.0
                )

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return self._prometheus.generate_latest(self.registry), self._prometheus.CONTENT_TYPE_LATEST


class _Server(socketserver.ThreadingTCPServer):
    """A threading HTTP server whose open connections can be ended at stop.

    A client may hold a connection open without sending a request (a scraper that
    connects ahead of time, a load balancer's TCP check); its handler thread then
    blocks reading.  :meth:`end_connections` shuts those sockets down so the threads
    finish, and waits for them only so long: they are daemons, so one stuck client
    cannot keep the process alive.
    """

    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False  # end_connections joins the threads, with a bound

    def __init__(
        self,
        address: tuple[Any, ...],
        family: socket.AddressFamily,
        handler: type[BaseHTTPRequestHandler],
    ) -> None:
        self.address_family = family
        self._lock = threading.Lock()
        self._open: dict[socket.socket, threading.Thread] = {}
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="topchef-monitoring-request",
            daemon=True,
        )
        with self._lock:
            self._open[request] = thread
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        # Forgotten before it is closed, so that end_connections (which holds the
        # lock) never shuts down a socket that is being closed.
        with self._lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away, or a connection cut by stop(), is no news; a
        # failing endpoint is, and goes to the log rather than to stderr.
        if not isinstance(sys.exc_info()[1], OSError):
            _log.exception("monitoring: the request from %s failed", client_address)

    def end_connections(self, timeout: float) -> None:
        """Shut down every open connection; wait up to *timeout* s for the handlers."""
        with self._lock:
            threads = list(self._open.values())
            for request in self._open:
                with contextlib.suppress(OSError):  # the client is gone already
                    request.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def _bind_address(host: str, port: int) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    """The address family and socket address to listen on for *host*, as
    ``http.server`` chooses them: IPv6 for ``::1``, IPv4 for ``127.0.0.1``, and for a
    name the first address the resolver gives."""
    infos = socket.getaddrinfo(
        host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, _, _, _, address = infos[0]
    return family, address


class MonitoringServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` for one worker, on its own thread.

    *host* may be an IPv4 or IPv6 address (``::1``, ``[::1]``) or a host name.
    Binding fails with :class:`OSError` (an unknown host, a port in use).
    """

    #: How long :meth:`stop` waits for requests in progress once it has closed
    #: their connections.
    stop_timeout = 5.0

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
            # A client that stops sending mid-request is dropped after this many
            # seconds instead of holding a thread until stop().
            timeout = 10.0

            def do_GET(self) -> None:
                status, content_type, body = owner.answer(self.path.split("?", 1)[0])
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        family, address = _bind_address(host, port)
        self._server = _Server(address, family, Handler)
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
            ok = health.alive if path == "/healthz" else health.ready
            report = {
                "state": health.state.value,
                "alive": health.alive,
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
        """Stop serving and close the port; open connections are cut.

        Returns within about :attr:`stop_timeout` even while clients hold idle
        connections.  Safe to call twice.
        """
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.end_connections(self.stop_timeout)
        self._server.server_close()
