"""Shared fixtures: a running TopChefServer on loopback and a client for it."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from topchef_worker import Service, TopChefClient
from topchef_worker.testing import ManualClock, TopChefServer

ADDER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
    "required": ["a", "b"],
}
ADDER_RESULTS: dict[str, Any] = {
    "type": "object",
    "properties": {"sum": {"type": "number"}},
    "required": ["sum"],
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def server(clock: ManualClock) -> Iterator[TopChefServer]:
    with TopChefServer(clock=clock) as running:
        yield running


@pytest.fixture
def client(server: TopChefServer) -> Iterator[TopChefClient]:
    # No retries: each test sees exactly the requests it causes.
    with TopChefClient(server.url, timeout=5.0, retry=None) as running:
        yield running


@pytest.fixture
def adder(client: TopChefClient) -> Service:
    """The Adder service of the reference transcript."""
    return client.create_service(
        name="Adder",
        description="adds a and b",
        job_registration_schema=ADDER_PARAMETERS,
        job_result_schema=ADDER_RESULTS,
    )


@pytest.fixture(scope="session")
def ipv6_loopback() -> str:
    """``::1``, or skip the test on a machine without an IPv6 loopback."""
    if not socket.has_ipv6:
        pytest.skip("Python was built without IPv6")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError as error:
        pytest.skip(f"no IPv6 loopback: {error}")
    return "::1"


@pytest.fixture
def processes() -> Iterator[list[Any]]:
    """Processes a test started (the CLI tests' ``Process``): killed at the end if
    still running, so that a failing test leaves none behind."""
    started: list[Any] = []
    yield started
    for process in started:
        if process.popen.poll() is None:
            process.popen.kill()
            process.finish()


@pytest.fixture
def ref_target() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that would serve a schema, and the paths it was asked for."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = b'{"type": "string"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/x.json", hits
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
