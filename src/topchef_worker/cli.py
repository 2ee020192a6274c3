"""The ``topchef-worker`` command: run a worker, serve a test server, try the demo,
and look after a server's services and jobs.

Exit codes: 0 success (including a worker stopped by SIGINT/SIGTERM), 1 a failure
at run time (the server cannot be reached, a service does not exist, the worker
failed), 2 a usage or configuration error (bad arguments, a wrong ``MODULE:ATTR``,
bad JSON, no URL).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn

from ._client import TopChefClient
from ._logging import configure_logging
from ._models import JobStatus
from ._worker import Worker
from .exceptions import ConfigurationError, InvalidRequestError, TopChefError

__all__ = ["main"]

OK, FAILED, USAGE = 0, 1, 2


class UsageError(Exception):
    """A mistake in the command line: reported in one line, exit code 2."""


def load_worker(target: str) -> Worker:
    """Find the Worker at ``MODULE:ATTR`` or ``path/to/file.py:ATTR``."""
    location, _, attr = target.rpartition(":")
    if not location or not attr:
        raise UsageError(f"expected MODULE:ATTR or FILE.py:ATTR, got {target!r}")
    if location.endswith(".py") or os.sep in location or "/" in location:
        path = Path(location)
        if not path.is_file():
            raise UsageError(f"no such file: {location}")
        # Imported by name from its directory, so that process pools can pickle its
        # handlers by reference.
        sys.path.insert(0, str(path.resolve().parent))
        module_name = path.stem
    else:
        sys.path.insert(0, os.getcwd())
        module_name = location
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name:
            raise UsageError(
                f"cannot import {location!r}: no module named {module_name!r}"
            ) from None
        raise UsageError(f"importing {location!r} failed: {error}") from None
    except Exception as error:
        raise UsageError(
            f"importing {location!r} failed: {type(error).__name__}: {error}"
        ) from None
    try:
        worker = getattr(module, attr)
    except AttributeError:
        raise UsageError(f"{location!r} has no attribute {attr!r}") from None
    if not isinstance(worker, Worker):
        raise UsageError(f"{target} is a {type(worker).__name__}, not a topchef_worker.Worker")
    return worker


def _url(args: argparse.Namespace) -> str:
    url = args.url or os.environ.get("TOPCHEF_URL")
    if not url:
        raise UsageError("no TopChef URL: pass --url or set TOPCHEF_URL")
    return str(url)


def _client(args: argparse.Namespace) -> TopChefClient:
    try:
        return TopChefClient(_url(args))
    except ValueError as error:
        raise UsageError(str(error)) from None


# -- commands --------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    worker = load_worker(args.target)
    configure_logging(args.log_level, args.log_format)
    url = args.url or os.environ.get("TOPCHEF_URL")
    try:
        worker.configure(url=url, max_jobs=args.max_jobs, outbox=args.outbox, journal=args.journal)
    except ConfigurationError as error:
        raise UsageError(str(error)) from None
    monitoring = None
    if args.metrics_port is not None:
        from ._metrics import MonitoringServer, PrometheusMetrics

        try:
            metrics: PrometheusMetrics | None = PrometheusMetrics(worker)
        except ImportError as error:
            print(f"topchef-worker: {error}; serving /healthz and /readyz only", file=sys.stderr)
            metrics = None
        try:
            monitoring = MonitoringServer(
                worker, host=args.metrics_host, port=args.metrics_port, metrics=metrics
            )
        except OSError as error:  # an unknown host, a port in use or not allowed
            raise UsageError(
                f"cannot serve metrics on {args.metrics_host} port {args.metrics_port}: {error}"
            ) from None
        monitoring.start()
    try:
        worker.run(stop_timeout=args.grace)
    finally:
        if monitoring is not None:
            monitoring.stop()
    if worker.stats().overrun:
        # Handlers that ignored the stop are still running, and threads cannot be
        # killed; their jobs are back in the queue, so leave without them.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(OK)
    return OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .testing import TopChefServer

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with TopChefServer(host=args.host, port=args.port) as server:
            url = server.url
            print(f"TopChef test server at {url} (in memory; Ctrl-C stops it)")
            print("Try:")
            print(
                f"  curl -si -X POST -H 'Content-Type: application/json' -d "
                f'\'{{"name": "Adder", "description": "adds", "job_registration_schema": {{}}, '
                f'"job_result_schema": {{}}}}\' {url}/services'
            )
            print(f"  curl -s {url}/services")
            print(f"  curl -si -X PATCH {url}/services/SERVICE_ID      # a heartbeat")
            print(
                f"  curl -si -X POST -H 'Content-Type: application/json' "
                f"-d '{{\"parameters\": {{}}}}' {url}/services/SERVICE_ID/jobs"
            )
            print(f"  curl -si {url}/services/SERVICE_ID/jobs/next", flush=True)
            while not stop.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return OK


def cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo
    from .testing import TopChefServer

    configure_logging("WARNING", "text")
    # Some demo jobs fail on purpose; the summary reports them instead of the log.
    logging.getLogger("topchef_worker").setLevel(logging.CRITICAL)
    with TopChefServer() as server:
        print(f"embedded TopChef server at {server.url}")
        summary = run_demo(server.url, jobs=args.jobs, max_jobs=args.max_jobs)
    return OK if summary["completed"] + summary["failed"] == summary["jobs"] else FAILED


def cmd_services(args: argparse.Namespace) -> int:
    with _client(args) as client:
        for service in client.services():
            print(f"{service.id}  {service.name}  {service.description}")
    return OK


def cmd_jobs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        for job in client.jobs(args.service_id):
            if args.status is None or job.status is args.status:
                print(f"{job.id}  {job.status.value:<10}  {job.date_submitted.isoformat()}")
    return OK


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        parameters = json.loads(args.parameters)
    except ValueError as error:
        raise UsageError(f"PARAMETERS is not valid JSON: {error}") from None
    if not isinstance(parameters, dict):
        raise UsageError("PARAMETERS must be a JSON object, e.g. '{\"a\": 1}'")
    with _client(args) as client:
        job = client.submit_job(args.service_id, parameters)
    print(job.id)
    return OK


def cmd_requeue(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.all_working:
            ids = [
                job.id for job in client.jobs(args.service_id) if job.status is JobStatus.WORKING
            ]
        else:
            ids = list(args.job)
        if not ids:
            print("no WORKING jobs to requeue")
            return OK
        if not args.yes:
            if not sys.stdin.isatty():
                raise UsageError("refusing to requeue without confirmation: add --yes")
            answer = input(f"Put {len(ids)} job(s) back to REGISTERED? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing changed")
                return OK
        for job_id in ids:
            client.update_job(job_id, status=JobStatus.REGISTERED)
            print(f"{job_id}  REGISTERED")
    return OK


# -- the parser -------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"{self.prog}: error: {message}\n")


def _status(value: str) -> JobStatus:
    try:
        return JobStatus(value.upper())
    except ValueError:
        choices = ", ".join(s.value for s in JobStatus)
        raise argparse.ArgumentTypeError(f"{value!r} is not a job status ({choices})") from None


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="topchef-worker",
        description="Run TopChef job-processing services written in Python.",
        formatter_class=formatter,
        epilog="examples:\n"
        "  topchef-worker demo\n"
        "  topchef-worker run app:worker --url http://topchef.lab:5000\n"
        "  topchef-worker serve --port 5000\n"
        "  topchef-worker services --url http://127.0.0.1:5000\n\n"
        "exit codes: 0 success, 1 failure at run time, 2 usage or configuration error",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def url_option(command: argparse.ArgumentParser) -> None:
        command.add_argument("--url", help="TopChef server URL (default: $TOPCHEF_URL)")

    run = commands.add_parser(
        "run",
        help="run a Worker defined in your code",
        formatter_class=formatter,
        description="Run the Worker object found at MODULE:ATTR (or FILE.py:ATTR) until "
        "SIGINT or SIGTERM.\nThe first signal drains running jobs for up to --grace "
        "seconds, then puts the rest back\nin the queue; a second signal stops at once.",
        epilog="examples:\n"
        "  topchef-worker run app:worker --url http://topchef.lab:5000\n"
        "  TOPCHEF_URL=http://127.0.0.1:5000 topchef-worker run ./lab/app.py:worker "
        "--max-jobs 8\n"
        "  topchef-worker run app:worker --log-format json --metrics-port 9100 "
        "--outbox outbox.jsonl --journal journal.jsonl",
    )
    run.add_argument("target", metavar="MODULE:ATTR", help="where the Worker object is")
    run.add_argument(
        "--url", help="TopChef server URL (default: $TOPCHEF_URL, then the worker's own)"
    )
    run.add_argument("--max-jobs", type=_positive_int, help="override the worker's max_jobs")
    run.add_argument("--log-level", default="INFO", type=str.upper, help="default: INFO")
    run.add_argument("--log-format", choices=("text", "json"), default="text")
    run.add_argument("--metrics-port", type=int, help="serve /metrics, /healthz and /readyz")
    run.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="IPv4 or IPv6 address or host name to serve them on (default: 127.0.0.1)",
    )
    run.add_argument("--outbox", help="file keeping outcomes not yet delivered, across a stop")
    run.add_argument("--journal", help="file recording claims, for recovery after a crash")
    run.add_argument(
        "--grace", type=_seconds, default=30.0, help="seconds to drain on stop (default: 30)"
    )
    run.set_defaults(handler=cmd_run)

    serve = commands.add_parser(
        "serve",
        help="run an in-memory TopChef server for development",
        formatter_class=formatter,
        epilog="example:\n  topchef-worker serve --port 5000",
    )
    serve.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    serve.add_argument("--port", type=int, default=5000, help="default: 5000")
    serve.set_defaults(handler=cmd_serve)

    demo = commands.add_parser(
        "demo",
        help="run the FID demo on an embedded server",
        formatter_class=formatter,
        epilog="example:\n  topchef-worker demo --jobs 500 --max-jobs 8",
    )
    demo.add_argument("--jobs", type=_positive_int, default=200, help="default: 200")
    demo.add_argument("--max-jobs", type=_positive_int, default=4, help="default: 4")
    demo.set_defaults(handler=cmd_demo)

    services = commands.add_parser(
        "services",
        help="list a server's services",
        formatter_class=formatter,
        epilog="example:\n  topchef-worker services --url http://127.0.0.1:5000",
    )
    url_option(services)
    services.set_defaults(handler=cmd_services)

    jobs = commands.add_parser(
        "jobs",
        help="list a service's jobs",
        formatter_class=formatter,
        epilog="example:\n  topchef-worker jobs SERVICE_ID --status WORKING",
    )
    jobs.add_argument("service_id", metavar="SERVICE_ID")
    jobs.add_argument("--status", type=_status, help="only jobs in this status")
    url_option(jobs)
    jobs.set_defaults(handler=cmd_jobs)

    submit = commands.add_parser(
        "submit",
        help="submit a job",
        formatter_class=formatter,
        epilog='example:\n  topchef-worker submit SERVICE_ID \'{"a": 1, "b": 2}\'',
    )
    submit.add_argument("service_id", metavar="SERVICE_ID")
    submit.add_argument("parameters", metavar="PARAMETERS", help="a JSON object")
    url_option(submit)
    submit.set_defaults(handler=cmd_submit)

    requeue = commands.add_parser(
        "requeue",
        help="put stuck WORKING jobs back in the queue",
        formatter_class=formatter,
        epilog="examples:\n"
        "  topchef-worker requeue SERVICE_ID --all-working\n"
        "  topchef-worker requeue SERVICE_ID --job JOB_ID --job JOB_ID --yes",
    )
    requeue.add_argument("service_id", metavar="SERVICE_ID")
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("--job", action="append", metavar="JOB_ID", help="a job (repeatable)")
    which.add_argument("--all-working", action="store_true", help="every WORKING job")
    requeue.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    url_option(requeue)
    requeue.set_defaults(handler=cmd_requeue)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (UsageError, ConfigurationError, InvalidRequestError) as error:
        print(f"topchef-worker: error: {error}", file=sys.stderr)
        return USAGE
    except TopChefError as error:
        print(f"topchef-worker: error: {error}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return FAILED
