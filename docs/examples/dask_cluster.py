"""Jobs on a Dask cluster: one worker process polls, Dask worker processes run jobs.

Run it as it is: it starts an in-memory TopChef server and a local Dask cluster of
two worker processes.  On real machines, give ``dask_pool`` the scheduler's address
(``"tcp://scheduler:8786"``) instead of the local cluster.
"""

from __future__ import annotations

import os
from typing import Any

import distributed

from topchef_worker import TopChefClient, Worker
from topchef_worker.dask import dask_pool
from topchef_worker.testing import TopChefServer


def simulate(parameters: dict[str, Any]) -> dict[str, Any]:
    """Runs in a Dask worker process, on whichever machine the scheduler picks."""
    return {"energy": parameters["n"] ** 2, "pid": os.getpid()}


def main() -> list[dict[str, Any]]:
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        TopChefServer() as server,
        TopChefClient(server.url) as client,
    ):
        worker = Worker(server.url, max_jobs=2, job_pool=dask_pool(cluster))
        worker.handler(
            name="simulation",
            description="a simulation on the cluster",
            job_registration_schema={"type": "object"},
            job_result_schema={"type": "object"},
        )(simulate)
        with worker:
            worker.wait_ready(timeout=30)
            (service,) = worker.services
            jobs = [client.submit_job(service.id, {"n": n}) for n in range(4)]
            worker.wait_for(lambda stats: stats.completed == len(jobs), timeout=60)
        return [client.job(job.id).results or {} for job in jobs]


if __name__ == "__main__":
    for results in main():
        print(results)
