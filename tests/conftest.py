"""Shared fixtures: a running TopChefServer on loopback and a client for it."""

from __future__ import annotations

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
