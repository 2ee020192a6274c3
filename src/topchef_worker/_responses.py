"""What the client makes of an answer: a body it will read, JSON it will trust, or an error.

Everything here runs after a request was sent.  The body is read in full but never
beyond the client's size limit; the status and the Content-Type are checked before
anything is decoded, because the real server answers unknown routes, wrong methods
and unhandled errors with Flask's HTML pages; and every failure becomes the specific
:class:`~topchef_worker.exceptions.TopChefError` that names the method, the path, the
status and the server's own error entries.  A body of the wrong shape is reported as
:class:`~topchef_worker.exceptions.UnexpectedResponseError`, never as a raw
``KeyError``.

The functions are separate from :class:`~topchef_worker.TopChefClient` so that the
client reads as the list of endpoints it is, and so that the mapping from answers to
exceptions can be read in one place.  The checks (:func:`read_body`,
:func:`decode_json`, :func:`envelope`, :func:`parsed`) raise; the mappings
(:func:`transport_error`, :func:`response_error`, :func:`unexpected_body`) return the
exception, and the caller raises it with the cause it knows (``from error`` or
``from None``).
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
import urllib3.exceptions

from . import _parse
from ._models import ErrorEntry
from .exceptions import (
    ClientError,
    JobNotFoundError,
    NotFoundError,
    RejectedError,
    RequestTimeoutError,
    ResponseError,
    ResponseTooLargeError,
    ServerError,
    ServiceNotFoundError,
    TransportError,
    UnexpectedResponseError,
)

__all__ = [
    "decode_json",
    "envelope",
    "parse_list",
    "parsed",
    "read_body",
    "response_error",
    "transport_error",
    "unexpected_body",
]

_T = TypeVar("_T")


def read_body(method: str, path: str, response: requests.Response, limit: int) -> None:
    """Read the body, refusing one larger than *limit* bytes."""
    declared = response.headers.get("Content-Length", "")
    size = 0
    chunks = []
    if not (declared.isdigit() and int(declared) > limit):
        for chunk in response.iter_content(65536):
            size += len(chunk)
            if size > limit:
                break
            chunks.append(chunk)
        else:
            response._content = b"".join(chunks)
            return
    response.close()
    raise ResponseTooLargeError(
        f"{method} {path} answered {response.status_code} with a body of more than "
        f"{limit} bytes; refused",
        method=method,
        path=path,
        status_code=response.status_code,
    )


def transport_error(
    method: str,
    path: str,
    error: requests.RequestException,
    *,
    base_url: str,
    timeout: tuple[float, float],
) -> TransportError:
    """The error for a request that got no answer, saying whether it was sent."""
    if isinstance(error, requests.Timeout):
        return RequestTimeoutError(
            f"{method} {path}: no answer from {base_url} within "
            f"{timeout[0]:g} s (connect) / {timeout[1]:g} s (read): {error}",
            method=method,
            path=path,
            request_sent=not isinstance(error, requests.ConnectTimeout),
        )
    return TransportError(
        f"{method} {path}: could not reach {base_url}: {_reason(error)}",
        method=method,
        path=path,
        request_sent=not _refused(error),
    )


def response_error(
    method: str,
    path: str,
    response: requests.Response,
    *,
    base_url: str,
    service_id: str | None,
    job_id: str | None,
) -> ResponseError:
    """The error for an answer with a status the request did not expect.

    A 404 names the service or job asked for, when there was one; the server's error
    entries are kept when the body is JSON, and an excerpt of it in any case.
    """
    status = response.status_code
    content_type = response.headers.get("Content-Type", "")
    entries: tuple[ErrorEntry, ...] = ()
    if _is_json(content_type):
        try:
            entries = _parse.error_entries(json.loads(response.content))
        except ValueError:
            entries = ()
    excerpt = _parse.body_excerpt(response.content, content_type)
    reason = "; ".join(str(entry) for entry in entries) or excerpt or "(empty body)"
    context: dict[str, Any] = {
        "method": method,
        "path": path,
        "status_code": status,
        "errors": entries,
        "body_excerpt": excerpt,
        "retry_after": _retry_after(response.headers.get("Retry-After")),
    }
    head = f"{method} {path} failed with {status} {response.reason or ''}".rstrip()
    message = f"{head}: {reason}"
    if status == 404 and job_id is not None:
        return JobNotFoundError(
            f"job {job_id} not found on {base_url} ({message})",
            job_id=job_id,
            **context,
        )
    if status == 404 and service_id is not None:
        return ServiceNotFoundError(
            f"service {service_id} not found on {base_url} ({message})",
            service_id=service_id,
            **context,
        )
    error_class: type[ResponseError]
    if status == 400:
        error_class = RejectedError
    elif status == 404:
        error_class = NotFoundError
    elif 400 <= status < 500:
        error_class = ClientError
    elif status >= 500:
        error_class = ServerError
    else:
        error_class = UnexpectedResponseError
    return error_class(message, **context)


def decode_json(method: str, path: str, response: requests.Response) -> Any:
    """The decoded body, or UnexpectedResponseError if it is not JSON."""
    content_type = response.headers.get("Content-Type", "")
    if not _is_json(content_type):
        raise UnexpectedResponseError(
            f"{method} {path} answered {response.status_code} with "
            f"{content_type or 'no Content-Type'} instead of JSON: "
            f"{_parse.body_excerpt(response.content, content_type) or '(empty body)'}",
            method=method,
            path=path,
            status_code=response.status_code,
            body_excerpt=_parse.body_excerpt(response.content, content_type),
        )
    try:
        return json.loads(response.content)
    except ValueError as error:
        raise UnexpectedResponseError(
            f"{method} {path} answered {response.status_code} with invalid JSON: {error}",
            method=method,
            path=path,
            status_code=response.status_code,
            body_excerpt=_parse.body_excerpt(response.content, content_type),
        ) from None


def envelope(method: str, path: str, response: requests.Response) -> Any:
    """The ``data`` of an enveloped JSON answer."""
    body = decode_json(method, path, response)
    if not isinstance(body, dict) or "data" not in body:
        raise unexpected_body(
            method,
            path,
            response.status_code,
            _parse.ShapeError("the answer has no 'data' envelope"),
        ) from None
    return body["data"]


def parsed(method: str, path: str, parse: Callable[[], _T]) -> _T:
    """Run *parse*, turning a ShapeError into UnexpectedResponseError."""
    try:
        return parse()
    except _parse.ShapeError as error:
        raise unexpected_body(method, path, 200, error) from None


def unexpected_body(
    method: str, path: str, status: int, error: Exception
) -> UnexpectedResponseError:
    """The error for a body that decoded but is not the documented shape."""
    return UnexpectedResponseError(
        f"{method} {path} answered {status} with an unexpected body: {error}",
        method=method,
        path=path,
        status_code=status,
    )


def parse_list(data: Any, parse: Callable[[Any, str], _T], where: str) -> list[_T]:
    """Parse each item of a JSON array with *parse*."""
    if not isinstance(data, list):
        raise _parse.ShapeError(f"{where} is not an array")
    return [parse(item, f"{where}[{i}]") for i, item in enumerate(data)]


def _is_json(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _reason(error: requests.RequestException) -> str:
    """The root cause of a requests error, without urllib3's layers of wrapping."""
    inner = error.args[0] if error.args else error
    reason = getattr(inner, "reason", None) or inner
    text = str(reason)
    marker = "Failed to establish a new connection: "
    return text.split(marker, 1)[1].rstrip("\"')") if marker in text else text


def _refused(error: requests.RequestException) -> bool:
    """True when the connection was refused or never made: nothing was sent."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    reason = getattr(error.args[0] if error.args else None, "reason", None)
    return isinstance(reason, urllib3.exceptions.NewConnectionError)
