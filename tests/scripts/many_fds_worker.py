"""Run a worker until idle in a process that holds more than 1,024 open files.

Usage: python many_fds_worker.py URL SERVICE_ID (an Adder service).  ``select()``
cannot watch a descriptor above 1,023; ``run()`` must work anyway.  Prints
"completed N" at the end.
"""

from __future__ import annotations

import os
import resource
import sys
from typing import Any

from topchef_worker import Worker

OPEN_FILES = 1100


def add(parameters: dict[str, Any]) -> dict[str, Any]:
    return {"sum": parameters["a"] + parameters["b"]}


def main() -> None:
    url, service_id = sys.argv[1:3]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES + 200
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(OPEN_FILES)]
    try:
        worker = Worker(url, poll_interval=0.05)
        worker.handler(service_id)(add)
        worker.run(until_idle=True)
        print(f"completed {worker.stats().completed}", flush=True)
    finally:
        for fd in held:
            os.close(fd)


if __name__ == "__main__":
    main()
