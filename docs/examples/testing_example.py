"""Testing a handler against TopChefServer with pytest (see docs/testing.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from topchef_worker import JobStatus, TopChefClient, Worker
from topchef_worker.testing import TopChefServer


def fid(parameters: dict[str, Any]) -> dict[str, Any]:
    """The handler under test (normally imported from your package)."""
    if parameters["points"] <= 0:
        raise ValueError("points must be positive")
    return {"points": parameters["points"]}


@pytest.fixture
def server() -> Iterator[TopChefServer]:
    with TopChefServer() as running:
        yield running


def run_jobs(server: TopChefServer, *parameters: dict[str, Any], failing: int = 0) -> list[Any]:
    client = TopChefClient(server.url)
    service = client.create_service(
        name="FID", description="d", job_registration_schema={}, job_result_schema={}
    )
    jobs = [client.submit_job(service.id, p) for p in parameters]
    if failing:
        server.faults.fail_next(failing, status=503)  # the worker's next requests fail
    worker = Worker(server.url, poll_interval=0.05)
    worker.handler(service.id, error_results=lambda error: {"error": str(error)})(fid)
    worker.run(until_idle=True)  # returns once every queue is empty
    return [client.job(job.id) for job in jobs]


def test_results_and_failures(server: TopChefServer) -> None:
    good, bad = run_jobs(server, {"points": 256}, {"points": 0})
    assert (JobStatus.COMPLETED, {"points": 256}) == (good.status, good.results)
    assert (JobStatus.ERROR, {"error": "points must be positive"}) == (bad.status, bad.results)


def test_survives_a_failing_server(server: TopChefServer) -> None:
    (job,) = run_jobs(server, {"points": 8}, failing=3)
    assert JobStatus.COMPLETED == job.status
