"""A program that stops its worker in an atexit hook, and returns from main while a
job runs and another is claimed but not yet started.

Usage: python atexit_worker.py URL SERVICE_ID [default-pool] (an Adder service with
two jobs, or three).  The job pool has one thread, so with ``max_jobs=2`` the second
job is claimed and waits in the pool.  The first job's handler holds until main is
about to return, then works on for half a second more.  Prints "returning" as main
returns.

With ``default-pool`` the worker makes its own pool: both jobs run and hold until main
returns, the second then ends at once, and a third job waits in the queue while the
interpreter exits and every pool refuses work.
"""

from __future__ import annotations

import atexit
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from topchef_worker import Worker

running = threading.Event()
returning = threading.Event()


def handle(parameters: dict[str, Any]) -> dict[str, Any]:
    if not running.is_set():
        running.set()
        returning.wait(30)  # in flight when main returns ...
        threading.Event().wait(0.5)  # ... and some work left after that
    return {"sum": parameters["a"] + parameters["b"]}


started = threading.Semaphore(0)


def hold_both(parameters: dict[str, Any]) -> dict[str, Any]:
    first = not running.is_set()
    running.set()
    started.release()
    returning.wait(30)
    if first:
        threading.Event().wait(0.5)
    return {"sum": parameters["a"] + parameters["b"]}


def main() -> None:
    url, service_id = sys.argv[1:3]
    if sys.argv[3:] == ["default-pool"]:
        worker = Worker(url, max_jobs=2, poll_interval=0.05, heartbeat_interval=0.1)
        worker.handler(service_id)(hold_both)
    else:
        pool = ThreadPoolExecutor(1, thread_name_prefix="app-jobs")
        worker = Worker(url, max_jobs=2, job_pool=pool, poll_interval=0.05, heartbeat_interval=0.1)
        worker.handler(service_id)(handle)
    atexit.register(worker.stop, 5)
    worker.start()
    if not running.wait(30):
        sys.exit("the first job never started")
    worker.wait_for(lambda stats: stats.claimed == 2, timeout=30)
    returning.set()
    print("returning", flush=True)


if __name__ == "__main__":
    main()
