"""``with worker:`` stopped by Ctrl-C, and its stop() interrupted by a second one.

Usage: python interrupted_worker.py URL SERVICE_ID (an Adder service with one job).
Prints "running" when the job's handler runs (it works for 3 s), and "stopping" when
the worker starts stopping; the test sends SIGINT after each.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from topchef_worker import Worker, WorkerState
from topchef_worker.events import Event, StateChanged


def handle(parameters: dict[str, Any]) -> dict[str, Any]:
    print("running", flush=True)
    threading.Event().wait(3.0)  # a job that takes a few seconds
    return {"sum": parameters["a"] + parameters["b"]}


def say_stopping(event: Event) -> None:
    if isinstance(event, StateChanged) and event.new is WorkerState.STOPPING:
        print("stopping", flush=True)


def main() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever we inherited
    url, service_id = sys.argv[1:3]
    worker = Worker(url, max_jobs=1, poll_interval=0.05, heartbeat_interval=0.1)
    worker.handler(service_id)(handle)
    worker.add_listener(say_stopping)
    with worker:
        threading.Event().wait()


if __name__ == "__main__":
    main()
