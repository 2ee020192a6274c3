"""A job pool on a real Dask cluster of worker processes (issue 12).

One ``LocalCluster`` (two worker processes, one thread each) serves every test in
the module: jobs run there, closures included, and a job whose Dask worker dies is
run again by the cluster.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import handlers
from test_worker import WAIT, fast_worker
from topchef_worker import JobStatus, Service, TopChefClient
from topchef_worker.dask import DaskExecutor, dask_pool
from topchef_worker.testing import TopChefServer

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as running:
        yield running


@pytest.fixture
def anything(client: TopChefClient) -> Service:
    return client.create_service(
        name="anything", description="d", job_registration_schema={}, job_result_schema={}
    )


def test_jobs_run_on_the_clusters_worker_processes(
    client: TopChefClient, server: TopChefServer, anything: Service, cluster: Any
) -> None:
    """A closure (Dask pickles with cloudpickle) runs in the cluster's processes;
    jobs with equal parameters each run (the pool is not pure)."""
    offset = 40

    def where(parameters: dict[str, Any]) -> dict[str, Any]:
        return {"pid": os.getpid(), "x": parameters["x"] + offset}

    worker = fast_worker(server, max_jobs=4, job_pool=dask_pool(cluster))
    worker.handler(anything.id)(where)
    jobs = [client.submit_job(anything.id, {"x": 2}) for _ in range(6)]
    with worker:
        worker.wait_for(lambda s: s.completed == 6, 3 * WAIT)

    results = [client.job(job.id).results or {} for job in jobs]
    with distributed.Client(cluster) as dask_client:
        workers = set(dask_client.run(os.getpid).values())
    assert [42] * 6 == [result["x"] for result in results]
    assert {result["pid"] for result in results} <= workers
    assert os.getpid() not in workers


def test_a_job_whose_dask_worker_dies_is_run_again_by_the_cluster(
    client: TopChefClient,
    server: TopChefServer,
    anything: Service,
    cluster: Any,
    tmp_path: Path,
) -> None:
    with distributed.Client(cluster) as dask_client:
        worker = fast_worker(server, job_pool=DaskExecutor(dask_client))
        worker.handler(anything.id)(handlers.die_once)
        marker = tmp_path / "died"
        job = client.submit_job(anything.id, {"marker": str(marker)})
        with worker:
            stats = worker.wait_for(lambda s: s.completed + s.failed == 1, 3 * WAIT)

    assert marker.exists()  # the first try killed its Dask worker process
    assert (JobStatus.COMPLETED, 0) == (client.job(job.id).status, stats.pool_rebuilds)
