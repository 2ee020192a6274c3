"""What the client checks before it sends anything: ids, statuses, timeouts and bodies.

A request argument that cannot make a valid request fails here with
:class:`~topchef_worker.exceptions.InvalidRequestError` (also a ``ValueError``) that
names it, and nothing reaches the server; the client's own connect and read timeouts
are checked once, when it is made.  Some checks are stricter than the server on
purpose: it truncates a fractional service timeout and answers 500 for one below a
second, and it answers a malformed id with a 404 that reads like a missing service.
Failing early, with the argument named, is the better message.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Union

from ._durations import to_seconds
from ._ids import parse_id
from ._models import JobStatus
from .exceptions import ConfigurationError, InvalidRequestError

__all__ = [
    "TimeoutLike",
    "check_base_url",
    "check_bool",
    "check_job_id",
    "check_job_status",
    "check_object",
    "check_schema",
    "check_service_id",
    "check_string",
    "json_body",
    "redact",
    "timeout_pair",
    "whole_seconds",
]

TimeoutLike = Union[float, timedelta, "tuple[float, float]"]


def timeout_pair(timeout: TimeoutLike) -> tuple[float, float]:
    """The ``(connect, read)`` timeouts in seconds, from one value or a pair."""
    if isinstance(timeout, tuple):
        if len(timeout) != 2:
            raise ValueError(f"timeout must be (connect, read), got {timeout!r}")
        return (
            to_seconds(timeout[0], "connect timeout"),
            to_seconds(timeout[1], "read timeout"),
        )
    both = to_seconds(timeout, "timeout")
    return (both, both)


def whole_seconds(value: float | timedelta) -> int:
    """Convert a service timeout to the whole seconds TopChef stores.

    The server truncates floats and answers 500 for anything below one second, so
    both are refused here, before a request is made.
    """
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise InvalidRequestError(f"service timeout must be whole seconds, got {value!r}")
    if seconds != int(seconds) or seconds < 1:
        raise InvalidRequestError(
            f"service timeout must be a whole number of seconds >= 1, got {value!r}"
        )
    return int(seconds)


def json_body(method: str, path: str, body: Any) -> bytes:
    """Encode a request body as compact JSON; NaN and infinities are refused."""
    try:
        return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as error:
        raise InvalidRequestError(
            f"{method} {path}: the request body is not JSON-serialisable ({error})"
        ) from error


def check_string(value: object, name: str) -> str:
    """*value*, if it is a string."""
    if not isinstance(value, str):
        raise InvalidRequestError(f"{name} must be a string, got {value!r:.60}")
    return value


def check_bool(value: object, name: str) -> bool:
    """*value*, if it is a bool (not merely truthy)."""
    if not isinstance(value, bool):
        raise InvalidRequestError(f"{name} must be a bool, got {value!r}")
    return value


def check_schema(value: object, name: str) -> Mapping[str, Any]:
    """*value*, if it is a mapping; whether it is valid JSON Schema is not checked."""
    if not isinstance(value, Mapping):
        raise InvalidRequestError(f"{name} must be a JSON object, got {value!r:.60}")
    return value


def check_object(value: object, what: str) -> Mapping[str, Any]:
    """*value*, if it is a mapping: job parameters and results are JSON objects."""
    if not isinstance(value, Mapping):
        raise InvalidRequestError(
            f"{what} must be a JSON object (a dict), got {type(value).__name__}"
        )
    return value


def check_service_id(value: object) -> str:
    """The canonical form of a service id (a UUID)."""
    canonical = parse_id(value)
    if canonical is None:
        raise InvalidRequestError(f"{value!r:.60} is not a valid service id (a UUID)")
    return canonical


def check_job_id(value: object) -> str:
    """The canonical form of a job id (a UUID)."""
    canonical = parse_id(value)
    if canonical is None:
        raise InvalidRequestError(f"{value!r:.60} is not a valid job id (a UUID)")
    return canonical


def check_job_status(value: object) -> JobStatus:
    """A :class:`JobStatus`, or its name in any case."""
    if isinstance(value, JobStatus):
        return value
    if isinstance(value, str):
        try:
            return JobStatus(value.upper())
        except ValueError:
            pass
    choices = ", ".join(status.value for status in JobStatus)
    raise InvalidRequestError(f"{value!r:.40} is not a job status (one of {choices})")


_USERINFO = re.compile(r"(?<=//)[^/?#@]*@")


def redact(url: str) -> str:
    """*url* as it may be shown (logs, messages, ``repr``): a user name and password in
    it (``http://user:secret@host``, a token as user name) become ``***``.

    Text, not a parse, so that it holds for a URL too malformed to parse, the very
    one an error message is about.
    """
    return _USERINFO.sub("***@", url)


#: The API's own paths: a base URL ending in one is an endpoint, not the root.
_ENDPOINTS = frozenset({"services", "jobs", "next", "queue", "validator"})


def check_base_url(url: str) -> str:
    """Return *url* if a client can use it as a TopChef base URL, else explain.

    A path is allowed (a server behind a proxy at ``/topchef``), but not one that
    ends in an endpoint: ``http://host/services`` would send ``/services/services``
    and read the 404 as a missing service.
    """
    shown = redact(url)
    if any(char.isspace() or ord(char) < 32 for char in url):
        raise ConfigurationError(
            f"the TopChef URL {shown!r} contains white space or control characters"
        )
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ConfigurationError(f"the TopChef URL {shown!r} is malformed: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigurationError(f"the TopChef URL {shown!r} must start with http:// or https://")
    if not parts.hostname:
        raise ConfigurationError(f"the TopChef URL {shown!r} names no host")
    if port is not None and not 0 < port < 65536:
        raise ConfigurationError(f"the TopChef URL {shown!r} has a port out of range")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"the TopChef URL {shown!r} must not have a query or fragment")
    segments = [segment for segment in parts.path.split("/") if segment]
    if segments and segments[-1] in _ENDPOINTS:
        root = redact(urllib.parse.urlunsplit(parts._replace(path="/".join(segments[:-1]))))
        raise ConfigurationError(
            f"the TopChef URL {shown!r} names the /{segments[-1]} endpoint, not the "
            f"server's root: use {root.rstrip('/')!r}"
        )
    return url
