"""The commands that look after a server's services and jobs: ``services``, ``jobs``,
``job`` and ``submit`` (``requeue`` is in :mod:`topchef_worker._cli_requeue`).

They talk to the server through :class:`TopChefClient` only, so what they show is
what any client would see.  Lists go to stdout one item a line (or as JSON with
``--json``); remarks such as "nothing here" go to stderr, so that a script reading
stdout gets data and nothing else.
"""

from __future__ import annotations

import argparse
import json
import textwrap
import time
from collections.abc import Callable
from typing import Any

from ._arguments import redact
from ._cli_common import (
    OK,
    CommandFailedError,
    UsageError,
    job_id,
    job_record,
    note,
    open_client,
    print_json,
    seconds,
    service_record,
    status,
    url_option,
)
from ._client import TopChefClient
from ._ids import parse_id
from ._models import Job, JobStatus, ServiceSummary

__all__ = ["add_admin_commands", "find_service"]

#: How long ``submit --wait`` sleeps between polls: short at first, since most jobs
#: are quick, then no more than this, so a long job costs one request a second.
FIRST_POLL, LAST_POLL = 0.1, 1.0

SERVICE_HELP = "the service's id or its name"


def find_service(client: TopChefClient, wanted: str) -> ServiceSummary:
    """The service whose id or name is *wanted*.

    People remember names and scripts keep ids, so both are taken.  Names are not
    unique on TopChef: a name several services share is a usage error listing their
    ids (exit 2), since guessing could send jobs to the wrong one.
    """
    services = client.services()
    sid = parse_id(wanted)
    if sid is not None:
        for service in services:
            if service.id == sid:
                return service
    named = [service for service in services if service.name == wanted]
    if len(named) > 1:
        ids = ", ".join(service.id for service in named)
        raise UsageError(f"{len(named)} services are named {wanted!r}: {ids}; give an id")
    if not named:
        raise CommandFailedError(
            f"no service with id or name {wanted!r} on {redact(client.base_url)}"
        )
    return named[0]


def describe(service: ServiceSummary) -> str:
    return f"{service.name} ({service.id})"


# -- services, jobs, job ------------------------------------------------------------------


def cmd_services(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        services = client.services()
        url = redact(client.base_url)
    if args.json:
        print_json([service_record(service) for service in services])
        return OK
    if not services:
        note(f"no services on {url}")
    for service in services:
        print(f"{service.id}  {service.name}  {service.description}")
    return OK


def cmd_jobs(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        service = find_service(client, args.service)
        jobs = [
            job
            for job in client.jobs(service.id)
            if args.status is None or job.status is args.status
        ]
        url = redact(client.base_url)
    if args.json:
        print_json([job_record(job, service.id) for job in jobs])
        return OK
    if not jobs:
        which = "jobs" if args.status is None else f"{args.status.value} jobs"
        hint = "" if args.status is None else f" (--status {args.status.value})"
        note(f"no {which} of {describe(service)} on {url}{hint}")
    for job in jobs:
        print(f"{job.id}  {job.status.value:<10}  {job.date_submitted.isoformat()}")
    return OK


def owner(client: TopChefClient, jid: str) -> ServiceSummary | None:
    """The service a job belongs to.

    TopChef's job view does not say, so each service's detail is read until one
    lists the job: a request per service, which is fine for a command a person runs.
    """
    for service in client.services():
        if any(summary.id == jid for summary in client.service(service.id).jobs):
            return service
    return None


def cmd_job(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        job = client.job(args.job_id)
        service = owner(client, job.id)
    if args.json:
        print_json(job_record(job, None if service is None else service.id))
    else:
        print(job_text(job, service))
    return OK


def job_text(job: Job, service: ServiceSummary | None) -> str:
    """A job for people: one field a line, parameters and results as indented JSON."""

    def field(label: str, value: Any) -> str:
        if isinstance(value, dict):
            text = json.dumps(value, indent=2, ensure_ascii=False)
            return f"{label}:\n{textwrap.indent(text, '  ')}"
        return f"{label + ':':<12} {'none' if value is None else value}"

    return "\n".join(
        [
            field("id", job.id),
            field("status", job.status.value),
            field("service", "unknown" if service is None else describe(service)),
            field("submitted", job.date_submitted.isoformat()),
            field("parameters", job.parameters),
            field("results", job.results),
        ]
    )


# -- submit ---------------------------------------------------------------------------------


def parse_parameters(text: str) -> dict[str, Any]:
    try:
        parameters = json.loads(text)
    except ValueError as error:
        raise UsageError(f"PARAMETERS is not valid JSON: {error}") from None
    if not isinstance(parameters, dict):
        raise UsageError("PARAMETERS must be a JSON object, e.g. '{\"a\": 1}'")
    return parameters


def cmd_submit(args: argparse.Namespace) -> int:
    parameters = parse_parameters(args.parameters)
    if args.timeout is not None and not args.wait:
        raise UsageError("--timeout needs --wait")
    with open_client(args) as client:
        service = find_service(client, args.service)
        job = client.submit_job(service.id, parameters)
        if not args.wait:
            print(job.id)
            return OK
        note(f"submitted job {job.id} to {describe(service)}; waiting for it to finish")
        finished = wait_for_job(client, job.id, args.timeout)
    print_json(finished.results)
    if finished.status is JobStatus.ERROR:
        results = "its results are above" if finished.results is not None else "no results"
        raise CommandFailedError(f"job {job.id} ended in ERROR ({results})")
    return OK


def wait_for_job(
    client: TopChefClient,
    jid: str,
    timeout: float | None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Job:
    """Poll the job until it is COMPLETED or ERROR, and return it.

    TopChef cannot notify, so this polls, quickly at first and then once a second.
    Running out of *timeout* (or Ctrl-C) is a :class:`CommandFailedError` that says the job is
    still on the server, where a worker may yet finish it.
    """
    deadline = None if timeout is None else clock() + timeout
    delay = FIRST_POLL
    try:
        while True:
            job = client.job(jid)
            if job.status.is_finished:
                return job
            left = None if deadline is None else deadline - clock()
            if left is not None and left <= 0:
                raise CommandFailedError(
                    f"job {jid} is still {waiting_state(job)} after {timeout:g} s; it stays "
                    f"on the server (see: topchef-worker job {jid})"
                )
            sleep(delay if left is None else min(delay, left))
            delay = min(delay * 2, LAST_POLL)
    except KeyboardInterrupt:
        raise CommandFailedError(f"interrupted; job {jid} stays on the server") from None


def waiting_state(job: Job) -> str:
    return "queued (REGISTERED)" if job.status is JobStatus.REGISTERED else job.status.value


# -- the parsers ----------------------------------------------------------------------------


def add_admin_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``services``, ``jobs``, ``job`` and ``submit`` to the top-level parser."""
    formatter = argparse.RawDescriptionHelpFormatter

    def json_option(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--json", action="store_true", help="print JSON (dates as ISO strings)"
        )

    services = commands.add_parser(
        "services",
        help="list a server's services",
        formatter_class=formatter,
        epilog="examples:\n"
        "  topchef-worker services --url http://127.0.0.1:5000\n"
        "  topchef-worker services --json",
    )
    json_option(services)
    url_option(services)
    services.set_defaults(handler=cmd_services)

    jobs = commands.add_parser(
        "jobs",
        help="list a service's jobs",
        formatter_class=formatter,
        epilog="examples:\n"
        "  topchef-worker jobs Adder --status WORKING\n"
        "  topchef-worker jobs SERVICE_ID --json",
    )
    jobs.add_argument("service", metavar="SERVICE", help=SERVICE_HELP)
    jobs.add_argument("--status", type=status, help="only jobs in this status")
    json_option(jobs)
    url_option(jobs)
    jobs.set_defaults(handler=cmd_jobs)

    job = commands.add_parser(
        "job",
        help="show one job: status, service, parameters and results",
        formatter_class=formatter,
        description="Show a job.  TopChef does not say which service a job belongs to, "
        "so this\nreads each service's detail until one lists it.",
        epilog="examples:\n  topchef-worker job JOB_ID\n  topchef-worker job JOB_ID --json",
    )
    job.add_argument("job_id", metavar="JOB_ID", type=job_id)
    json_option(job)
    url_option(job)
    job.set_defaults(handler=cmd_job)

    submit = commands.add_parser(
        "submit",
        help="submit a job, and perhaps wait for its results",
        formatter_class=formatter,
        description="Submit a job and print its id.  With --wait, wait until it is "
        "COMPLETED or ERROR\nand print its results as JSON instead: exit code 0 for "
        "COMPLETED, 1 for ERROR\nor when --timeout runs out (the job stays on the server).",
        epilog="examples:\n"
        '  topchef-worker submit SERVICE_ID \'{"a": 1, "b": 2}\'\n'
        '  topchef-worker submit Adder \'{"a": 1, "b": 2}\' --wait --timeout 60',
    )
    submit.add_argument("service", metavar="SERVICE", help=SERVICE_HELP)
    submit.add_argument("parameters", metavar="PARAMETERS", help="a JSON object")
    submit.add_argument(
        "--wait", action="store_true", help="wait for the job to finish; print its results"
    )
    submit.add_argument(
        "--timeout", type=seconds, metavar="SECONDS", help="with --wait: give up after this"
    )
    url_option(submit)
    submit.set_defaults(handler=cmd_submit)
