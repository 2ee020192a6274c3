"""Jobs on a Dask cluster: speed-up with its worker processes, overhead per job.

Runs the same jobs (each sleeps 1 s, the stand-in for an instrument or a remote
computation) with ``max_jobs`` equal to N, on a local Dask cluster of N worker
processes (one thread each) and, as the baseline in the same process, on a thread
pool of N threads, for N = 1, 2 and 4.  Reports the wall time from the first
submission to the last completion, the speed-up over one Dask worker, and the
overhead per job against the thread pool.

Run: ``python benchmarks/dask_pool.py [--jobs 16] [--workers 1 2 4] [--json PATH]``.
Needs the ``dask`` extra.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import distributed

from topchef_worker import ServiceRole, TopChefClient, Worker
from topchef_worker.dask import DaskExecutor
from topchef_worker.testing import TopChefServer


def nap(parameters: dict[str, Any]) -> dict[str, Any]:
    time.sleep(1.0)  # the job's own work
    return {"slept": 1.0}


def run(pool: Executor, slots: int, jobs: int) -> float:
    """Seconds from the first submission to the last completion."""
    with TopChefServer() as server:
        worker = Worker(
            server.url, max_jobs=slots, job_pool=pool, min_poll_interval=0.005, poll_interval=0.05
        )
        worker.handler(
            name="nap",
            description="sleeps a second",
            job_registration_schema={"type": "object"},
            job_result_schema={"type": "object"},
        )(nap)
        with worker, TopChefClient(server.url) as client:
            worker.wait_for(lambda s: ServiceRole.ACTIVE in s.roles.values(), 30)
            service = worker.services[0]
            started = time.perf_counter()
            for _ in range(jobs):
                client.submit_job(service.id, {})
            worker.wait_for(lambda s: s.completed == jobs, 300)
            return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    rows = []
    for n in args.workers:
        with (
            distributed.LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            dask_wall = run(DaskExecutor(client), n, args.jobs)
        with ThreadPoolExecutor(n) as threads:
            thread_wall = run(threads, n, args.jobs)
        rows.append({"workers": n, "dask_s": dask_wall, "threads_s": thread_wall})
    one = rows[0]["dask_s"]
    print(f"| {args.jobs} jobs of 1 s | Dask s | speed-up | threads s | overhead per job |")
    print("|---:|---:|---:|---:|---:|")
    for row in rows:
        n = row["workers"]
        row["speedup"] = one / row["dask_s"]
        row["overhead_per_job_s"] = (row["dask_s"] - row["threads_s"]) * n / args.jobs
        print(
            f"| {n} worker(s) | {row['dask_s']:.2f} | {row['speedup']:.2f}x | "
            f"{row['threads_s']:.2f} | {1000 * row['overhead_per_job_s']:.0f} ms |"
        )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=2)


if __name__ == "__main__":
    main()
