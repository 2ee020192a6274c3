"""Registering handlers: mistakes fail at registration, with the function's name."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from topchef_worker import Job, Worker
from topchef_worker._handlers import accepts_job
from topchef_worker.exceptions import ConfigurationError

SID = "495d76fd-044c-4f02-8815-5ec6e7634330"
SPEC: dict[str, Any] = {
    "name": "FID",
    "description": "Free induction decay",
    "job_registration_schema": {"type": "object"},
    "job_result_schema": {"type": "object"},
}


def one(parameters: dict[str, Any]) -> dict[str, Any]:
    return parameters


def with_job(parameters: dict[str, Any], job: Job) -> dict[str, Any]:
    return {"id": job.id}


def keyword_job(parameters: dict[str, Any], *, job: Job) -> dict[str, Any]:
    return {}


def defaulted_job(parameters: dict[str, Any], job: Job | None = None) -> dict[str, Any]:
    return {}


def varargs(*args: Any) -> dict[str, Any]:
    return {}


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (one, False),
        (with_job, True),
        (keyword_job, True),
        (defaulted_job, True),
        (varargs, False),
        (lambda p: p, False),
        (dict, False),  # no inspectable signature: called with the parameters
    ],
)
def test_how_a_handler_is_called(fn: Any, expected: bool) -> None:
    """A parameter named job asks for the job record; otherwise fn(parameters)."""
    assert expected == accepts_job(fn)


def no_arguments() -> dict[str, Any]:
    return {}


@pytest.mark.parametrize(
    "fn", [no_arguments, lambda a, b: {}, lambda p, *, other: {}], ids=["none", "two", "kwonly"]
)
def test_signatures_that_cannot_take_the_parameters(fn: Any) -> None:
    """A handler that cannot be called fn(parameters) is refused, showing its signature."""
    with pytest.raises(ConfigurationError, match=r"cannot be called as .*\(parameters\)"):
        Worker("http://x").handler(SID)(fn)


def test_decorator_returns_the_function_unchanged() -> None:
    """The decorated function stays an ordinary function."""
    worker = Worker("http://x")
    assert one is worker.handler(SID)(one)
    assert {"a": 1} == one({"a": 1})


def test_non_callable() -> None:
    """Only callables can be handlers."""
    with pytest.raises(ConfigurationError, match="must be callable"):
        Worker("http://x").handler(SID)(42)  # type: ignore[type-var]


def test_bare_decorator_is_refused() -> None:
    """@worker.handler without arguments says how to use it."""
    with pytest.raises(ConfigurationError, match=r"worker.handler\(service_id\)"):
        Worker("http://x").handler(one)  # type: ignore[arg-type]


def test_one_handler_per_service() -> None:
    """The same id (in any spelling) or the same description twice is refused."""
    worker = Worker("http://x")
    worker.handler(SID)(one)
    with pytest.raises(ConfigurationError, match="already has a handler"):
        worker.handler(SID.upper())(with_job)
    worker.handler(**SPEC)(one)
    with pytest.raises(ConfigurationError, match="already has a handler"):
        worker.handler(**SPEC)(with_job)
    worker.handler(**{**SPEC, "job_result_schema": {"type": "object", "required": ["x"]}})(one)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing: name, description"),
        ((), {"name": "FID"}, "missing: description"),
        ((SID,), {"name": "FID"}, "not both"),
        ((SID,), {"service_timeout": 5}, "not both"),
        (("nope",), {}, "not a service id"),
        ((SID,), {"concurrency": 0}, "concurrency must be an int >= 1"),
        ((SID,), {"concurrency": 1.5}, "concurrency must be an int >= 1"),
        ((SID,), {"timeout": -1}, "timeout must be positive"),
        ((SID,), {"error_results": "x"}, "error_results must be callable"),
        ((), {**SPEC, "service_timeout": 2.5}, "whole seconds"),
        ((), {**SPEC, "job_result_schema": []}, "job_result_schema must be a JSON object"),
        ((), {**SPEC, "name": 5}, "name must be a string"),
    ],
)
def test_bad_registrations(args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> None:
    """Each mistake names itself."""
    with pytest.raises(ConfigurationError, match=message):
        Worker("http://x").handler(*args, **kwargs)(one)


def test_timedelta_options() -> None:
    """Durations may be timedeltas."""
    worker = Worker("http://x", heartbeat_interval=timedelta(seconds=2))
    worker.handler(SID, timeout=timedelta(minutes=1))(one)
    assert 2.0 == worker.settings.heartbeat_interval


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_jobs": 0}, "max_jobs"),
        ({"max_jobs": True}, "max_jobs"),
        ({"jitter": 1.0}, "jitter"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"min_poll_interval": 2.0}, "must not exceed"),
        ({"max_overrun": -1}, "max_overrun"),
    ],
)
def test_bad_worker_settings(kwargs: dict[str, Any], message: str) -> None:
    """Nonsense settings fail at construction, naming the argument."""
    with pytest.raises(ConfigurationError, match=message):
        Worker("http://x", **kwargs)
