"""A program that serves a TopChef service for a while (see docs/embedding.md).

    python embed_script.py --url http://topchef.lab:5000 --jobs 20

It measures until it has done ``--jobs`` measurements (by default, until stopped),
or until Ctrl-C or SIGTERM, then prints the worker's counters as JSON.  Without
``--url``, ``$TOPCHEF_URL`` gives the server.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import signal
import threading
from typing import Any

from topchef_worker import Worker, WorkerStats

PARAMETERS = {
    "type": "object",
    "properties": {"seconds": {"type": "number", "minimum": 0}},
    "required": ["seconds"],
}
RESULTS = {
    "type": "object",
    "properties": {"celsius": {"type": "number"}, "seconds": {"type": "number"}},
    "required": ["celsius"],
}

log = logging.getLogger("thermometer")

#: Set once the worker has stopped: measurements still running give up.
ABORT = threading.Event()


class MeasurementAbortedError(Exception):
    """The program exits; the job is back in the queue already."""


def measure(parameters: dict[str, Any]) -> dict[str, Any]:
    """A slow measurement: the thermometer integrates for ``seconds``."""
    if ABORT.wait(parameters["seconds"]):  # stands for: probe.acquire(seconds), abortable
        raise MeasurementAbortedError("the program is exiting")
    return {"celsius": round(random.gauss(21.5, 0.1), 2), "seconds": parameters["seconds"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="the TopChef server (default: $TOPCHEF_URL)")
    parser.add_argument("--service", default="thermometer", help="the service's name")
    parser.add_argument("--jobs", type=int, help="stop after this many measurements")
    parser.add_argument("--stop-timeout", type=float, default=30.0, help="default: 30 s")
    args = parser.parse_args(argv)

    # A program configures logging; the library only adds a NullHandler.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # SIGTERM (systemd, docker stop) stops the program as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    worker = Worker(args.url, max_jobs=1)
    worker.handler(
        name=args.service,
        description="reads the lab thermometer",
        job_registration_schema=PARAMETERS,
        job_result_schema=RESULTS,
    )(measure)

    def finished(stats: WorkerStats) -> bool:
        return args.jobs is not None and stats.completed + stats.failed >= args.jobs

    with worker:  # start() now, stop() when the block ends, however it ends
        try:
            worker.wait_ready()  # raises what kept the worker from starting, if anything
            worker.wait_for(finished, timeout=math.inf)
        except KeyboardInterrupt:
            log.info("interrupted: stopping")
        finally:
            try:
                # The block's own stop() waits as long as jobs take: bound it here.
                worker.stop(timeout=args.stop_timeout)
            finally:
                ABORT.set()  # a thread cannot be killed: ask the measurement to end
    print(json.dumps(worker.stats().to_dict()))


if __name__ == "__main__":
    main()
