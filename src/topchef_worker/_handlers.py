"""Handler registrations: what a user's function is for and how to call it.

A registration is checked when the decorator runs, so a mistake (a non-callable, a
signature that cannot take the parameters, a nonsense concurrency) fails at import
time with a message naming the function, not hours later inside a worker thread.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Collection, Mapping
from datetime import timedelta
from typing import Any

import attrs

from . import _schemas
from ._durations import to_seconds
from ._ids import parse_id
from ._retry import RetryPolicy
from .exceptions import ConfigurationError

__all__ = [
    "HandlerSpec",
    "ServiceSpec",
    "accepts_job",
    "add_handler",
    "positive_seconds",
    "same_service",
]

ErrorResults = Callable[[BaseException], Mapping[str, Any] | None]


def positive_seconds(value: float | timedelta | None, name: str) -> float | None:
    """Normalise a duration to float seconds; None stays None; nonsense fails."""
    if value is None:
        return None
    try:
        return to_seconds(value, name)
    except (TypeError, ValueError) as error:
        raise ConfigurationError(str(error)) from None


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def accepts_job(fn: Callable[..., Any]) -> bool:
    """Tell whether *fn* is called ``fn(parameters, job)`` rather than ``fn(parameters)``.

    A handler asks for the job record by having a parameter named ``job``.  A
    signature that can take neither call is refused with a message that shows it.
    """
    if not callable(fn):
        raise ConfigurationError(f"a handler must be callable, got {fn!r:.80}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return False  # builtins without a signature: assume fn(parameters)
    if "job" in signature.parameters:
        try:
            signature.bind({}, job=None)
        except TypeError:
            pass
        else:
            return True
    try:
        signature.bind({})
    except TypeError:
        raise ConfigurationError(
            f"handler {_name(fn)}{signature} cannot be called as "
            f"{_name(fn)}(parameters) or {_name(fn)}(parameters, job)"
        ) from None
    return False


@attrs.frozen(kw_only=True)
class ServiceSpec:
    """A service to find by name and schemas, or to create, when the worker starts."""

    name: str
    description: str
    job_registration_schema: dict[str, Any] = attrs.field(hash=False)
    job_result_schema: dict[str, Any] = attrs.field(hash=False)
    timeout: int | None = None


@attrs.frozen(kw_only=True)
class HandlerSpec:
    """One registered handler and the options it was registered with.

    Exactly one of ``service_id`` and ``service`` is set.  ``concurrency`` caps the
    handler's jobs in flight (None: only ``max_jobs`` does); ``timeout`` is the job
    deadline in seconds; ``error_results`` turns a failure into results sent with
    ERROR.
    """

    fn: Callable[..., Any]
    service_id: str | None = None
    service: ServiceSpec | None = None
    concurrency: int | None = None
    timeout: float | None = None
    error_results: ErrorResults | None = None
    pass_job: bool = False
    on_orphan: str = "requeue"
    exclusive: bool | None = None  # None: the worker's setting
    pool: str = "default"  # the name of the job pool it runs on
    is_async: bool = False  # a coroutine function, awaited on the worker's event loop
    retry: RetryPolicy | None = None  # attempts again after an error in retry_on
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    on_crash: str = "error"  # its process died: "error" or "requeue"

    @property
    def label(self) -> str:
        """How logs and errors name the handler's service before its id is known."""
        if self.service_id is not None:
            return self.service_id
        assert self.service is not None
        return f"{self.service.name!r}"

    @classmethod
    def build(
        cls,
        fn: Callable[..., Any],
        *,
        service_id: str | None,
        name: str | None,
        description: str | None,
        job_registration_schema: Mapping[str, Any] | None,
        job_result_schema: Mapping[str, Any] | None,
        service_timeout: float | timedelta | None,
        concurrency: int | None,
        timeout: float | timedelta | None,
        error_results: ErrorResults | None,
        on_orphan: str = "requeue",
        exclusive: bool | None = None,
        pool: str | None = None,
        pools: Collection[str] = ("default", "asyncio"),
        retry: RetryPolicy | None = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
        on_crash: str = "error",
    ) -> HandlerSpec:
        """Check every option and build the registration, or fail naming the problem.

        *pools* are the names of the worker's job pools."""
        pass_job = accepts_job(fn)
        is_async = is_coroutine_function(fn)
        pool = _pool_for(fn, pool, is_async, pools)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(f"retry must be a RetryPolicy, got {retry!r:.80}")
        retry_on = retry_on if isinstance(retry_on, tuple) else (retry_on,)
        if not retry_on or not all(
            isinstance(kind, type) and issubclass(kind, BaseException) for kind in retry_on
        ):
            raise ConfigurationError(
                f"retry_on must be an exception class or a tuple of them, got {retry_on!r:.80}"
            )
        if on_crash not in ("requeue", "error"):
            raise ConfigurationError(f'on_crash must be "error" or "requeue", got {on_crash!r}')
        extra: dict[str, Any] = {
            "on_crash": on_crash,
            "pool": pool,
            "is_async": is_async,
            "retry": retry,
            "retry_on": retry_on,
        }
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise ConfigurationError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if error_results is not None and not callable(error_results):
            raise ConfigurationError(f"error_results must be callable, got {error_results!r:.80}")
        job_timeout = positive_seconds(timeout, "timeout")
        if on_orphan not in ("requeue", "error"):
            raise ConfigurationError(f'on_orphan must be "requeue" or "error", got {on_orphan!r}')
        if exclusive is not None and not isinstance(exclusive, bool):
            raise ConfigurationError(f"exclusive must be True or False, got {exclusive!r:.60}")
        spec_fields = {
            "name": name,
            "description": description,
            "job_registration_schema": job_registration_schema,
            "job_result_schema": job_result_schema,
        }
        given = [key for key, value in spec_fields.items() if value is not None]
        if service_id is not None:
            if given or service_timeout is not None:
                raise ConfigurationError(
                    f"handler {_name(fn)}: give either a service id or a service "
                    f"description ({', '.join(given) or 'service_timeout'}), not both"
                )
            canonical = parse_id(service_id)
            if canonical is None:
                raise ConfigurationError(
                    f"handler {_name(fn)}: {service_id!r} is not a service id (a UUID)"
                )
            return cls(
                fn=fn,
                service_id=canonical,
                concurrency=concurrency,
                timeout=job_timeout,
                error_results=error_results,
                pass_job=pass_job,
                on_orphan=on_orphan,
                exclusive=exclusive,
                **extra,
            )
        missing = [key for key, value in spec_fields.items() if value is None]
        if missing:
            raise ConfigurationError(
                f"handler {_name(fn)}: give a service id, or all of name, description, "
                f"job_registration_schema and job_result_schema (missing: {', '.join(missing)})"
            )
        for key in ("name", "description"):
            if not isinstance(spec_fields[key], str):
                raise ConfigurationError(f"{key} must be a string, got {spec_fields[key]!r:.60}")
        for key in ("job_registration_schema", "job_result_schema"):
            if not isinstance(spec_fields[key], Mapping):
                raise ConfigurationError(
                    f"{key} must be a JSON object, got {spec_fields[key]!r:.60}"
                )
        seconds = positive_seconds(service_timeout, "service_timeout")
        if seconds is not None and seconds != int(seconds):
            raise ConfigurationError(
                f"service_timeout must be whole seconds (TopChef stores an int), got "
                f"{service_timeout!r}"
            )
        for key in ("job_registration_schema", "job_result_schema"):
            # TopChef stores any schema, then fails every job of the service with a 500.
            _schemas.check_schema(dict(spec_fields[key] or {}), f"{key} of {name!r}")  # type: ignore[arg-type]
        service = ServiceSpec(
            name=str(name),
            description=str(description),
            job_registration_schema=dict(job_registration_schema or {}),
            job_result_schema=dict(job_result_schema or {}),
            timeout=None if seconds is None else int(seconds),
        )
        return cls(
            fn=fn,
            service=service,
            concurrency=concurrency,
            timeout=job_timeout,
            error_results=error_results,
            pass_job=pass_job,
            on_orphan=on_orphan,
            exclusive=exclusive,
            **extra,
        )


def is_coroutine_function(fn: object) -> bool:
    """Whether calling *fn* makes a coroutine: an ``async def`` function, or an
    object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - the method, not callability
    )


def _pool_for(
    fn: Callable[..., Any], pool: str | None, is_async: bool, pools: Collection[str]
) -> str:
    """The pool a handler runs on: the one it names, or the default for its kind."""
    if pool is None:
        return "asyncio" if is_async else "default"
    if not isinstance(pool, str) or pool not in pools:
        raise ConfigurationError(
            f"handler {_name(fn)}: no job pool named {pool!r}; the worker has "
            f"{', '.join(repr(name) for name in sorted(pools))}"
        )
    if is_async and pool != "asyncio":
        raise ConfigurationError(
            f"handler {_name(fn)} is a coroutine function: it runs on the worker's event "
            f"loop (pool 'asyncio'), not on pool {pool!r}"
        )
    if not is_async and pool == "asyncio":
        raise ConfigurationError(
            f"handler {_name(fn)} is not a coroutine function; pool 'asyncio' runs "
            "async def handlers only"
        )
    return pool


def add_handler(handlers: list[HandlerSpec], spec: HandlerSpec) -> None:
    """Add *spec* to *handlers*, refusing a second handler for one service."""
    for other in handlers:
        if same_service(other, spec):
            raise ConfigurationError(
                f"service {spec.label} already has a handler ({_name(other.fn)}); one per service"
            )
    handlers.append(spec)


def same_service(a: HandlerSpec, b: HandlerSpec) -> bool:
    """Whether two registrations are for the same service (one handler each)."""
    if a.service_id is not None or b.service_id is not None:
        return a.service_id == b.service_id
    assert a.service is not None
    assert b.service is not None
    return _spec_key(a.service) == _spec_key(b.service)


def _spec_key(spec: ServiceSpec) -> tuple[str, str, str]:
    return (
        spec.name,
        json.dumps(spec.job_registration_schema, sort_keys=True),
        json.dumps(spec.job_result_schema, sort_keys=True),
    )
