"""Run the Adder service on the embedded TopChef server with a Worker.

Starts an in-process TopChef server, submits jobs (one with bad parameters, which the
server refuses, and some that make the handler fail), runs a worker until the queue
is empty, and prints a summary.  Run: ``python examples/demo.py [--jobs N] [--max-jobs M]``.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from typing import Any

from topchef_worker import TopChefClient, Worker
from topchef_worker.exceptions import RejectedError
from topchef_worker.testing import TopChefServer

PARAMETERS = {
    "type": "object",
    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
    "required": ["a", "b"],
}
RESULTS = {
    "type": "object",
    "properties": {"sum": {"type": "number"}, "error": {"type": "string"}},
}


def add(parameters: dict[str, Any]) -> dict[str, Any]:
    """The handler: plain data in, plain data out."""
    if parameters["b"] < 0:
        raise ValueError("b must not be negative")
    return {"sum": parameters["a"] + parameters["b"]}


def main() -> None:
    parser = argparse.ArgumentParser(description="topchef-worker demo on the embedded server")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--max-jobs", type=int, default=4)
    args = parser.parse_args()
    # Failures are expected here (b < 0); the summary reports them instead of the log.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("topchef_worker").setLevel(logging.CRITICAL)

    with TopChefServer() as server, TopChefClient(server.url) as client:
        print(f"TopChef server at {server.url}")
        worker = Worker(server.url, max_jobs=args.max_jobs)
        worker.handler(
            name="Adder",
            description="adds a and b",
            job_registration_schema=PARAMETERS,
            job_result_schema=RESULTS,
            service_timeout=30,
            error_results=lambda error: {"error": str(error)},
        )(add)

        service = client.create_service(
            name="Adder",
            description="adds a and b",
            job_registration_schema=PARAMETERS,
            job_result_schema=RESULTS,
            timeout=30,
        )
        for i in range(args.jobs):
            client.submit_job(service.id, {"a": i, "b": -1 if i % 50 == 49 else 10})
        try:
            client.submit_job(service.id, {"a": "one"})
        except RejectedError as error:
            print(f"refused by the server: {error.errors[0].detail}")

        start = time.perf_counter()
        worker.run(until_idle=True)
        elapsed = time.perf_counter() - start

        stats = worker.stats()
        jobs = client.jobs(service.id)
        outcomes = Counter(job.status.value for job in jobs)
        failed = next((job for job in jobs if job.status == "ERROR"), None)
        print(f"service {service.name} {service.id}")
        print(
            f"jobs: {len(jobs)}  completed: {stats.completed}  failed: {stats.failed}  "
            f"in {elapsed:.2f} s ({stats.completed / elapsed:.0f} jobs/s, "
            f"max_jobs={args.max_jobs})"
        )
        print(f"statuses on the server: {dict(outcomes)}")
        if failed is not None:
            print(f"a failed job's results: {failed.results}")
        print(
            f"heartbeats: {stats.heartbeats_sent}, service timed out: "
            f"{client.service(service.id).has_timed_out}"
        )


if __name__ == "__main__":
    main()
