"""Listeners, events and health: what an embedding application can watch."""

from __future__ import annotations

import http.client
import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import attrs
import pytest

from test_resilience import resilient_worker
from test_worker import fast_worker
from topchef_worker import Service, TopChefClient, Worker, WorkerState, WorkerStats
from topchef_worker._metrics import MonitoringServer
from topchef_worker.events import (
    Event,
    HeartbeatFailed,
    JobClaimed,
    JobCompleted,
    JobFailed,
    JobRequeued,
    JobStarted,
    PollFailed,
    StateChanged,
)
from topchef_worker.testing import TopChefServer


def handler(parameters: dict[str, Any]) -> dict[str, Any]:
    if parameters["b"] < 0:
        raise ValueError("negative b")
    return {"sum": parameters["a"] + parameters["b"]}


def test_events_follow_each_job_and_the_worker_state(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """Claimed, started, then completed or failed per job; the states in order."""
    events: list[Event] = []
    worker = fast_worker(server)
    worker.add_listener(events.append)
    worker.handler(adder.id)(handler)
    good = client.submit_job(adder.id, {"a": 1, "b": 2})
    bad = client.submit_job(adder.id, {"a": 1, "b": -1})
    worker.run(until_idle=True)

    def kinds(job_id: str) -> list[type[Event]]:
        return [type(e) for e in events if getattr(e, "job_id", None) == job_id]

    assert [JobClaimed, JobStarted, JobCompleted] == kinds(good.id)
    assert [JobClaimed, JobStarted, JobFailed] == kinds(bad.id)
    (failed,) = [e for e in events if isinstance(e, JobFailed)]
    assert "ValueError: negative b" == failed.error
    assert failed.delivered
    (claimed,) = [e for e in events if isinstance(e, JobClaimed) and e.job_id == good.id]
    assert claimed.claim_latency >= 0
    assert all(e.duration >= 0 for e in events if isinstance(e, (JobCompleted, JobFailed)))
    states = [(e.old, e.new) for e in events if isinstance(e, StateChanged)]
    assert [
        (WorkerState.NEW, WorkerState.STARTING),
        (WorkerState.STARTING, WorkerState.RUNNING),
        (WorkerState.RUNNING, WorkerState.STOPPING),
        (WorkerState.STOPPING, WorkerState.STOPPED),
    ] == states


def test_requeue_event(client: TopChefClient, server: TopChefServer, adder: Service) -> None:
    """A job put back at stop is announced with the reason."""
    release = threading.Event()
    started = threading.Event()

    def slow(parameters: dict[str, Any]) -> dict[str, Any]:
        started.set()
        release.wait(10)
        return {"sum": 0}

    events: list[Event] = []
    worker = fast_worker(server)
    worker.add_listener(events.append)
    worker.handler(adder.id)(slow)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    worker.start()
    assert started.wait(10)
    worker.stop(timeout=0.01)
    release.set()
    (requeued,) = [e for e in events if isinstance(e, JobRequeued)]
    assert job.id == requeued.job_id
    assert "stop timeout" in requeued.reason


def test_a_failing_listener_is_logged_and_harmless(
    client: TopChefClient,
    server: TopChefServer,
    adder: Service,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A listener that raises does not stop jobs or other listeners."""
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("dashboard down")

    worker = fast_worker(server)
    worker.add_listener(broken)
    worker.add_listener(seen.append)
    worker.handler(adder.id)(handler)
    for i in range(3):
        client.submit_job(adder.id, {"a": i, "b": 1})
    with caplog.at_level(logging.ERROR, logger="topchef_worker"):
        worker.run(until_idle=True)
    assert 3 == worker.stats().completed
    assert 3 == sum(isinstance(e, JobCompleted) for e in seen)
    assert any("dashboard down" in (r.exc_text or "") for r in caplog.records)


def test_listeners_can_be_removed_and_must_be_callable(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """remove_listener stops the calls; a non-callable is refused."""
    worker = fast_worker(server)
    worker.handler(adder.id)(handler)
    kept: list[Event] = []
    removed: list[Event] = []
    worker.add_listener(kept.append)
    worker.add_listener(removed.append)
    worker.remove_listener(removed.append)
    client.submit_job(adder.id, {"a": 1, "b": 2})
    worker.run(until_idle=True)
    assert ([], True) == (removed, any(isinstance(e, JobCompleted) for e in kept))
    with pytest.raises(ValueError, match="callable"):
        worker.add_listener("print")  # type: ignore[arg-type]


def test_health_follows_the_server(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """Healthy while heartbeating and polling; neither healthy nor ready while the
    server is down, but alive: a TopChef outage is no reason to restart the worker."""
    events: list[Event] = []
    worker = resilient_worker(server)
    worker.add_listener(events.append)
    worker.handler(adder.id)(handler)
    assert (False, False, False) == (
        worker.health().alive,
        worker.health().healthy,
        worker.health().ready,
    )
    with worker:
        worker.wait_for(lambda stats: stats.heartbeats_sent >= 1 and stats.polls >= 1)
        health = worker.health()
        assert (True, True, True, ()) == (
            health.alive,
            health.healthy,
            health.ready,
            health.reasons,
        )
        (service,) = health.services
        assert adder.id == service.service_id
        assert service.last_heartbeat_age is not None
        assert service.last_heartbeat_age < 30
        server.stop()
        worker.wait_for(lambda stats: stats.state is WorkerState.DEGRADED)
        health = worker.health()
        assert (True, False, False) == (health.alive, health.healthy, health.ready)
        assert "worker is DEGRADED" == health.reasons[0]
        server.start()
        worker.wait_for(lambda stats: stats.state is WorkerState.RUNNING)
    assert worker.health().healthy is False
    assert any(isinstance(e, (HeartbeatFailed, PollFailed)) for e in events)


# -- the monitoring server ----------------------------------------------------------------

WAIT = 10.0  # far longer than stop() may take; only a hang reaches it


def get(host: str, port: int, path: str) -> tuple[int, bytes]:
    """One GET on a fresh connection, closed afterwards."""
    connection = http.client.HTTPConnection(host, port, timeout=WAIT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def connected_only(connection: http.client.HTTPConnection) -> None:
    connection.connect()


def half_a_request(connection: http.client.HTTPConnection) -> None:
    connection.connect()
    assert connection.sock is not None
    connection.sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n")


def one_request_kept_alive(connection: http.client.HTTPConnection) -> None:
    connection.request("GET", "/metrics")
    connection.getresponse().read()


@pytest.mark.parametrize("hold", [connected_only, half_a_request, one_request_kept_alive])
def test_stop_does_not_wait_for_idle_connections(
    hold: Callable[[http.client.HTTPConnection], None],
) -> None:
    """stop() returns, and closes the connection, while an HTTP/1.1 client holds it
    open without finishing a request."""
    monitoring = MonitoringServer(Worker()).start()
    client = http.client.HTTPConnection("127.0.0.1", monitoring.port, timeout=WAIT)
    try:
        hold(client)
        # Connections are accepted in order: once this one is answered, the server
        # has taken the client's connection and its handler is waiting on it.
        assert 404 == get("127.0.0.1", monitoring.port, "/nowhere")[0]
        stopping = threading.Thread(target=monitoring.stop, daemon=True)
        stopping.start()
        stopping.join(WAIT)
        assert not stopping.is_alive(), "stop() waited for the idle client"
        if client.sock is not None:
            assert b"" == client.sock.recv(1)
    finally:
        client.close()


def test_stop_is_idempotent() -> None:
    """A second stop() does nothing, and neither does stop() before start()."""
    MonitoringServer(Worker()).stop()
    monitoring = MonitoringServer(Worker()).start()
    monitoring.stop()
    monitoring.stop()


@pytest.mark.parametrize("brackets", [False, True])
def test_serves_on_ipv6_loopback(ipv6_loopback: str, brackets: bool) -> None:
    """An IPv6 host such as ``::1`` (or ``[::1]``) is served over IPv6."""
    host = f"[{ipv6_loopback}]" if brackets else ipv6_loopback
    monitoring = MonitoringServer(Worker(), host=host).start()
    try:
        status, body = get(ipv6_loopback, monitoring.port, "/metrics")
    finally:
        monitoring.stop()
    assert (503, b"metrics need: pip install 'topchef-worker[prometheus]'\n") == (status, body)


def test_health_and_stats_as_plain_dicts_for_a_web_route(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """``to_dict()`` is what ``json.dumps`` (and so Flask's ``jsonify``) takes: states and
    roles as their names, times as ISO 8601, the services a list of dicts."""
    worker = fast_worker(server, heartbeat_interval=0.05)
    worker.handler(adder.id)(handler)
    with worker:
        client.submit_job(adder.id, {"a": 1, "b": 2})
        stats = worker.wait_for(lambda s: s.completed == 1 and all(s.last_heartbeat.values()))
        health = json.loads(json.dumps(worker.health().to_dict()))
        plain = json.loads(json.dumps(stats.to_dict()))
    assert {
        "state": "RUNNING",
        "alive": True,
        "ready": True,
        "reasons": health["reasons"],
        "healthy": health["healthy"],
        "in_flight": health["in_flight"],
        "services": health["services"],
    } == health
    (service,) = health["services"]
    assert (adder.id, "Adder", "active") == (
        service["service_id"],
        service["name"],
        service["role"],
    )
    assert {field.name for field in attrs.fields(WorkerStats)} == set(plain)
    assert ("RUNNING", 1, {adder.id: "active"}) == (
        plain["state"],
        plain["completed"],
        plain["roles"],
    )
    assert (
        datetime.fromisoformat(plain["last_heartbeat"][adder.id]) == stats.last_heartbeat[adder.id]
    )
