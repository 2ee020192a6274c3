"""Jobs per second through the Worker, against baselines run in the same process.

Two scenarios, each on a fresh in-process ``TopChefServer`` (jobs are submitted before
the clock starts; the service is polled until its queue is empty):

1. **No-op jobs.**  The baseline is the *ideal sequential loop*: one keep-alive
   session doing ``GET jobs/next``, ``PATCH WORKING``, ``PATCH COMPLETED`` per job and
   nothing else, the client-side limit for one poller.  The worker runs the same jobs
   with ``max_jobs`` = 1, 4 and 8.  Targets: >= 0.9x the ideal loop at ``max_jobs=1``,
   above 1.0x at ``max_jobs>=4``.
2. **50 ms sleeping jobs.**  The worker at ``max_jobs`` = 1 and 16; target: 16 slots
   >= 12x the throughput of one.

Run: ``python benchmarks/worker_throughput.py [--jobs N] [--sleep-jobs M] [--repeat R]``.
The median of R runs is reported.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any, Callable

import requests

from topchef_worker import TopChefClient, Worker
from topchef_worker.testing import TopChefServer


def noop(parameters: dict[str, Any]) -> dict[str, Any]:
    return {}


def sleeper(parameters: dict[str, Any]) -> dict[str, Any]:
    threading.Event().wait(0.05)
    return {}


def _fresh(jobs: int) -> tuple[TopChefServer, str]:
    server = TopChefServer(log_size=100).start()
    client = TopChefClient(server.url)
    sid = client.create_service(
        name="bench", description="d", job_registration_schema={}, job_result_schema={}
    ).id
    for i in range(jobs):
        client.submit_job(sid, {"i": i})
    client.close()
    return server, sid


def ideal_loop(jobs: int) -> float:
    """GET next, PATCH WORKING, PATCH COMPLETED per job on one session."""
    server, sid = _fresh(jobs)
    session = requests.Session()
    headers = {"Content-Type": "application/json"}
    try:
        start = time.perf_counter()
        done = 0
        while True:
            response = session.get(f"{server.url}/services/{sid}/jobs/next", timeout=10)
            if response.status_code == 204:
                break
            job_id = response.json()["data"]["id"]
            url = f"{server.url}/jobs/{job_id}"
            session.patch(url, data='{"status": "WORKING"}', headers=headers, timeout=10)
            session.patch(
                url, data='{"status": "COMPLETED", "results": {}}', headers=headers, timeout=10
            )
            done += 1
        elapsed = time.perf_counter() - start
    finally:
        session.close()
        server.stop()
    assert done == jobs
    return jobs / elapsed


def worker_run(jobs: int, max_jobs: int, handler: Callable[[dict[str, Any]], Any]) -> float:
    server, sid = _fresh(jobs)
    try:
        worker = Worker(server.url, max_jobs=max_jobs)
        worker.handler(sid)(handler)
        start = time.perf_counter()
        worker.run(until_idle=True)
        elapsed = time.perf_counter() - start
    finally:
        server.stop()
    assert worker.stats().completed == jobs, worker.stats()
    return jobs / elapsed


def median(repeat: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--sleep-jobs", type=int, default=160)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    ideal = median(args.repeat, lambda: ideal_loop(args.jobs))
    print(f"1. no-op jobs ({args.jobs}), jobs/s and ratio to the ideal sequential loop")
    print(f"   {'ideal loop':24} {ideal:8.0f}  1.00x")
    for max_jobs in (1, 4, 8):
        rate = median(args.repeat, lambda m=max_jobs: worker_run(args.jobs, m, noop))
        print(f"   {f'worker max_jobs={max_jobs}':24} {rate:8.0f}  {rate / ideal:.2f}x")

    print(f"2. 50 ms jobs ({args.sleep_jobs}), jobs/s and ratio to max_jobs=1")
    one = median(1, lambda: worker_run(args.sleep_jobs // 4, 1, sleeper))
    print(f"   {'worker max_jobs=1':24} {one:8.1f}  1.00x")
    sixteen = median(args.repeat, lambda: worker_run(args.sleep_jobs, 16, sleeper))
    print(f"   {'worker max_jobs=16':24} {sixteen:8.1f}  {sixteen / one:.2f}x")


if __name__ == "__main__":
    main()
