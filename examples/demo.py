"""Register a service on the embedded TopChef server, submit jobs and process them.

This is the protocol a worker follows, written out with the client: heartbeat, poll
(``jobs/next`` does not claim), claim with a PATCH to WORKING, run, report.  It prints
each step and a summary.  Run: ``python examples/demo.py [--jobs N]``.
"""

from __future__ import annotations

import argparse
import time

from topchef_worker import TopChefClient
from topchef_worker.exceptions import RejectedError
from topchef_worker.testing import TopChefServer

PARAMETERS = {
    "type": "object",
    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
    "required": ["a", "b"],
}
RESULTS = {"type": "object", "properties": {"sum": {"type": "number"}}, "required": ["sum"]}


def main() -> None:
    parser = argparse.ArgumentParser(description="TopChef client demo on the embedded server")
    parser.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args()

    with TopChefServer() as server, TopChefClient(server.url) as client:
        print(f"TopChef server at {server.url}")
        service = client.create_service(
            name="Adder",
            description="adds a and b",
            job_registration_schema=PARAMETERS,
            job_result_schema=RESULTS,
            timeout=30,
        )
        print(f"service {service.name} {service.id} (timeout {service.timeout} s)")
        for i in range(args.jobs):
            client.submit_job(service.id, {"a": i, "b": 10})
        try:
            client.submit_job(service.id, {"a": "one"})
        except RejectedError as error:
            print(f"a bad job is refused by the server: {error.errors[0].detail}")

        start = time.perf_counter()
        completed = 0
        client.check_in(service.id)
        while (job := client.next_job(service.id)) is not None:
            client.update_job(job.id, status="WORKING")
            total = job.parameters["a"] + job.parameters["b"]
            client.update_job(job.id, status="COMPLETED", results={"sum": total})
            completed += 1
        elapsed = time.perf_counter() - start

        statuses = [j.status.value for j in client.jobs(service.id)]
        print(f"completed {completed} jobs in {elapsed:.3f} s ({completed / elapsed:.0f} jobs/s)")
        print(f"statuses on the server: {sorted(set(statuses))}")
        print(f"service timed out: {client.service(service.id).has_timed_out}")


if __name__ == "__main__":
    main()
