"""What every ``topchef-worker`` command shares: exit codes, the two kinds of error,
the parser, argument types, the server URL and JSON output.

Kept apart from the commands so that the worker commands (:mod:`topchef_worker.cli`)
and the server-admin commands (:mod:`topchef_worker._cli_admin`) speak the same way:
one line ``topchef-worker: error: ...`` on stderr and a documented exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, NoReturn

from ._arguments import check_base_url
from ._client import TopChefClient
from ._ids import parse_id
from ._models import Job, JobStatus, ServiceSummary

__all__ = [
    "FAILED",
    "LOG_LEVELS",
    "OK",
    "USAGE",
    "CommandFailedError",
    "Parser",
    "UsageError",
    "admin_url",
    "job_id",
    "job_record",
    "note",
    "open_client",
    "port",
    "positive_int",
    "print_json",
    "seconds",
    "service_record",
    "status",
    "url_option",
]

OK, FAILED, USAGE = 0, 1, 2

#: The levels ``--log-level`` takes; anything else is refused by the parser rather
#: than by :mod:`logging` with a traceback.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class UsageError(Exception):
    """A mistake in the command line: reported in one line, exit code 2."""


class CommandFailedError(Exception):
    """A failure at run time that the command words itself (a job ended in ERROR, a
    wait ran out): reported in one line, exit code 1."""


class Parser(argparse.ArgumentParser):
    """argparse, with its errors worded and numbered like every other error."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"topchef-worker: error: {message}\n")


def note(message: str) -> None:
    """Tell the person at the terminal, on stderr, so that stdout stays data."""
    print(message, file=sys.stderr, flush=True)


# -- argument types ----------------------------------------------------------------------


def status(value: str) -> JobStatus:
    try:
        return JobStatus(value.upper())
    except ValueError:
        choices = ", ".join(s.value for s in JobStatus)
        raise argparse.ArgumentTypeError(f"{value!r} is not a job status ({choices})") from None


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not number >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return number


def port(value: str) -> int:
    """A TCP port.  Checked here because ``getaddrinfo`` quietly wraps 70000 to 4464."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {number}")
    return number


def job_id(value: str) -> str:
    """A job id in canonical form, so that it compares equal to the server's."""
    canonical = parse_id(value)
    if canonical is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a job id (a UUID)")
    return canonical


# -- the server ---------------------------------------------------------------------------


def url_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--url", help="TopChef server URL (default: $TOPCHEF_URL)")


def admin_url(args: argparse.Namespace) -> str:
    """The server the admin commands talk to: ``--url``, else ``$TOPCHEF_URL``.

    Checked before any request, so that a URL naming an endpoint or a malformed one
    is a configuration error (exit 2) rather than a puzzling 404.
    """
    url = args.url or os.environ.get("TOPCHEF_URL")
    if not url:
        raise UsageError("no TopChef URL: pass --url or set TOPCHEF_URL")
    return check_base_url(str(url))


def open_client(args: argparse.Namespace) -> TopChefClient:
    return TopChefClient(admin_url(args))


# -- JSON output --------------------------------------------------------------------------


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def service_record(service: ServiceSummary) -> dict[str, Any]:
    return {"id": service.id, "name": service.name, "description": service.description}


def job_record(job: Job, service_id: str | None) -> dict[str, Any]:
    """A job as plain JSON: the status as its value, the date as an ISO string."""
    return {
        "id": job.id,
        "service_id": service_id,
        "status": job.status.value,
        "date_submitted": job.date_submitted.isoformat(),
        "parameters": job.parameters,
        "results": job.results,
    }
