"""Shared fixtures: a running TopChefServer on loopback and a client for it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
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
