"""Process pools that fail gracefully (issue 12): real child processes.

A handler that cannot be sent to a process is refused before any job is claimed; a
child that dies costs only its own job; an exception that cannot travel back is
reported by name, without breaking the pool.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

import handlers
from test_worker import WAIT, fast_worker
from topchef_worker import JobStatus, Service, TopChefClient
from topchef_worker.exceptions import ConfigurationError
from topchef_worker.testing import TopChefServer

pytestmark = pytest.mark.timeout(90)

SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def anything(client: TopChefClient) -> Service:
    """A service whose schemas accept any parameters and results."""
    return client.create_service(
        name="anything", description="d", job_registration_schema={}, job_result_schema={}
    )


@pytest.fixture
def given_pool() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(2, mp_context=SPAWN) as pool:
        yield pool


def test_a_handler_that_does_not_pickle_is_refused_when_registered(
    server: TopChefServer, anything: Service, given_pool: ProcessPoolExecutor
) -> None:
    worker = fast_worker(server, pools={"cpu": given_pool})
    with pytest.raises(ConfigurationError, match=r"handler .*<lambda> cannot run on pool 'cpu'"):
        worker.handler(anything.id, pool="cpu")(lambda parameters: {})


def test_a_handler_that_does_not_pickle_fails_the_start_naming_it(
    client: TopChefClient, server: TopChefServer, anything: Service
) -> None:
    """With a pool the worker makes, the check is at start, before any claim."""

    def closure(parameters: dict[str, Any]) -> dict[str, Any]:
        return {}

    worker = fast_worker(server, job_pool=lambda: ProcessPoolExecutor(1, mp_context=SPAWN))
    worker.handler(anything.id)(closure)
    job = client.submit_job(anything.id, {})
    worker.start()
    with pytest.raises(ConfigurationError, match="closure cannot run on pool 'default'"):
        worker.wait_ready(WAIT)
    worker.stop(timeout=5)

    assert JobStatus.REGISTERED is client.job(job.id).status


def test_a_dead_child_costs_only_its_own_job(
    client: TopChefClient, server: TopChefServer, anything: Service
) -> None:
    """Three jobs run side by side; the process of one dies.  The pool breaks and
    all three fail with it, but only the one that dies again when it runs alone ends
    ERROR: the two others run again and complete."""
    worker = fast_worker(
        server, max_jobs=3, job_pool=lambda: ProcessPoolExecutor(3, mp_context=SPAWN)
    )
    worker.handler(anything.id, error_results=lambda error: {"error": str(error)})(
        handlers.nap_or_crash
    )
    fine = [client.submit_job(anything.id, {"seconds": 1.0}) for _ in range(2)]
    crash = client.submit_job(anything.id, {"crash": 0.3})
    with worker:
        stats = worker.wait_for(lambda s: s.completed == 2 and s.failed == 1, 3 * WAIT)

    assert [JobStatus.COMPLETED] * 2 == [client.job(job.id).status for job in fine]
    failed = client.job(crash.id)
    assert failed.status is JobStatus.ERROR
    assert "the process running its handler died" in str(failed.results)
    assert stats.pool_rebuilds >= 2  # the first break, and the crash alone


def test_an_exception_that_cannot_travel_back_is_reported_by_name(
    client: TopChefClient, server: TopChefServer, anything: Service
) -> None:
    worker = fast_worker(
        server, max_jobs=2, job_pool=lambda: ProcessPoolExecutor(2, mp_context=SPAWN)
    )
    worker.handler(anything.id, error_results=lambda error: {"error": str(error)})(
        handlers.raise_unpicklable
    )
    ok = client.submit_job(anything.id, {"seconds": 0.5})
    bad = client.submit_job(anything.id, {"fail": True})
    with worker:
        stats = worker.wait_for(lambda s: s.completed == 1 and s.failed == 1, 3 * WAIT)

    assert (JobStatus.COMPLETED, 0) == (client.job(ok.id).status, stats.pool_rebuilds)
    assert {"error": "TwoPartError: the lamp and the grating"} == client.job(bad.id).results
