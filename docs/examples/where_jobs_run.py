"""Where jobs run: a coroutine handler, a process pool for CPU work, and retries.

Run it as it is: it starts its own in-memory TopChef server.
"""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from topchef_worker import RetryPolicy, TopChefClient, Worker
from topchef_worker.testing import TopChefServer

ANY = {"type": "object"}


class InstrumentBusyError(Exception):
    """The instrument answered "busy": worth trying again shortly."""


async def read_sensor(parameters: dict[str, Any]) -> dict[str, Any]:
    """Waits on I/O: awaited on the worker's event loop, many at once on one thread."""
    await asyncio.sleep(parameters["seconds"])
    return {"celsius": 21.5}


def integrate(parameters: dict[str, Any]) -> dict[str, Any]:
    """CPU-bound pure Python: on a process pool (a module-level function pickles)."""
    n = parameters["steps"]
    return {"area": sum(math.sin(math.pi * (i + 0.5) / n) for i in range(n)) * math.pi / n}


_busy_left = {"count": 2}


def move_stage(parameters: dict[str, Any]) -> dict[str, Any]:
    """Busy twice, then moves: retried on InstrumentBusyError, on the default threads."""
    if _busy_left["count"]:
        _busy_left["count"] -= 1
        raise InstrumentBusyError("stage controller busy")
    return {"position": parameters["to"]}


def describe(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": name,
        "job_registration_schema": ANY,
        "job_result_schema": ANY,
    }


def main() -> dict[str, dict[str, Any]]:
    with TopChefServer() as server, TopChefClient(server.url) as client:
        worker = Worker(
            server.url,
            max_jobs=8,
            pools={"cpu": lambda: ProcessPoolExecutor(2)},  # made, and remade, by the worker
        )
        worker.handler(**describe("sensor"))(read_sensor)
        worker.handler(**describe("integral"), pool="cpu", concurrency=2)(integrate)
        worker.handler(
            **describe("stage"),
            retry=RetryPolicy(initial=0.05, maximum=0.5, attempts=5, deadline=None),
            retry_on=InstrumentBusyError,
        )(move_stage)

        with worker:
            worker.wait_ready(timeout=30)
            ids = {service.name: service.id for service in worker.services}
            jobs = {
                "sensor": client.submit_job(ids["sensor"], {"seconds": 0.1}),
                "integral": client.submit_job(ids["integral"], {"steps": 100_000}),
                "stage": client.submit_job(ids["stage"], {"to": 12.5}),
            }
            worker.wait_for(lambda stats: stats.completed == len(jobs), timeout=60)
            print(f"retries: {worker.stats().retries}")
        return {name: client.job(job.id).results or {} for name, job in jobs.items()}


if __name__ == "__main__":
    for name, results in main().items():
        print(name, results)
