"""Every error ``topchef_worker`` raises, under one root.

.. code-block:: text

    TopChefError
    ├── ConfigurationError           (also a ValueError) a worker or handler set up
    │   │                            wrongly: no URL, a duplicate handler, ...
    │   └── LedgerLockedError        a journal or outbox another process has open
    ├── InvalidRequestError          (also a ValueError) nothing was sent: a malformed
    │                                id, parameters that are not an object, ...
    ├── LedgerError                  a journal or outbox file cannot be opened or
    │   │                            written (``path``; the OS error is the cause)
    │   └── LedgerLockedError
    ├── JobError                     why a job ended ERROR (``job_id``, ``service_id``);
    │   │                            what ``error_results`` callables receive
    │   ├── InvalidParametersError   parameters fail the registration schema
    │   ├── InvalidResultsError      a handler returned something that cannot be sent
    │   ├── JobCrashedError          the process running a handler died
    │   └── JobTimeoutError          a handler ran past its ``timeout``
    ├── HandlerError                 a handler's exception that could not travel back
    │                                from a process pool (``type_name``)
    ├── TransportError               no answer: connection refused or reset, ...
    │   └── RequestTimeoutError      ... or the connect / read timeout expired
    └── ResponseError                an answer, but not the one asked for
        ├── ClientError              4xx
        │   ├── RejectedError        400: the server's ``errors`` explain why
        │   └── NotFoundError        404
        │       ├── ServiceNotFoundError   (``service_id``)
        │       └── JobNotFoundError       (``job_id``)
        ├── ServerError              5xx, often with an HTML body
        └── UnexpectedResponseError  a success status with a body that is not the
            │                        documented JSON shape
            └── ResponseTooLargeError  a body over the client's size limit

Every :class:`ResponseError` carries ``method``, ``path``, ``status_code``, the
server's ``errors`` entries (empty for HTML bodies) and a short ``body_excerpt``, so
the message alone says what went wrong where.  Exceptions pickle with their context,
since they may cross a process pool.

:func:`is_transient` is the one place that decides which errors are worth retrying.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._models import ErrorEntry

__all__ = [
    "ClientError",
    "ConfigurationError",
    "HandlerError",
    "InvalidParametersError",
    "InvalidRequestError",
    "InvalidResultsError",
    "JobCrashedError",
    "JobError",
    "JobNotFoundError",
    "JobTimeoutError",
    "LedgerError",
    "LedgerLockedError",
    "NotFoundError",
    "RejectedError",
    "RequestTimeoutError",
    "ResponseError",
    "ResponseTooLargeError",
    "ServerError",
    "ServiceNotFoundError",
    "TopChefError",
    "TransportError",
    "UnexpectedResponseError",
    "is_transient",
]


def _restore(cls: type[TopChefError], args: tuple[Any, ...], state: dict[str, Any]) -> TopChefError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class TopChefError(Exception):
    """The root of every error raised by ``topchef_worker``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)

    @property
    def message(self) -> str:
        """The human-readable message."""
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take keyword context that Exception's default pickling would
        # drop; rebuild from the args and the instance dict instead.
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class InvalidRequestError(TopChefError, ValueError):
    """An argument cannot make a valid request; nothing was sent to the server."""


class ConfigurationError(TopChefError, ValueError):
    """A worker or handler is set up wrongly; raised before any job runs."""


class LedgerError(TopChefError):
    """A journal or outbox file could not be opened, locked, read or written.

    ``path`` is the file; the OS error, if there was one, is the ``__cause__``.
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str]) -> None:
        super().__init__(message)
        self.path = Path(path)


class LedgerLockedError(LedgerError, ConfigurationError):
    """Another process has the journal or outbox open: two workers cannot share one."""


class JobError(TopChefError):
    """Why a job ended ERROR although the handler did not raise.

    Passed to a handler's ``error_results`` callable like a handler's own exception.
    """

    def __init__(self, message: str, *, job_id: str, service_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.service_id = service_id


class InvalidParametersError(JobError):
    """The job's parameters fail the service's registration schema (``reasons``)."""

    def __init__(
        self, message: str, *, job_id: str, service_id: str, reasons: Sequence[str] = ()
    ) -> None:
        super().__init__(message, job_id=job_id, service_id=service_id)
        self.reasons = tuple(reasons)


class InvalidResultsError(JobError):
    """The handler's return value cannot be sent as results (``reasons``).

    Not a dict, not JSON-serialisable, or failing the service's result schema.
    """

    def __init__(
        self, message: str, *, job_id: str, service_id: str, reasons: Sequence[str] = ()
    ) -> None:
        super().__init__(message, job_id=job_id, service_id=service_id)
        self.reasons = tuple(reasons)


class JobTimeoutError(JobError):
    """The handler did not finish within its ``timeout`` (``seconds``)."""

    def __init__(self, message: str, *, job_id: str, service_id: str, seconds: float) -> None:
        super().__init__(message, job_id=job_id, service_id=service_id)
        self.seconds = seconds


class JobCrashedError(JobError):
    """The process running the handler died (the process pool broke while this job
    ran alone in it, so it was this job's doing)."""


class HandlerError(TopChefError):
    """A handler in a process pool raised an exception that cannot travel back to
    the worker (it does not pickle); ``type_name`` and the message say what it was."""

    def __init__(self, message: str, *, type_name: str) -> None:
        super().__init__(message)
        self.type_name = type_name


class TransportError(TopChefError):
    """No HTTP answer arrived: the connection was refused, reset or timed out.

    ``request_sent`` is False only when the request certainly never left (the
    connection was refused or could not be made), so the server cannot have applied
    it.
    """

    def __init__(self, message: str, *, method: str, path: str, request_sent: bool = True) -> None:
        super().__init__(message)
        self.method = method
        self.path = path
        self.request_sent = request_sent


class RequestTimeoutError(TransportError):
    """The connect or read timeout expired before the server answered."""


class ResponseError(TopChefError):
    """The server answered, but not with what was asked for.

    Attributes:
        method: The HTTP method of the request.
        path: The request path, relative to the server's base URL.
        status_code: The HTTP status of the answer.
        errors: The server's ``errors`` entries; empty when the body was not a
            TopChef JSON error (Flask's HTML pages, for example).
        body_excerpt: The start of the body, with HTML tags stripped.
        retry_after: Seconds from a ``Retry-After`` header, if one was sent.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str,
        path: str,
        status_code: int,
        errors: Sequence[ErrorEntry] = (),
        body_excerpt: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.method = method
        self.path = path
        self.status_code = status_code
        self.errors = tuple(errors)
        self.body_excerpt = body_excerpt
        self.retry_after = retry_after


class ClientError(ResponseError):
    """A 4xx answer: the request was wrong, so repeating it will not help.

    The exception is 429 (Too Many Requests), which :func:`is_transient` treats as
    worth retrying.
    """


class RejectedError(ClientError):
    """A 400: the server rejected the request body.

    ``errors`` holds the reasons, one entry per problem: for results that fail the
    service's result schema, one ``JSONSchema Validation Error`` per violation.
    """


class NotFoundError(ClientError):
    """A 404: the service, job or route does not exist."""


class ServiceNotFoundError(NotFoundError):
    """The service does not exist on this server (``service_id``)."""

    def __init__(self, message: str, *, service_id: str, **context: Any) -> None:
        super().__init__(message, **context)
        self.service_id = service_id


class JobNotFoundError(NotFoundError):
    """The job does not exist on this server (``job_id``)."""

    def __init__(self, message: str, *, job_id: str, **context: Any) -> None:
        super().__init__(message, **context)
        self.job_id = job_id


class ServerError(ResponseError):
    """A 5xx answer: the server failed, often with an HTML page instead of JSON."""


class UnexpectedResponseError(ResponseError):
    """A success status whose body is not the documented shape.

    HTML where JSON was expected, JSON of the wrong shape, an unknown job status or a
    missing field all end here rather than as a raw ``KeyError`` or
    ``JSONDecodeError``.
    """


class ResponseTooLargeError(UnexpectedResponseError):
    """A body larger than the client's ``max_response_bytes``; it was not read."""


def is_transient(error: BaseException) -> bool:
    """Tell whether repeating the request that raised *error* may succeed.

    Transient: no answer at all (:class:`TransportError`), any 5xx, and 429.  Every
    other 4xx, an unexpected body and an invalid request will fail the same way again.
    """
    if isinstance(error, TransportError):
        return True
    if isinstance(error, ResponseError) and not isinstance(error, UnexpectedResponseError):
        return error.status_code >= 500 or error.status_code == 429
    return False
