"""The ``topchef-worker`` command: run a worker, serve a test server, try the demo,
and look after a server's services and jobs.

Exit codes: 0 success (including a worker stopped by SIGINT/SIGTERM), 1 a failure
at run time (the server cannot be reached, a service or job does not exist, a job
waited for ended in ERROR or did not finish in time, a job named to ``requeue`` was
left alone, the worker failed), 2 a usage or configuration error (bad arguments, a
wrong ``MODULE:ATTR``, bad JSON, no URL or a malformed one, a port in use, a service
name several services share).  Every error is one line ``topchef-worker: error:
...`` on stderr.

The server-admin commands are in :mod:`topchef_worker._cli_admin` and
:mod:`topchef_worker._cli_requeue`; what all commands share in
:mod:`topchef_worker._cli_common`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from . import __version__
from ._arguments import check_base_url, redact
from ._cli_admin import add_admin_commands
from ._cli_common import (
    FAILED,
    LOG_LEVELS,
    OK,
    USAGE,
    CommandFailedError,
    Parser,
    UsageError,
    port,
    positive_int,
    seconds,
)
from ._cli_requeue import add_requeue_command
from ._logging import configure_logging
from ._worker import Worker
from .exceptions import ConfigurationError, InvalidRequestError, TopChefError

if TYPE_CHECKING:
    from ._metrics import MonitoringServer

__all__ = ["main"]


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


def run_url(code_url: str | None, option: str | None) -> str | None:
    """The URL ``run`` passes to ``worker.configure``, by the one rule for URLs: the
    worker's code wins, then ``--url``, then ``$TOPCHEF_URL``.

    ``$TOPCHEF_URL`` is never passed: the worker falls back to it itself at start, so
    a worker run from code and from the command line reads it the same way.  A
    ``--url`` that contradicts the code is an error rather than silently ignored,
    since whoever typed it expects it to be used.
    """
    if option is None:
        return None
    check_base_url(option)
    if code_url is None:
        return option
    if code_url.rstrip("/") != option.rstrip("/"):
        raise UsageError(
            f"the worker's code sets url={redact(code_url)!r} and --url gives "
            f"{redact(option)!r}; "
            "the code's URL wins: remove one of them"
        )
    return None


# -- commands --------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    worker = load_worker(args.target)
    url = run_url(worker.url, args.url)
    configure_logging(args.log_level, args.log_format)
    worker.configure(url=url, max_jobs=args.max_jobs, outbox=args.outbox, journal=args.journal)
    monitoring = None
    if args.metrics_port is not None:
        monitoring = _monitoring(worker, args.metrics_host, args.metrics_port)
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


def _monitoring(worker: Worker, host: str, port: int) -> MonitoringServer:
    """The /metrics, /healthz and /readyz server, bound but not started."""
    from ._metrics import MonitoringServer, PrometheusMetrics

    try:
        metrics: PrometheusMetrics | None = PrometheusMetrics(worker)
    except ImportError as error:
        print(f"topchef-worker: {error}; serving /healthz and /readyz only", file=sys.stderr)
        metrics = None
    try:
        return MonitoringServer(worker, host=host, port=port, metrics=metrics)
    except OSError as error:  # an unknown host, a port in use or not allowed
        raise UsageError(f"cannot serve metrics on {host} port {port}: {error}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    from .testing import TopChefServer

    configure_logging("INFO", "text")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if args.idle_timeout <= 0 or args.read_timeout <= 0:
        raise UsageError("--idle-timeout and --read-timeout must be more than 0")
    server = TopChefServer(
        host=args.host,
        port=args.port,
        log_requests=not args.quiet,
        max_body=args.max_body,
        max_header_bytes=args.max_header_bytes,
        max_header_lines=args.max_header_lines,
        max_connections=args.max_connections,
        idle_timeout=args.idle_timeout,
        read_timeout=args.read_timeout,
    )
    try:
        server.start()
    except OSError as error:  # a port in use or not allowed, an unknown host
        raise UsageError(f"cannot serve on {args.host} port {args.port}: {error}") from None
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _print_banner(server.url)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return OK


def _print_banner(url: str) -> None:
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


# -- the parser -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = Parser(
        prog="topchef-worker",
        description="Run TopChef job-processing services written in Python.",
        formatter_class=formatter,
        epilog="examples:\n"
        "  topchef-worker demo\n"
        "  topchef-worker run app:worker --url http://topchef.lab:5000\n"
        "  topchef-worker serve --port 5000\n"
        "  topchef-worker services --url http://127.0.0.1:5000\n\n"
        "The server URL: a URL in the worker's code wins, then --url, then $TOPCHEF_URL.\n"
        "exit codes: 0 success, 1 failure at run time, 2 usage or configuration error",
    )
    parser.add_argument("--version", action="version", version=f"topchef-worker {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True
    _add_run(commands)
    _add_serve(commands)
    demo = commands.add_parser(
        "demo",
        help="run the FID demo on an embedded server",
        formatter_class=formatter,
        epilog="example:\n  topchef-worker demo --jobs 500 --max-jobs 8",
    )
    demo.add_argument("--jobs", type=positive_int, default=200, help="default: 200")
    demo.add_argument("--max-jobs", type=positive_int, default=4, help="default: 4")
    demo.set_defaults(handler=cmd_demo)
    add_admin_commands(commands)
    add_requeue_command(commands)
    return parser


def _add_run(commands: argparse._SubParsersAction[Any]) -> None:
    run = commands.add_parser(
        "run",
        help="run a Worker defined in your code",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the Worker object found at MODULE:ATTR (or FILE.py:ATTR) until "
        "SIGINT or SIGTERM.\nThe first signal drains running jobs for up to --grace "
        "seconds, then puts the rest back\nin the queue; a second signal stops at once.\n\n"
        "The server URL: Worker(url=...) in the code wins; else --url; else $TOPCHEF_URL.\n"
        "A --url that differs from the code's URL is an error.",
        epilog="examples:\n"
        "  topchef-worker run app:worker --url http://topchef.lab:5000\n"
        "  TOPCHEF_URL=http://127.0.0.1:5000 topchef-worker run ./lab/app.py:worker "
        "--max-jobs 8\n"
        "  topchef-worker run app:worker --log-format json --metrics-port 9100 "
        "--outbox outbox.jsonl --journal journal.jsonl",
    )
    run.add_argument("target", metavar="MODULE:ATTR", help="where the Worker object is")
    run.add_argument(
        "--url",
        help="TopChef server URL, if the worker's code gives none (default: $TOPCHEF_URL)",
    )
    run.add_argument("--max-jobs", type=positive_int, help="override the worker's max_jobs")
    run.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS, help="default: INFO"
    )
    run.add_argument("--log-format", choices=("text", "json"), default="text")
    run.add_argument("--metrics-port", type=port, help="serve /metrics, /healthz and /readyz")
    run.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="IPv4 or IPv6 address or host name to serve them on (default: 127.0.0.1)",
    )
    run.add_argument("--outbox", help="file keeping outcomes not yet delivered, across a stop")
    run.add_argument("--journal", help="file recording claims, for recovery after a crash")
    run.add_argument(
        "--grace", type=seconds, default=30.0, help="seconds to drain on stop (default: 30)"
    )
    run.set_defaults(handler=cmd_run)


def _add_serve(commands: argparse._SubParsersAction[Any]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run an in-memory TopChef server for development",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve the in-memory TopChef server until SIGINT or SIGTERM, logging "
        "each request\n(client, method, path, status, milliseconds) to stderr.",
        epilog="examples:\n  topchef-worker serve --port 5000\n  topchef-worker serve --quiet",
    )
    serve.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    serve.add_argument("--port", type=port, default=5000, help="default: 5000; 0 for any free one")
    serve.add_argument("--quiet", action="store_true", help="do not log requests")
    limits = serve.add_argument_group("limits (requests beyond them are refused, 413/414/431)")
    limits.add_argument(
        "--max-body", type=positive_int, default=10 * 1024 * 1024, help="bytes (default: 10 MiB)"
    )
    limits.add_argument(
        "--max-header-bytes", type=positive_int, default=64 * 1024, help="bytes (default: 64 KiB)"
    )
    limits.add_argument("--max-header-lines", type=positive_int, default=100, help="default: 100")
    limits.add_argument(
        "--max-connections", type=positive_int, default=64, help="served at once (default: 64)"
    )
    limits.add_argument(
        "--idle-timeout", type=seconds, default=5.0, help="seconds between requests (default: 5)"
    )
    limits.add_argument(
        "--read-timeout", type=seconds, default=10.0, help="seconds to send a request (default: 10)"
    )
    serve.set_defaults(handler=cmd_serve)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (UsageError, ConfigurationError, InvalidRequestError) as error:
        return _error(error, USAGE)
    except (CommandFailedError, TopChefError) as error:
        return _error(error, FAILED)
    except KeyboardInterrupt:
        return FAILED


def _error(error: Exception, code: int) -> int:
    print(f"topchef-worker: error: {error}", file=sys.stderr)
    return code
