"""Handler retries: ``retry=`` and ``retry_on=`` on a handler (issue 12).

A handler that raised an error its ``retry_on`` names runs again after the policy's
wait, keeping its slot; anything else, or the last attempt, ends the job ERROR.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from test_worker import WAIT, fast_worker
from topchef_worker import JobStatus, RetryPolicy, Service, TopChefClient
from topchef_worker.events import Event, JobRetrying
from topchef_worker.exceptions import ConfigurationError
from topchef_worker.testing import TopChefServer

pytestmark = pytest.mark.timeout(60)

QUICK = RetryPolicy(initial=0.01, maximum=0.02, attempts=4, deadline=None)


class InstrumentBusyError(Exception):
    """The instrument is busy: worth another try."""


def flaky(
    failures: int, error: type[Exception] = InstrumentBusyError
) -> Callable[..., dict[str, Any]]:
    """A handler that raises *error* its first *failures* calls, then adds."""
    calls: list[int] = []

    def handler(parameters: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        if len(calls) <= failures:
            raise error(f"call {len(calls)}")
        return {"sum": parameters["a"] + parameters["b"]}

    handler.calls = calls  # type: ignore[attr-defined]
    return handler


@pytest.mark.parametrize("kind", ["function", "coroutine"])
def test_a_retryable_error_runs_the_handler_again_until_it_succeeds(
    client: TopChefClient, server: TopChefServer, adder: Service, kind: str
) -> None:
    inner = flaky(2)
    handler: Callable[..., Any] = inner
    if kind == "coroutine":

        async def handler(parameters: dict[str, Any]) -> dict[str, Any]:
            await asyncio.sleep(0)
            return inner(parameters)

    events: list[Event] = []
    worker = fast_worker(server)
    worker.add_listener(events.append)
    worker.handler(adder.id, retry=QUICK, retry_on=InstrumentBusyError)(handler)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    with worker:
        stats = worker.wait_for(lambda s: s.completed == 1, WAIT)

    assert ({"sum": 3}, 3, 2) == (client.job(job.id).results, len(inner.calls), stats.retries)  # type: ignore[attr-defined]
    retries = [e for e in events if isinstance(e, JobRetrying)]
    assert [(2, "InstrumentBusyError: call 1"), (3, "InstrumentBusyError: call 2")] == [
        (e.attempt, e.error) for e in retries
    ]


@pytest.mark.parametrize(
    ("handler", "retry", "calls"),
    [
        (flaky(9, ValueError), QUICK, 1),  # not in retry_on: no second attempt
        (flaky(9), QUICK, 4),  # every attempt failed: ERROR after the fourth
        (flaky(9), None, 1),  # no retry policy: the default
    ],
)
def test_the_job_ends_error_when_no_attempt_is_left(
    client: TopChefClient,
    server: TopChefServer,
    adder: Service,
    handler: Any,
    retry: RetryPolicy | None,
    calls: int,
) -> None:
    worker = fast_worker(server)
    worker.handler(adder.id, retry=retry, retry_on=InstrumentBusyError)(handler)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    with worker:
        stats = worker.wait_for(lambda s: s.failed == 1, WAIT)

    assert (JobStatus.ERROR, calls, calls - 1) == (
        client.job(job.id).status,
        len(handler.calls),
        stats.retries,
    )


def test_a_stop_between_attempts_puts_the_job_back(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    waiting = threading.Event()
    worker = fast_worker(server)
    worker.add_listener(lambda event: isinstance(event, JobRetrying) and waiting.set())
    patient = RetryPolicy(initial=60.0, maximum=60.0, attempts=2, deadline=None)
    handler = flaky(9)
    worker.handler(adder.id, retry=patient, retry_on=InstrumentBusyError)(handler)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    worker.start()
    assert waiting.wait(WAIT)
    worker.stop(timeout=5, cancel=True)

    assert (JobStatus.REGISTERED, 1) == (client.job(job.id).status, len(handler.calls))  # type: ignore[attr-defined]


def test_the_timeout_counts_from_the_first_attempt(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    patient = RetryPolicy(initial=60.0, maximum=60.0, attempts=2, deadline=None)
    worker = fast_worker(server)
    worker.handler(adder.id, timeout=0.2, retry=patient, retry_on=InstrumentBusyError)(flaky(9))
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    with worker:
        worker.wait_for(lambda s: s.failed == 1, WAIT)

    assert JobStatus.ERROR is client.job(job.id).status


def test_retry_options_are_checked_when_registered(adder: Service) -> None:
    worker = fast_worker(TopChefServer())
    with pytest.raises(ConfigurationError, match="retry must be a RetryPolicy"):
        worker.handler(adder.id, retry=3)(flaky(0))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="retry_on must be an exception class"):
        worker.handler(adder.id, retry=QUICK, retry_on=("busy",))(flaky(0))  # type: ignore[arg-type]
