"""`serve`: an access log by default, --quiet without, and a port in use is a usage
error; the TopChefServer that tests use logs requests only when asked to."""

from __future__ import annotations

import logging
import re
import signal
import socket

import pytest

from test_cli import Process, cli, error_line, free_port
from topchef_worker import TopChefClient
from topchef_worker.testing import TopChefServer

REQUESTS_LOGGER = "topchef_worker.testing.requests"


def serve(processes: list[Process], *args: str) -> tuple[Process, str]:
    """A running `serve` and its URL, once it has said where it listens."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = Process("serve", "--port", str(port), *args)
    processes.append(process)
    process.wait_for_line(process.stdout, url)
    return process, url


def test_serve_logs_each_request(processes: list[Process]) -> None:
    """One INFO line a request: client, method, path, status and milliseconds."""
    process, url = serve(processes)
    with TopChefClient(url) as client:
        service = client.create_service(
            name="Adder", description="adds", job_registration_schema={}, job_result_schema={}
        )
        assert client.next_job(service.id) is None
    path = f"/services/{service.id}/jobs/next"
    process.wait_for_line(process.stderr, f"{path} 204")
    (line,) = [line for line in process.stderr if path in line]
    assert re.search(rf" INFO .* 127\.0\.0\.1 GET {path} 204 \d+\.\d ms$", line), line
    assert any(" 127.0.0.1 POST /services 201 " in line for line in process.stderr)
    process.signal(signal.SIGTERM)
    assert 0 == process.finish()


def test_serve_quiet_logs_nothing(processes: list[Process]) -> None:
    """With --quiet nothing is logged; handler threads are joined before exit, so a
    line that was going to be written would be there."""
    process, url = serve(processes, "--quiet")
    with TopChefClient(url) as client:
        assert [] == client.services()
    process.signal(signal.SIGTERM)
    assert 0 == process.finish()
    assert [] == process.stderr


def test_serve_on_a_port_in_use_is_a_usage_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("serve", "--port", str(port))
    assert (2, "") == (result.returncode, result.stdout)
    assert f"cannot serve on 127.0.0.1 port {port}: " in error_line(result.stderr)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("log_requests", "logged"), [(False, 0), (True, 1)])
def test_the_test_server_logs_requests_only_when_asked(
    log_requests: bool, logged: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with TopChefServer(log_requests=log_requests) as server, TopChefClient(server.url) as client:
        client.services()
    # Stopping joined the handler threads, so every line is written by now.
    records = [record for record in caplog.records if record.name == REQUESTS_LOGGER]
    assert logged == len(records)
    for record in records:
        assert re.fullmatch(r"127\.0\.0\.1 GET /services 200 \d+\.\d ms", record.getMessage())
        assert logging.INFO == record.levelno
