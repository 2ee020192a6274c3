"""A server that lost its services (restarted on an empty database) while a worker ran.

The worker registered by description registers its service again and serves the new
id; a worker given a service id reports the service missing (DEGRADED, not ready),
once in the log, until it answers again.  Every case restarts a real server on the
same port: a fresh :class:`TopChefServer` there is the empty database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from test_worker import WAIT, add, fast_worker
from topchef_worker import ServiceRole, TopChefClient, Worker, WorkerState
from topchef_worker.testing import TopChefServer

pytestmark = pytest.mark.timeout(60)

SCHEMAS: dict[str, Any] = {
    "job_registration_schema": {"type": "object", "required": ["a", "b"]},
    "job_result_schema": {"type": "object", "properties": {"sum": {"type": "number"}}},
}


@pytest.fixture
def first() -> Iterator[TopChefServer]:
    with TopChefServer() as server:
        yield server


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    """Workers and servers to stop at the end, whatever the test did."""
    made: list[Any] = []
    yield made
    for thing in reversed(made):
        if isinstance(thing, Worker):
            thing.stop(timeout=5)
        else:
            thing.stop()


def empty_server_on(server: TopChefServer, cleanup: list[Any]) -> TopChefServer:
    """Stop *server* and start an empty one on its port: the restart lost everything."""
    port = server.port
    server.stop()
    fresh = TopChefServer(port=port).start()
    cleanup.append(fresh)
    return fresh


def served(worker: Worker, role: ServiceRole) -> str:
    """The id of the one service *worker* has in *role*, once it has it."""
    stats = worker.wait_for(lambda s: list(s.roles.values()) == [role], WAIT)
    return next(iter(stats.roles))


@pytest.mark.parametrize("exclusive", [True, False], ids=["exclusive", "shared"])
def test_a_described_service_is_registered_again_and_its_jobs_run(
    first: TopChefServer,
    cleanup: list[Any],
    caplog: pytest.LogCaptureFixture,
    exclusive: bool,
) -> None:
    caplog.set_level(logging.INFO, "topchef_worker")
    worker = fast_worker(first, heartbeat_interval=0.05, exclusive=exclusive)
    worker.handler(name="adder", description="adds", service_timeout=3, **SCHEMAS)(add)
    cleanup.append(worker)
    worker.start()
    role = ServiceRole.ACTIVE if exclusive else ServiceRole.SHARED
    old = served(worker, role)

    fresh = empty_server_on(first, cleanup)
    stats = worker.wait_for(lambda s: list(s.roles) != [old] and role in s.roles.values(), WAIT)
    new = next(iter(stats.roles))
    with TopChefClient(fresh.url) as client:
        listed = [(service.id, service.name) for service in client.services()]
        job = client.submit_job(new, {"a": 2, "b": 3})
        worker.wait_for(lambda s: s.completed == 1, WAIT)
        done = client.job(job.id)

    assert ([(new, "adder")], "COMPLETED", {"sum": 5}) == (
        listed,
        done.status.value,
        done.results,
    )
    health = worker.health()
    assert (True, [new]) == (health.ready, [s.service_id for s in health.services])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert f"service {old} ('adder') is gone from the server" in errors[0]
    assert any(f"served again, as {new}" in r.getMessage() for r in caplog.records)


def test_a_service_given_by_id_is_reported_missing_until_it_answers_again(
    first: TopChefServer,
    cleanup: list[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "topchef_worker")
    with TopChefClient(first.url) as client:
        service = client.create_service(name="adder", description="adds", timeout=3, **SCHEMAS)
    worker = fast_worker(first, heartbeat_interval=0.05)
    worker.handler(service.id)(add)
    cleanup.append(worker)
    worker.start()
    served(worker, ServiceRole.ACTIVE)

    port = first.port
    fresh = empty_server_on(first, cleanup)
    worker.wait_for(lambda s: s.state is WorkerState.DEGRADED, WAIT)
    # Several more failed requests for it: still one ERROR line, and still missing.
    fresh.clear_requests()
    fresh.wait_for_requests(lambda log: len(log) >= 10, timeout=WAIT)
    health = worker.health()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert (False, WorkerState.DEGRADED, 1) == (health.ready, health.state, len(errors))
    assert any(
        f"service {service.id} does not exist on the server any more" in reason
        for reason in health.reasons
    ), health.reasons
    assert "register it on the server again" in errors[0]
    assert not any("registering" in r.getMessage() for r in caplog.records)

    # The database is back (the first server again, with its state): it answers.
    fresh.stop()
    first.start()
    assert port == first.port
    worker.wait_for(lambda s: s.state is WorkerState.RUNNING, WAIT)
    with TopChefClient(first.url) as client:
        job = client.submit_job(service.id, {"a": 1, "b": 1})
        worker.wait_for(lambda s: s.completed == 1, WAIT)
        assert ("COMPLETED", True) == (client.job(job.id).status.value, worker.health().ready)
    assert any(f"service {service.id} answers again" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("exclusive", [True, False], ids=["exclusive", "shared"])
def test_a_brief_404_finds_the_same_service_and_serves_it_on(
    first: TopChefServer,
    cleanup: list[Any],
    caplog: pytest.LogCaptureFixture,
    exclusive: bool,
) -> None:
    """One 404 for the check-in, then the server has the service after all: the
    worker finds it under the same id and goes on serving it (nothing is renamed, no
    slot is lost), and jobs run."""
    caplog.set_level(logging.INFO, "topchef_worker")
    worker = fast_worker(first, heartbeat_interval=0.05, exclusive=exclusive, max_jobs=1)
    worker.handler(name="adder", description="adds", service_timeout=3, **SCHEMAS)(add)
    cleanup.append(worker)
    worker.start()
    role = ServiceRole.ACTIVE if exclusive else ServiceRole.SHARED
    service_id = served(worker, role)
    first.faults.fail_next(
        1,
        status=404,
        body=b'{"errors": [{"detail": "no such service"}]}',
        content_type="application/json",
        method="PATCH",
        path=f"/services/{service_id}",
    )
    first.wait_for_requests(
        lambda log: any(r.status == 404 for r in log) and log[-1].status != 404, WAIT
    )
    with TopChefClient(first.url) as client:
        jobs = [client.submit_job(service_id, {"a": i, "b": 1}) for i in range(3)]
        worker.wait_for(lambda s: s.completed == 3, WAIT)
        statuses = {client.job(job.id).status.value for job in jobs}
    assert ({"COMPLETED"}, [service_id]) == (statuses, list(worker.stats().roles))
    worker.wait_for(lambda s: s.state is WorkerState.RUNNING, WAIT)
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"service {service_id} answers again" in m for m in messages), messages
    assert not any("served again" in m for m in messages)


def test_stop_while_registering_again_is_bounded_and_leaves_no_thread(
    first: TopChefServer, cleanup: list[Any]
) -> None:
    """The server lost the service and then answers 503 to every registration: the
    re-registration retries until stop(), which returns within its bound, with no
    thread of the worker's left and the service still reported missing till then."""
    before = set(threading.enumerate())
    worker = fast_worker(first, heartbeat_interval=0.05)
    worker.handler(name="adder", description="adds", service_timeout=3, **SCHEMAS)(add)
    worker.start()
    served(worker, ServiceRole.ACTIVE)
    fresh = empty_server_on(first, cleanup)
    fresh.faults.fail_next(10_000, status=503, method="GET", path="/services")
    worker.wait_for(lambda s: s.state is WorkerState.DEGRADED, WAIT)
    fresh.wait_for_requests(
        lambda log: sum(r.method == "GET" and r.path == "/services" for r in log) >= 3, WAIT
    )
    health = worker.health()
    began = time.monotonic()
    worker.stop(timeout=1.0)
    elapsed = time.monotonic() - began

    assert any("registering it again" in reason for reason in health.reasons), health.reasons
    assert (WorkerState.STOPPED, True) == (worker.state, elapsed < 1.0 + Worker.STOP_MARGIN)
    left = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
    assert [] == [name for name in left if name.startswith("topchef-") and "server" not in name]
