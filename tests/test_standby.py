"""Workers on one service: one serves, the others stand by (issue 11).

Several :class:`Worker` objects in one process, each with its own lease identity,
against one :class:`TopChefServer`; the separate-process cases (kill -9, SIGTERM)
are in ``test_fleet.py``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from test_resilience import Counting
from test_worker import WAIT, fast_worker
from topchef_worker import (
    JobStatus,
    Service,
    ServiceRole,
    TopChefClient,
    Worker,
    WorkerState,
)
from topchef_worker._lease import Marker, marked, parse
from topchef_worker.events import Event, RoleChanged
from topchef_worker.testing import ManualClock, TopChefServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def workers(server: TopChefServer) -> Iterator[list[Worker]]:
    made: list[Worker] = []
    yield made
    for worker in made:
        worker.stop(timeout=5)


def start(workers: list[Worker], server: TopChefServer, service: Service, **kwargs: Any) -> Worker:
    kwargs.setdefault("heartbeat_interval", 0.05)
    worker = fast_worker(server, **kwargs)
    worker.handler(service.id)(Counting())
    workers.append(worker)
    worker.start()
    return worker


def role(worker: Worker, service: Service) -> ServiceRole | None:
    return worker.stats().roles.get(service.id)


def calls(worker: Worker, service: Service) -> Counter[str]:
    spec = worker._handlers[0]  # the Counting handler it was given
    counting = spec.fn
    assert isinstance(counting, Counting)
    return counting.calls


def test_two_workers_on_one_service_one_serves_and_one_stands_by(
    client: TopChefClient,
    server: TopChefServer,
    adder: Service,
    workers: list[Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "topchef_worker")
    first = start(workers, server, adder)
    first.wait_for(lambda s: s.roles.get(adder.id) is ServiceRole.ACTIVE, WAIT)
    second = start(workers, server, adder)
    second.wait_for(lambda s: s.state is WorkerState.STANDBY, WAIT)
    jobs = [client.submit_job(adder.id, {"a": i, "b": 1}) for i in range(30)]
    first.wait_for(lambda s: s.completed == 30, WAIT)

    assert (Counter({"COMPLETED": 30}), 30, 0) == (
        Counter(client.job(job.id).status.value for job in jobs),
        sum(calls(first, adder).values()),
        sum(calls(second, adder).values()),
    )
    health = second.health()
    [service] = health.services
    assert (WorkerState.STANDBY, True, True, ServiceRole.STANDBY) == (
        health.state,
        health.ready,  # ready: a rolling update must not wait for it to be active
        health.healthy,
        service.role,
    )
    assert (0, 0) == (second.stats().claimed, second.stats().polls)
    [line] = [r.getMessage() for r in caplog.records if "standing by" in r.getMessage()]
    assert line.startswith(f"service {adder.id} is served by worker ")


def test_a_clean_stop_hands_the_service_over_at_once(
    client: TopChefClient, server: TopChefServer, adder: Service, workers: list[Worker]
) -> None:
    """The active worker releases the service when it stops: the standby serves it
    within a second or two, with no service timeout to wait for."""
    first = start(workers, server, adder)
    first.wait_for(lambda s: s.roles.get(adder.id) is ServiceRole.ACTIVE, WAIT)
    second = start(workers, server, adder)
    second.wait_for(lambda s: s.state is WorkerState.STANDBY, WAIT)
    events: list[Event] = []
    second.add_listener(events.append)

    first.stop(timeout=5)
    released = parse(client.service(adder.id).description)[1]
    second.wait_for(lambda s: s.roles.get(adder.id) is ServiceRole.ACTIVE, 5.0)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    second.wait_for(lambda s: s.completed == 1, WAIT)

    assert released is not None
    assert released.released
    assert {"sum": 3} == client.job(job.id).results
    [change] = [e for e in events if isinstance(e, RoleChanged)]
    assert change.role is ServiceRole.ACTIVE
    assert change.reason.endswith("released it")


def test_a_holder_that_stopped_checking_in_is_taken_over_and_its_jobs_put_back(
    client: TopChefClient,
    server: TopChefServer,
    clock: ManualClock,
    adder: Service,
    workers: list[Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker that died left two jobs WORKING and its marker active.  Once the
    service has timed out (and GRACE passed), a new worker takes over, returns
    those jobs to the queue and runs them."""
    left = [client.submit_job(adder.id, {"a": i, "b": 1}) for i in range(2)]
    for job in left:
        client.update_job(job.id, status=JobStatus.WORKING)
    dead = Marker(id="deadbeef0000", host="gone", pid=99)
    client.update_service(adder.id, description=marked("adds a and b", dead), is_available=True)
    clock.advance(31)

    worker = start(workers, server, adder)
    worker.wait_for(lambda s: s.completed == 2, WAIT)

    assert ["COMPLETED", "COMPLETED"] == [client.job(j.id).status.value for j in left]
    assert any(
        "left WORKING by worker deadbeef0000 on gone (pid 99)" in r.getMessage()
        for r in caplog.records
    )


def test_an_active_worker_that_finds_another_holder_steps_down(
    client: TopChefClient, server: TopChefServer, adder: Service, workers: list[Worker]
) -> None:
    """Another worker's marker found after a check-in: claim nothing more."""
    worker = start(workers, server, adder)
    worker.wait_for(lambda s: s.roles.get(adder.id) is ServiceRole.ACTIVE, WAIT)
    other = Marker(id="0123456789ab", host="elsewhere", pid=5)
    client.update_service(adder.id, description=marked("adds a and b", other))
    worker.wait_for(lambda s: s.state is WorkerState.STANDBY, WAIT)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    lease_reads = {"/services", f"/services/{adder.id}"}
    reads = sum(1 for r in server.requests if r.method == "GET" and r.path in lease_reads)
    # The standby reads the lease every second; after three reads it has still
    # claimed nothing.
    server.wait_for_requests(
        lambda log: sum(1 for r in log if r.method == "GET" and r.path in lease_reads) >= reads + 3,
        WAIT,
    )

    assert (JobStatus.REGISTERED, 0) == (client.job(job.id).status, worker.stats().claimed)


def test_shared_services_take_no_lease_and_leave_the_description_alone(
    client: TopChefClient, server: TopChefServer, adder: Service, workers: list[Worker]
) -> None:
    first = start(workers, server, adder, exclusive=False)
    second = start(workers, server, adder, exclusive=False)
    jobs = [client.submit_job(adder.id, {"a": i, "b": 1}) for i in range(20)]
    for worker in (first, second):
        worker.wait_for(lambda s: s.polls > 0, WAIT)
    server.wait_for_requests(
        lambda log: all(server.app.jobs[j.id].status == "COMPLETED" for j in jobs), WAIT
    )

    assert ("adds a and b", [ServiceRole.SHARED] * 2) == (
        client.service(adder.id).description,
        [role(worker, adder) for worker in (first, second)],
    )
    assert not any(
        r.method == "PATCH" and r.path.startswith("/services/") and r.body for r in server.requests
    )


def test_a_batch_run_ends_when_another_worker_serves_the_queue(
    server: TopChefServer, adder: Service, workers: list[Worker]
) -> None:
    """``run(until_idle=True)`` on a standby returns: nothing is left for it to do."""
    first = start(workers, server, adder)
    first.wait_for(lambda s: s.roles.get(adder.id) is ServiceRole.ACTIVE, WAIT)
    second = fast_worker(server)
    second.handler(adder.id)(Counting())

    second.run(until_idle=True)

    stats = second.stats()
    assert (WorkerState.STOPPED, 0, {adder.id: ServiceRole.STANDBY}) == (
        stats.state,
        stats.claimed,
        stats.roles,
    )


def test_metrics_say_which_services_a_worker_stands_by_for(
    server: TopChefServer, adder: Service, workers: list[Worker]
) -> None:
    from topchef_worker._metrics import PrometheusMetrics

    first = start(workers, server, adder)
    first.wait_for(lambda s: s.roles.get(adder.id) is ServiceRole.ACTIVE, WAIT)
    second = fast_worker(server)
    second.handler(adder.id)(Counting())
    metrics = PrometheusMetrics(second)
    workers.append(second)
    second.start()
    second.wait_for(lambda s: s.state is WorkerState.STANDBY, WAIT)

    def sample(name: str, **labels: str) -> float | None:
        value = metrics.registry.get_sample_value(name, labels)
        return None if value is None else float(value)

    # Events reach the metrics on the listener thread: wait for the role to arrive.
    second.wait_for(
        lambda s: sample("topchef_worker_service_role", service_id=adder.id, role="standby") == 1.0,
        WAIT,
    )
    assert (1.0, 0.0, 1.0) == (
        sample("topchef_worker_service_role", service_id=adder.id, role="standby"),
        sample("topchef_worker_service_role", service_id=adder.id, role="active"),
        sample("topchef_worker_state", state="STANDBY"),
    )


def test_the_lease_write_is_the_first_check_in(
    server: TopChefServer, adder: Service, workers: list[Worker]
) -> None:
    """Becoming ACTIVE wrote the lease with a PATCH, which is a check-in: the worker
    is healthy at once, not only after its first bare heartbeat a period later."""
    worker = start(workers, server, adder, heartbeat_interval=adder.timeout / 2)
    stats = worker.wait_for(
        lambda s: s.roles.get(adder.id) is ServiceRole.ACTIVE and s.polls > s.poll_errors, WAIT
    )
    health = worker.health()
    assert (0, True) == (stats.heartbeats_sent, health.healthy), health.reasons
    assert stats.last_heartbeat[adder.id] is not None
