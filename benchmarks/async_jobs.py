"""Jobs that wait: coroutine handlers on the event loop against functions on threads.

Runs the same 200 jobs (each waits 1 s: ``await asyncio.sleep(1)``, or
``time.sleep(1)`` on a thread) with ``max_jobs=200`` on a fresh stand-in server, one
contender after the other in this process, and reports the wall time from the first
submission to the last completion and the most threads the process had meanwhile.

Run: ``python benchmarks/async_jobs.py [--jobs 200] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from typing import Any

from topchef_worker import ServiceRole, TopChefClient, Worker
from topchef_worker.testing import TopChefServer


async def wait_async(parameters: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(1.0)
    return {"waited": 1.0}


def wait_sync(parameters: dict[str, Any]) -> dict[str, Any]:
    time.sleep(1.0)  # the job's own work
    return {"waited": 1.0}


class PeakThreads:
    """The most threads alive, sampled every 10 ms while it runs."""

    def __init__(self) -> None:
        self.peak = threading.active_count()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakThreads:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            self.peak = max(self.peak, threading.active_count())


def run(handler: Any, jobs: int) -> dict[str, Any]:
    with TopChefServer() as server:
        worker = Worker(server.url, max_jobs=jobs, min_poll_interval=0.005, poll_interval=0.05)
        worker.handler(
            name="wait",
            description="waits a second",
            job_registration_schema={"type": "object"},
            job_result_schema={"type": "object"},
        )(handler)
        before = threading.active_count()
        with worker:
            worker.wait_for(lambda s: ServiceRole.ACTIVE in s.roles.values(), 30)
            service = worker.services[0]
            with TopChefClient(server.url) as client, PeakThreads() as threads:
                started = time.perf_counter()
                for _ in range(jobs):
                    client.submit_job(service.id, {})
                worker.wait_for(lambda s: s.completed == jobs, 120)
                wall = time.perf_counter() - started
        return {"wall_s": wall, "peak_threads": threads.peak, "threads_before": before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    figures = {
        "async def on the event loop": run(wait_async, args.jobs),
        "def on a thread pool": run(wait_sync, args.jobs),
    }
    print(f"| {args.jobs} jobs of 1 s, max_jobs={args.jobs} | wall s | peak threads |")
    print("|---|---:|---:|")
    for name, row in figures.items():
        print(f"| {name} | {row['wall_s']:.2f} | {row['peak_threads']} |")
    base = figures["def on a thread pool"]
    coro = figures["async def on the event loop"]
    print(
        f"\nwall time ratio (async / threads): {coro['wall_s'] / base['wall_s']:.2f}; "
        f"threads {coro['peak_threads']} against {base['peak_threads']}"
    )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(figures, file, indent=2)


if __name__ == "__main__":
    main()
