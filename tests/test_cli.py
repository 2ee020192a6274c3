"""The topchef-worker console script, run for real in a subprocess."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from topchef_worker import JobStatus, Service, TopChefClient
from topchef_worker.cli import main
from topchef_worker.testing import TopChefServer

WAIT = 20.0
SCRIPT = Path(sys.executable).parent / "topchef-worker"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "topchef_worker"]

APP = """
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from topchef_worker import Worker

release = threading.Event()
small_pool = ThreadPoolExecutor(1) if os.environ.get("APP_SMALL_POOL") else None
worker = Worker(max_jobs=int(os.environ.get("APP_MAX_JOBS", "2")), poll_interval=0.05,
                heartbeat_interval=0.1, job_pool=small_pool)

@worker.handler(os.environ["APP_SERVICE_ID"])
def handle(parameters):
    if parameters.get("block"):
        print("blocked", flush=True)
        release.wait()
    return {"sum": parameters["a"] + parameters["b"]}
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    path = tmp_path / "labapp.py"
    path.write_text(APP)
    return path


def cli(
    *args: str, url: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a topchef-worker command to its end, with ``$TOPCHEF_URL`` set to *url* (or
    unset) and no terminal on stdin."""
    environment = {name: value for name, value in os.environ.items() if name != "TOPCHEF_URL"}
    if url is not None:
        environment["TOPCHEF_URL"] = url
    return subprocess.run(
        [*COMMAND, *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env={**environment, **(env or {})},
        stdin=subprocess.DEVNULL,
        check=False,
    )


def error_line(stderr: str) -> str:
    """The one error line a failed command printed (failing if there are more)."""
    (line,) = [line for line in stderr.splitlines() if "error" in line]
    assert line.startswith("topchef-worker: error: "), stderr
    return line


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def eventually(check: Callable[[], bool], timeout: float = WAIT) -> None:
    """Re-check an outside process's observable state until it holds, or fail."""
    done = threading.Event()
    deadline = threading.Timer(timeout, done.set)
    deadline.start()
    try:
        while not check():
            assert not done.wait(0.05), "the condition did not hold in time"
    finally:
        deadline.cancel()


def connect(host: str, port: int) -> http.client.HTTPConnection:
    """An HTTP/1.1 connection, opened once the process under test listens."""
    connection = http.client.HTTPConnection(host, port, timeout=WAIT)

    def connected() -> bool:
        try:
            connection.connect()
        except OSError:
            return False
        return True

    eventually(connected)
    return connection


def completed(log: list[Any]) -> int:
    return sum(1 for r in log if r.method == "PATCH" and b"COMPLETED" in r.body)


class Process:
    """A running topchef-worker command (or another *command*), with its output
    collected by threads."""

    def __init__(
        self, *args: str, env: dict[str, str] | None = None, command: list[str] = COMMAND
    ) -> None:
        self.popen = subprocess.Popen(
            [*command, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.changed = threading.Condition()
        self.readers = [
            threading.Thread(target=self._read, args=(self.popen.stdout, self.stdout)),
            threading.Thread(target=self._read, args=(self.popen.stderr, self.stderr)),
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream: Any, lines: list[str]) -> None:
        for line in stream:
            with self.changed:
                lines.append(line)
                self.changed.notify_all()
        stream.close()

    def wait_for_line(self, lines: list[str], text: str) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: any(text in line for line in lines), WAIT), (
                f"never printed {text!r}: {''.join(lines)}"
            )

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def finish(self, timeout: float = WAIT) -> int:
        code = self.popen.wait(timeout)
        for reader in self.readers:
            reader.join(timeout)
        return code


def test_run_processes_jobs_and_exits_cleanly_on_sigterm(
    app: Path, client: TopChefClient, server: TopChefServer, adder: Service, processes: Any
) -> None:
    """`run FILE.py:ATTR` processes jobs; SIGTERM stops it with exit code 0."""
    for i in range(5):
        client.submit_job(adder.id, {"a": i, "b": 1})
    process = Process("run", f"{app}:worker", "--url", server.url, env={"APP_SERVICE_ID": adder.id})
    processes.append(process)
    server.wait_for_requests(lambda log: completed(log) == 5, WAIT)
    process.signal(signal.SIGTERM)
    assert 0 == process.finish()
    assert {JobStatus.COMPLETED} == {job.status for job in client.jobs(adder.id)}
    assert any("worker stopped" in line for line in process.stderr)


def test_sigterm_puts_unstarted_and_unfinished_jobs_back(
    app: Path, client: TopChefClient, server: TopChefServer, adder: Service, processes: Any
) -> None:
    """After the grace period, jobs not started and jobs still running are requeued."""
    for _ in range(3):
        client.submit_job(adder.id, {"a": 1, "b": 1, "block": True})
    process = Process(
        "run",
        f"{app}:worker",
        "--url",
        server.url,
        "--max-jobs",
        "3",
        "--grace",
        "0.2",
        env={"APP_SERVICE_ID": adder.id, "APP_SMALL_POOL": "1"},
    )
    processes.append(process)
    process.wait_for_line(process.stdout, "blocked")
    server.wait_for_requests(lambda log: sum(b'"WORKING"' in r.body for r in log) == 3, WAIT)
    process.signal(signal.SIGTERM)
    assert 0 == process.finish()
    assert [JobStatus.REGISTERED] * 3 == [job.status for job in client.jobs(adder.id)]


def test_a_second_sigterm_stops_at_once(
    app: Path, client: TopChefClient, server: TopChefServer, adder: Service, processes: Any
) -> None:
    """With a long grace period, a second signal stops the worker without waiting."""
    job = client.submit_job(adder.id, {"a": 1, "b": 1, "block": True})
    process = Process(
        "run",
        f"{app}:worker",
        "--url",
        server.url,
        "--grace",
        "600",
        env={"APP_SERVICE_ID": adder.id},
    )
    processes.append(process)
    process.wait_for_line(process.stdout, "blocked")
    process.signal(signal.SIGTERM)
    process.wait_for_line(process.stderr, "worker stopping")
    process.signal(signal.SIGTERM)
    assert 0 == process.finish(timeout=10)
    assert JobStatus.REGISTERED == client.job(job.id).status


def test_json_logs_carry_the_job_fields(
    app: Path, client: TopChefClient, server: TopChefServer, adder: Service, processes: Any
) -> None:
    """--log-format json writes one object per line with job id, service, status and
    duration as fields."""
    job = client.submit_job(adder.id, {"a": 1, "b": 1})
    process = Process(
        "run",
        f"{app}:worker",
        "--url",
        server.url,
        "--log-format",
        "json",
        env={"APP_SERVICE_ID": adder.id},
    )
    processes.append(process)
    server.wait_for_requests(lambda log: completed(log) == 1, WAIT)
    process.signal(signal.SIGTERM)
    assert 0 == process.finish()
    records = [json.loads(line) for line in process.stderr]
    (done,) = [r for r in records if r.get("job_id") == job.id and "status" in r]
    assert (adder.id, "COMPLETED") == (done["service_id"], done["status"])
    assert done["duration"] >= 0


def test_metrics_and_health_endpoints(
    app: Path, client: TopChefClient, server: TopChefServer, adder: Service, processes: Any
) -> None:
    """/metrics is Prometheus text; while the server is down /readyz turns 503 and
    /healthz (liveness) stays 200, so an orchestrator does not restart the worker."""
    port = free_port()
    client.submit_job(adder.id, {"a": 1, "b": 1})
    process = Process(
        "run",
        f"{app}:worker",
        "--url",
        server.url,
        "--metrics-port",
        str(port),
        env={"APP_SERVICE_ID": adder.id},
    )
    processes.append(process)
    base = f"http://127.0.0.1:{port}"

    def status(path: str) -> int:
        try:
            with urllib.request.urlopen(base + path, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except OSError:
            return 0

    server.wait_for_requests(lambda log: completed(log) == 1, WAIT)
    eventually(lambda: status("/healthz") == 200)
    with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
        text = response.read().decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    samples = {
        (s.name, s.labels.get("outcome")): s.value for s in families["topchef_worker_jobs"].samples
    }
    assert 1.0 == samples[("topchef_worker_jobs_total", "completed")]
    assert "topchef_worker_job_duration_seconds" in families
    assert "topchef_worker_state" in families
    eventually(lambda: status("/readyz") == 200)
    server.stop()
    eventually(lambda: status("/readyz") == 503)
    assert 200 == status("/healthz")
    server.start()
    eventually(lambda: status("/readyz") == 200)
    process.signal(signal.SIGTERM)
    assert 0 == process.finish()


def test_an_idle_metrics_connection_does_not_delay_the_exit(
    app: Path, server: TopChefServer, adder: Service, processes: Any
) -> None:
    """A client holding a connection to --metrics-port open without a request does
    not keep `run` from exiting after SIGTERM."""
    port = free_port()
    process = Process(
        "run",
        f"{app}:worker",
        "--url",
        server.url,
        "--metrics-port",
        str(port),
        env={"APP_SERVICE_ID": adder.id},
    )
    processes.append(process)
    idle = connect("127.0.0.1", port)
    try:
        # Accepted in order: once this is answered, the idle connection has its handler.
        probe = connect("127.0.0.1", port)
        probe.request("GET", "/nowhere")
        assert 404 == probe.getresponse().status
        probe.close()
        process.signal(signal.SIGTERM)
        assert 0 == process.finish()
    finally:
        idle.close()


def test_metrics_on_ipv6_loopback(
    app: Path, server: TopChefServer, adder: Service, processes: Any, ipv6_loopback: str
) -> None:
    """`--metrics-host ::1` serves /metrics over IPv6."""
    port = free_port(ipv6_loopback)
    process = Process(
        "run",
        f"{app}:worker",
        "--url",
        server.url,
        "--metrics-host",
        ipv6_loopback,
        "--metrics-port",
        str(port),
        env={"APP_SERVICE_ID": adder.id},
    )
    processes.append(process)
    connection = connect(ipv6_loopback, port)
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()
    assert 200 == response.status
    assert "topchef_worker_state" in text
    process.signal(signal.SIGTERM)
    assert 0 == process.finish()


def test_a_metrics_port_in_use_is_a_usage_error(
    app: Path, server: TopChefServer, adder: Service, processes: Any
) -> None:
    """A --metrics-port that cannot be bound is a one-line error with exit code 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = Process(
            "run",
            f"{app}:worker",
            "--url",
            server.url,
            "--metrics-port",
            str(port),
            env={"APP_SERVICE_ID": adder.id},
        )
        processes.append(process)
        assert 2 == process.finish()
    errors = [line for line in process.stderr if "error" in line]
    assert 1 == len(errors)
    assert f"topchef-worker: error: cannot serve metrics on 127.0.0.1 port {port}: " in errors[0]


def test_demo_completes_and_prints_a_summary(processes: Any) -> None:
    """`demo` runs the FID service on an embedded server and summarises it."""
    process = Process("demo", "--jobs", "30", "--max-jobs", "2")
    processes.append(process)
    assert 0 == process.finish(timeout=120)
    output = "".join(process.stdout)
    assert "jobs: 30  completed: 28  failed: 2" in output
    assert "p95" in output
    assert "done 30/30" in output


def test_serve_runs_a_server_until_signalled(processes: Any) -> None:
    """`serve` prints its URL and curl examples, answers HTTP, and stops on SIGTERM."""
    port = free_port()
    process = Process("serve", "--port", str(port))
    processes.append(process)
    process.wait_for_line(process.stdout, f"http://127.0.0.1:{port}")
    assert [] == TopChefClient(f"http://127.0.0.1:{port}").services()
    assert any("curl" in line for line in process.stdout)
    process.signal(signal.SIGTERM)
    assert 0 == process.finish()


def test_operator_commands(server: TopChefServer, client: TopChefClient, adder: Service) -> None:
    """services, submit, jobs --status and requeue against a real server, each run
    as the console script."""
    url = ["--url", server.url]
    listed = cli("services", *url)
    assert (0, f"{adder.id}  Adder  adds a and b") == (listed.returncode, listed.stdout.strip())
    submitted = cli("submit", adder.id, '{"a": 1, "b": 2}', *url)
    assert 0 == submitted.returncode, submitted.stderr
    job_id = submitted.stdout.strip()
    client.update_job(job_id, status="WORKING")
    working = cli("jobs", adder.id, "--status", "working", *url)
    assert (0, True) == (working.returncode, f"{job_id}  WORKING" in working.stdout)
    requeued = cli("requeue", adder.id, "--all-working", "--yes", *url)
    assert (0, True) == (requeued.returncode, f"{job_id}  REGISTERED" in requeued.stdout)
    assert JobStatus.REGISTERED == client.job(job_id).status


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["run", "no_such_module:worker"], 2, "cannot import 'no_such_module'"),
        (["run", "{app}:missing"], 2, "has no attribute 'missing'"),
        (["run", "{app}:release"], 2, "is a Event, not a topchef_worker.Worker"),
        (["run", "justamodule"], 2, "expected MODULE:ATTR"),
        (["submit", "{sid}", "{{bad", "--url", "{url}"], 2, "not valid JSON"),
        (["submit", "{sid}", "[1]", "--url", "{url}"], 2, "must be a JSON object"),
        (["services", "--url", "http://127.0.0.1:{closed}"], 1, "Connection refused"),
        (["services"], 2, "no TopChef URL"),
        (["jobs", "not-an-id", "--url", "{url}"], 1, "no service with id or name 'not-an-id'"),
        (["job", "not-an-id", "--url", "{url}"], 2, "'not-an-id' is not a job id"),
        (["run", "{app}:worker", "--log-level", "verbose"], 2, "invalid choice: 'VERBOSE'"),
        (["run", "{app}:worker", "--metrics-port", "70000"], 2, "a port is 0 to 65535"),
        (["serve", "--port", "-1"], 2, "a port is 0 to 65535"),
        (["requeue", "{sid}", "--job", "{sid}", "--url", "{url}"], 2, "add --yes"),
        (["jobs"], 2, "the following arguments are required"),
        (["demo", "--jobs", "0"], 2, "must be at least 1"),
    ],
)
def test_errors_are_one_line_with_documented_exit_codes(
    args: list[str],
    code: int,
    message: str,
    app: Path,
    server: TopChefServer,
    adder: Service,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    """Bad targets, bad JSON, an unreachable server: a one-line error and exit code."""
    monkeypatch.delenv("TOPCHEF_URL", raising=False)
    monkeypatch.setenv("APP_SERVICE_ID", adder.id)
    monkeypatch.setattr("sys.stdin", io.StringIO())  # not a terminal
    filled = [a.format(app=app, sid=adder.id, url=server.url, closed=free_port()) for a in args]
    try:
        result = main(filled)
    except SystemExit as exit:  # argparse's own errors
        result = int(exit.code or 0)
    err = capsys.readouterr().err
    assert code == result
    (error,) = [line for line in err.splitlines() if "error" in line]
    assert error.startswith("topchef-worker: error: ")
    assert message in error


def test_help_for_every_command_has_examples(capsys: Any) -> None:
    """Each command's --help shows examples."""
    for command in ("run", "serve", "demo", "services", "jobs", "job", "submit", "requeue"):
        with pytest.raises(SystemExit) as exit:
            main([command, "--help"])
        assert 0 == exit.value.code
        assert "example" in capsys.readouterr().out


def test_the_example_app_runs(client: TopChefClient, server: TopChefServer, processes: Any) -> None:
    """examples/app.py creates its service on start and processes its jobs."""
    example = Path(__file__).parent.parent / "examples" / "app.py"
    process = Process("run", f"{example}:worker", "--url", server.url)
    processes.append(process)
    server.wait_for_requests(lambda log: any(r.method == "POST" for r in log), WAIT)
    (service,) = client.services()
    job = client.submit_job(service.id, {"a": 20, "b": 22})
    server.wait_for_requests(lambda log: completed(log) == 1, WAIT)
    process.signal(signal.SIGTERM)
    assert 0 == process.finish()
    assert {"sum": 42} == client.job(job.id).results


def test_run_with_an_unknown_service_exits_2_naming_it(
    app: Path, server: TopChefServer, processes: Any
) -> None:
    """A handler for a service the server does not know ends `run` with exit code 2
    and a one-line error naming the service: a configuration error, not an outage."""
    unknown = "00000000-0000-4000-8000-000000000000"
    process = Process("run", f"{app}:worker", "--url", server.url, env={"APP_SERVICE_ID": unknown})
    processes.append(process)
    assert 2 == process.finish()
    errors = [line for line in process.stderr if line.startswith("topchef-worker: error:")]
    assert 1 == len(errors)
    assert unknown in errors[0]
