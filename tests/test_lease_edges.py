"""One active worker per service under stress: outages, restarts, a stop in the
middle of an election, the journal and outbox, a changed timeout, a failing read.

Each case is one where a lease is easy to get wrong: a job run twice, a job left
WORKING for good, a service left unserved, or a standby that looks unready.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ADDER_PARAMETERS, ADDER_RESULTS
from test_resilience import Counting
from test_worker import WAIT, Gate, fast_worker, heartbeats
from topchef_worker import (
    JobStatus,
    RetryPolicy,
    Service,
    ServiceRole,
    TopChefClient,
    Worker,
    WorkerState,
)
from topchef_worker._identity import load
from topchef_worker._lease import Marker, marked, parse
from topchef_worker._ledger import Journal, Outbox, Outcome
from topchef_worker.testing import ManualClock, TopChefServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def lease_clock(clock: ManualClock) -> Callable[[], float]:
    """The server's clock in seconds, for Lease objects (as in test_lease.py)."""
    epoch = clock()
    return lambda: (clock() - epoch).total_seconds()


@pytest.fixture
def workers(server: TopChefServer) -> Iterator[list[Worker]]:
    made: list[Worker] = []
    yield made
    for worker in made:
        worker.stop(timeout=5)


def start(
    workers: list[Worker],
    server: TopChefServer,
    service: Service,
    handler: Any = None,
    **kwargs: Any,
) -> Worker:
    kwargs.setdefault("heartbeat_interval", 0.05)
    worker = fast_worker(server, **kwargs)
    worker.handler(service.id)(handler if handler is not None else Counting())
    workers.append(worker)
    worker.start()
    return worker


def role_is(service: Service, role: ServiceRole) -> Any:
    return lambda stats: stats.roles.get(service.id) is role


def lease_written(service: Service, after: int = 0) -> Any:
    """A PATCH of the service with a body, after the first *after* requests: a
    lease's write (or a release)."""
    return lambda log: any(
        r.method == "PATCH" and r.path == f"/services/{service.id}" and r.body for r in log[after:]
    )


def lease_failures(worker: Worker, service: Service) -> int:
    """Failed lease steps in a row (Standby._failures)."""
    runtime = worker._life.runtime
    assert runtime is not None
    return runtime.standby._failures.get(service.id, 0)


def job_status(server: TopChefServer, job_id: str) -> str:
    return str(server.app.jobs[job_id].status)


# -- health ---------------------------------------------------------------------------


def test_a_worker_that_lost_its_lease_after_a_failed_check_in_is_a_ready_standby(
    client: TopChefClient, server: TopChefServer, adder: Service, workers: list[Worker]
) -> None:
    """One check-in fails (the worker is DEGRADED), and the retried one finds
    another worker's marker, so the service steps down.  A standby neither checks
    in nor polls, so those failures are forgotten: it is a ready STANDBY."""
    worker = start(
        workers,
        server,
        adder,
        heartbeat_interval=1.0,  # a failed check-in is retried 1 s later
        retry=RetryPolicy.forever(initial=1.0),
        rand=lambda: 0.0,
    )
    worker.wait_for(role_is(adder, ServiceRole.ACTIVE), WAIT)
    before = len(server.requests)
    server.faults.fail_next(1, status=503, method="PATCH", path=f"/services/{adder.id}")
    server.wait_for_requests(lambda log: any(r.status == 503 for r in log[before:]), WAIT)
    # Another worker's marker, before the failed check-in is retried.
    other = Marker(id="0123456789ab", host="elsewhere", pid=5)
    client.update_service(adder.id, description=marked("adds a and b", other))
    worker.wait_for(role_is(adder, ServiceRole.STANDBY), WAIT)
    reads = len(server.requests)
    server.wait_for_requests(  # it keeps reading the lease, with success
        lambda log: sum(1 for r in log[reads:] if r.method == "GET" and r.status == 200) >= 3,
        WAIT,
    )

    health = worker.health()
    assert (WorkerState.STANDBY, True, ()) == (health.state, health.ready, health.reasons)


# -- the protocol -----------------------------------------------------------------------


def test_after_an_outage_the_holder_takes_its_lease_back_before_a_standby(
    client: TopChefClient,
    server: TopChefServer,
    clock: ManualClock,
    adder: Service,
    workers: list[Worker],
) -> None:
    """After an outage longer than the timeout every holder has timed out.  The
    holder retries its lease at least every second and takes it back at once; a
    standby waits GRACE first, so it does not take over and run the holder's
    running job again (here the holder's retry policy would wait 5 s)."""
    client.update_service(adder.id, timeout=2)  # the holder lapses 1.3 s into the outage
    gate = Gate()
    holder = start(
        workers,
        server,
        adder,
        gate,
        retry=RetryPolicy.forever(initial=5.0),
        rand=lambda: 0.0,
    )
    holder.wait_for(role_is(adder, ServiceRole.ACTIVE), WAIT)
    standby_calls = Counting()
    standby = start(
        workers,
        server,
        adder,
        standby_calls,
        retry=RetryPolicy.forever(initial=0.05, maximum=0.1),
    )
    standby.wait_for(lambda s: s.state is WorkerState.STANDBY, WAIT)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    gate.wait_started()
    try:
        server.stop()
        holder.wait_for(role_is(adder, ServiceRole.STANDBY), WAIT)  # lapsed
        # Its first try to take the lease back failed (the server is down): the
        # next one is a retry wait later.
        holder.wait_for(lambda s: lease_failures(holder, adder) >= 1, WAIT)
        clock.advance(31)  # the outage outlasted the service's timeout
        server.start()

        with contextlib.suppress(TimeoutError):  # within GRACE, were it taken "at once"
            holder.wait_for(role_is(adder, ServiceRole.ACTIVE), 6.0)
        assert (ServiceRole.ACTIVE, ServiceRole.STANDBY, 0) == (
            holder.stats().roles[adder.id],
            standby.stats().roles[adder.id],
            standby_calls.calls[job.id],
        )
    finally:
        gate.release.set()


def test_workers_with_the_same_host_and_journal_path_get_different_identities(
    tmp_path: Path,
) -> None:
    """Two containers sharing the host's network (so its host name), each with its
    own volume mounted at the same path, must not share a lease identity: each
    would take the other's marker for its own.  The id is random, kept in a file
    next to the journal, so it differs between volumes and survives a restart."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    a, _ = load(first / "journal")
    b, _ = load(second / "journal")
    again, _ = load(first / "journal")

    assert (a.host, a.stable) == (b.host, b.stable)
    assert a.id != b.id
    assert a.id == again.id
    assert 0o600 == (first / "journal.lease").stat().st_mode & 0o777


# -- what a holder leaves ----------------------------------------------------------------


def test_a_takeover_whose_read_of_the_service_fails_still_puts_the_orphans_back(
    client: TopChefClient,
    server: TopChefServer,
    clock: ManualClock,
    adder: Service,
    workers: list[Worker],
) -> None:
    """The read of what a dead holder left WORKING fails once: it is tried again,
    and the jobs are put back and run."""
    left = [client.submit_job(adder.id, {"a": i, "b": 1}) for i in range(2)]
    for job in left:
        client.update_job(job.id, status=JobStatus.WORKING)
    dead = Marker(id="deadbeef0000", host="gone", pid=99)
    client.update_service(adder.id, description=marked("adds a and b", dead), is_available=True)
    clock.advance(31)
    before = len(server.requests)

    worker = start(workers, server, adder, lease_settle=0.5)
    server.wait_for_requests(
        lease_written(adder, before), WAIT
    )  # after GRACE; it reads back 0.5 s later
    server.faults.fail_next(1, status=503, method="GET", path=f"/services/{adder.id}")

    worker.wait_for(lambda s: s.completed == 2, WAIT)


def test_a_job_whose_outcome_is_in_the_outbox_does_not_run_again(
    client: TopChefClient,
    server: TopChefServer,
    adder: Service,
    workers: list[Worker],
    tmp_path: Path,
) -> None:
    """A run finished a job, could not deliver its outcome (it is in the outbox) and
    was killed (its claim is still in the journal).  At the next start the outcome
    is delivered, and the claim is not put back, even when the outbox's first try
    fails: the job never runs a second time."""
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    client.update_job(job.id, status=JobStatus.WORKING)
    journal, outbox = Journal(tmp_path / "journal"), Outbox(tmp_path / "outbox")
    journal.open()
    outbox.open()
    journal.claimed(job.id, adder.id)
    outbox.put(
        Outcome(job_id=job.id, service_id=adder.id, status=JobStatus.COMPLETED, results={"sum": 3})
    )
    journal.close()
    outbox.close()
    # The outbox's first try fails (the server is still recovering); it retries in 3 s.
    server.faults.fail_next(1, status=503, method="GET", path=f"/jobs/{job.id}")

    counting = Counting()
    start(
        workers,
        server,
        adder,
        counting,
        journal=tmp_path / "journal",
        outbox=tmp_path / "outbox",
        retry=RetryPolicy.forever(initial=3.0),
        rand=lambda: 0.0,
    )
    server.wait_for_requests(lambda log: job_status(server, job.id) == "COMPLETED", WAIT)

    assert (0, {"sum": 3}) == (counting.calls[job.id], client.job(job.id).results)


def test_claims_journaled_by_a_run_that_released_the_lease_are_not_forgotten(
    client: TopChefClient,
    server: TopChefServer,
    adder: Service,
    workers: list[Worker],
    tmp_path: Path,
) -> None:
    """An earlier run released the lease at the start of its stop, then ended with a
    claim unsettled (in flight at the stop, or killed during the drain).  The next
    holder took over from a release, so it put nothing back: the restarted run
    settles that claim itself, though it now stands by."""
    journal_path = tmp_path / "journal"
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    client.update_job(job.id, status=JobStatus.WORKING)
    journal = Journal(journal_path)
    journal.open()
    journal.claimed(job.id, adder.id)
    journal.close()
    identity, memory = load(journal_path)
    memory.note(adder.id, released=True)  # the earlier run's clean stop
    released = identity.marker(released=True)
    client.update_service(adder.id, description=marked("adds a and b", released))

    serving = start(workers, server, adder)
    serving.wait_for(role_is(adder, ServiceRole.ACTIVE), WAIT)
    restarted = start(workers, server, adder, journal=journal_path)
    restarted.wait_for(lambda s: s.state is WorkerState.STANDBY, WAIT)

    serving.wait_for(lambda s: s.completed == 1, WAIT)


# -- stopping ---------------------------------------------------------------------------


def test_a_stop_during_the_election_does_not_leave_an_active_marker(
    client: TopChefClient, server: TopChefServer, adder: Service, workers: list[Worker]
) -> None:
    """A worker stopped between writing its marker and reading it back releases it,
    so that standbys do not wait a whole timeout for a worker that is gone."""
    worker = start(workers, server, adder, lease_settle=1.0)
    server.wait_for_requests(lease_written(adder), WAIT)
    worker.stop(timeout=5)

    marker = parse(client.service(adder.id).description)[1]
    assert marker is None or marker.released, marker


# -- the service's timeout --------------------------------------------------------------


def test_a_new_service_timeout_waits_for_the_worker_that_will_check_in_to_it(
    server: TopChefServer, adder: Service, workers: list[Worker]
) -> None:
    """A rolling update lowers ``service_timeout`` from 30 s to 3 s.  The new worker
    must not PATCH it while the old one serves (a PATCH is a check-in, and the old
    one checks in every 10 s: it would look dead); it sets it when it takes over,
    and checks in within the new timeout from then on."""
    described: dict[str, Any] = {
        "name": "Adder",
        "description": "adds a and b",
        "job_registration_schema": ADDER_PARAMETERS,
        "job_result_schema": ADDER_RESULTS,
    }
    old = fast_worker(server, heartbeat_interval=None)
    old.handler(**described, service_timeout=30)(Counting())
    workers.append(old)
    old.start()
    old.wait_for(role_is(adder, ServiceRole.ACTIVE), WAIT)
    new = fast_worker(server, heartbeat_interval=None)
    new.handler(**described, service_timeout=3)(Counting())
    workers.append(new)
    new.start()
    new.wait_for(lambda s: s.state is WorkerState.STANDBY, WAIT)
    assert 30 == server.app.services[adder.id].timeout

    old.stop(timeout=5)
    new.wait_for(role_is(adder, ServiceRole.ACTIVE), WAIT)
    server.wait_for_requests(lambda log: server.app.services[adder.id].timeout == 3, WAIT)
    before = heartbeats(server.requests, adder.id)
    # Within two timeouts, a worker checking in every third of one has done so 5 times.
    server.wait_for_requests(lambda log: heartbeats(log, adder.id) >= before + 2, timeout=2 * 3)
