"""One worker of a fleet: several of these processes serve one service at once.

Usage: python fleet_worker.py URL SERVICE_ID LOG_PATH [--max-jobs N] [--job-seconds S]
[--shared] [--heartbeat-interval S] [--journal PATH] [--retry fast|default].

The handler appends ``start <job_id> <pid> <time>`` to LOG_PATH before its work and
``end <job_id> <pid> <time>`` after (Unix seconds, so that lines from different
processes compare), each with one ``os.write`` on an ``O_APPEND`` descriptor: the
processes share the file and no line can be torn or interleaved.  Two lines, not one
written at the end, so that a job whose process was killed -9 still shows that it
started.  On stdout, flushed: ``state <STATE>`` at every state change, ``role <role>
<reason>`` at every role change and ``claimed <job_id>`` at every claim, for a harness
to wait on.

``--shared`` passes ``exclusive=False``: every worker claims, instead of one active
worker while the others stand by.  ``--journal`` gives the worker a journal;
``--retry default`` keeps the worker's own retry policy (waits up to 30 s) instead of
a quick one (waits up to 0.2 s).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any

from topchef_worker import Job, RetryPolicy, Worker
from topchef_worker.events import Event, JobClaimed, RoleChanged, StateChanged


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("service_id")
    parser.add_argument("log_path")
    parser.add_argument("--max-jobs", type=int, default=4)
    parser.add_argument("--job-seconds", type=float, default=0.0)
    parser.add_argument("--shared", action="store_true", help="Worker(exclusive=False)")
    parser.add_argument("--heartbeat-interval", type=float, default=None)
    parser.add_argument("--journal", default=None)
    parser.add_argument("--retry", choices=["fast", "default"], default="fast")
    return parser.parse_args(argv)


def say(event: Event) -> None:
    """Print what a harness waits on; flushed, since stdout is a pipe."""
    if isinstance(event, StateChanged):
        print(f"state {event.new}", flush=True)
    elif isinstance(event, RoleChanged):
        print(f"role {event.role} {event.reason}", flush=True)
    elif isinstance(event, JobClaimed):
        print(f"claimed {event.job_id}", flush=True)


def main(argv: list[str]) -> None:
    args = parse(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    pid = os.getpid()
    # One descriptor for the process's life; O_APPEND makes each write land at the
    # end of the file whatever the other processes wrote meanwhile.
    log_fd = os.open(args.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def note(what: str, job_id: str) -> None:
        os.write(log_fd, f"{what} {job_id} {pid} {time.time():.6f}\n".encode())

    settings: dict[str, Any] = {}
    if args.shared:
        settings["exclusive"] = False
    if args.heartbeat_interval is not None:
        settings["heartbeat_interval"] = args.heartbeat_interval
    if args.retry == "fast":
        settings["retry"] = RetryPolicy.forever(initial=0.01, maximum=0.2)
    if args.journal is not None:
        settings["journal"] = args.journal
    worker = Worker(
        args.url,
        max_jobs=args.max_jobs,
        min_poll_interval=0.005,
        poll_interval=0.2,
        **settings,
    )

    @worker.handler(args.service_id)
    def handle(parameters: dict[str, Any], job: Job) -> dict[str, Any]:
        note("start", job.id)
        if args.job_seconds > 0:
            time.sleep(args.job_seconds)  # the job's own work, not synchronisation
        note("end", job.id)
        return {"pid": pid}

    worker.add_listener(say)
    try:
        worker.run()
    finally:
        os.close(log_fd)


if __name__ == "__main__":
    main(sys.argv[1:])
