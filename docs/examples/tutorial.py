"""The tutorial, as one program: a service, a handler, jobs, results.

Run it as it is: it starts its own in-memory TopChef server.  Against a real server,
replace ``TopChefServer()`` by your server's URL.
"""

from __future__ import annotations

from typing import Any

from topchef_worker import JobStatus, TopChefClient, Worker
from topchef_worker.testing import TopChefServer

PARAMETERS = {
    "type": "object",
    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
    "required": ["a", "b"],
}
RESULTS = {
    "type": "object",
    "properties": {"sum": {"type": "number"}},
    "required": ["sum"],
}


def add(parameters: dict[str, Any]) -> dict[str, Any]:
    """The handler: plain data in, plain data out."""
    return {"sum": parameters["a"] + parameters["b"]}


def main() -> list[dict[str, Any]]:
    with TopChefServer() as server, TopChefClient(server.url) as client:
        worker = Worker(server.url, max_jobs=4)
        worker.handler(
            name="Adder",
            description="adds a and b",
            job_registration_schema=PARAMETERS,
            job_result_schema=RESULTS,
        )(add)

        with worker:  # start(): returns at once; the worker connects in the background
            worker.wait_ready(timeout=30)  # the service is found (or created)
            (service,) = worker.services
            jobs = [client.submit_job(service.id, {"a": i, "b": 10}) for i in range(5)]
            worker.wait_for(lambda stats: stats.completed == len(jobs))

        results = [client.job(job.id) for job in jobs]
        assert all(job.status is JobStatus.COMPLETED for job in results)
        return [job.results or {} for job in results]


if __name__ == "__main__":
    for results in main():
        print(results)
