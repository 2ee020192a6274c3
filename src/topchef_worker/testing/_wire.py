"""What TopChef's answers look like on the wire, and how it reads request bodies.

The stand-in server is only as good as its likeness to the real one, and a client
sees that likeness here: Flask's HTML pages for unknown routes, wrong methods and
unhandled errors, byte for byte; the ``data``/``links``/``meta`` envelope; error
bodies whose status is derived from their entries; and request bodies read as Flask
and marshmallow 2 read them (a body that is not JSON, or not an object, fails with
TopChef's own 400; a service PATCH takes ``"t"`` for true and ``"7"`` for seven).
:class:`~topchef_worker.testing._app.TopChefApp` decides what a request does to the
services and jobs; this module decides how that is said, so each can be read and
checked against the real server on its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import attrs

__all__ = [
    "API_INFO",
    "EMPTY_TYPE",
    "JOB_SCHEMA",
    "JSON_TYPE",
    "META_JOB",
    "META_JOB_LIST",
    "META_SERVICE",
    "META_SERVICES",
    "MISSING",
    "STATUSES",
    "AppRequest",
    "AppResponse",
    "Context",
    "Fail",
    "deserialization_error",
    "enveloped",
    "error_entry",
    "error_response",
    "html_page",
    "json_response",
    "not_found",
    "schema_error_detail",
    "service_changes",
]

JSON_TYPE = "application/json"
_HTML = "text/html"
EMPTY_TYPE = "text/html; charset=utf-8"

# Flask's own error pages, byte for byte as the real server sends them.
_HTML_PAGES = {
    404: (
        '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">\n'
        "<title>404 Not Found</title>\n<h1>Not Found</h1>\n"
        "<p>The requested URL was not found on the server. If you entered the URL "
        "manually please check your spelling and try again.</p>\n"
    ),
    405: (
        '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">\n'
        "<title>405 Method Not Allowed</title>\n<h1>Method Not Allowed</h1>\n"
        "<p>The method is not allowed for the requested URL.</p>\n"
    ),
    500: (
        '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">\n'
        "<title>500 Internal Server Error</title>\n<h1>Internal Server Error</h1>\n"
        "<p>The server encountered an internal error and was unable to complete your "
        "request. Either the server is overloaded or there is an error in the "
        "application.</p>\n"
    ),
}

STATUSES = ("REGISTERED", "WORKING", "COMPLETED", "ERROR")
_NOT_JSON_DETAIL = (
    "Could not undertand input. Either it is not JSON, or the type was not specified "
    "using the Content-Type header"
)
MISSING = "Missing data for required field."
_TRUTHY = frozenset({"t", "T", "true", "True", "TRUE", "1", 1})
_FALSY = frozenset({"f", "F", "false", "False", "FALSE", "0", 0})

# The meta schemas the real server attaches are generated, inaccurate (the contract
# says not to validate against them) and large; these keep their keys and intent.
JOB_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "type": "object",
    "properties": {
        "date_submitted": {"type": "string"},
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "results": {"type": "object"},
        "status": {"enum": list(STATUSES), "type": "string"},
    },
    "required": ["id", "parameters", "results", "status"],
}
_SERVICE_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "title": "Detailed Service Schema",
    "type": "object",
}
META_JOB = json.dumps({"job_schema": JOB_SCHEMA}, sort_keys=True)
META_JOB_LIST = json.dumps({"data_schema": {"type": "array", "items": JOB_SCHEMA}})
META_SERVICE = json.dumps({"service_schema": _SERVICE_SCHEMA})
META_SERVICES = json.dumps(
    {"service_schema": _SERVICE_SCHEMA, "new_service_schema": _SERVICE_SCHEMA}
)
API_INFO = {
    "documentation_url": "https://topchef.readthedocs.io/en/latest/",
    "maintainer_email": "michalkononenko@gmail.com",
    "maintainer_name": "Michal Kononenko",
    "source_code_repository_url": "https://www.github.com/MichalKononenko/TopChef",
    "version": "0.1dev",
}


@attrs.frozen
class AppRequest:
    """A request as the app sees it; header names are lower case."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


@attrs.frozen
class AppResponse:
    """A response: status, Content-Type (None for none), extra headers and body."""

    status: int
    content_type: str | None
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


class Fail(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a handler to answer with a prepared response."""

    def __init__(self, response: AppResponse) -> None:
        super().__init__(response.status)
        self.response = response


def error_entry(status: int, title: str, detail: str) -> dict[str, Any]:
    return {"status_code": status, "title": title, "detail": detail}


def deserialization_error(field: str, messages: Iterable[str]) -> dict[str, Any]:
    return error_entry(
        400,
        "Deserialization Error From Client Data",
        f"Valdation of key '{field}' threw error '{list(messages)!r}'.",
    )


def error_response(entries: list[dict[str, Any]]) -> AppResponse:
    """Answer with TopChef's error body; the status is derived from the entries."""
    codes = {entry["status_code"] for entry in entries}
    if len(codes) == 1:
        status = codes.pop()
    elif all(400 < code < 500 for code in codes):
        status = 400
    else:
        status = 500
    return json_response(status, {"errors": entries})


def not_found(title: str, detail: str) -> Fail:
    """The 404 TopChef answers for a malformed id, or a service or job it does not have."""
    return Fail(error_response([error_entry(404, title, detail)]))


def html_page(status: int, headers: tuple[tuple[str, str], ...] = ()) -> AppResponse:
    return AppResponse(status, _HTML, _HTML_PAGES[status].encode(), headers)


def json_response(status: int, body: Any, headers: tuple[tuple[str, str], ...] = ()) -> AppResponse:
    return AppResponse(status, JSON_TYPE, json.dumps(body).encode(), headers)


def enveloped(data: Any, meta_json: str, self_url: str) -> AppResponse:
    # The meta part is constant per endpoint and pre-serialised, which keeps the
    # hot endpoints (next, job detail) cheap.
    links = json.dumps({"self": self_url})
    body = f'{{"data": {json.dumps(data)}, "links": {links}, "meta": {meta_json}}}'
    return AppResponse(200, JSON_TYPE, body.encode())


def schema_error_detail(error: Any) -> str:
    return f"Validation of schema [] threw error {error.message}"


def service_changes(
    body: dict[str, Any],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Deserialise a service PATCH body as marshmallow 2 did; unknown keys ignored."""
    changes: dict[str, Any] = {}
    problems = []
    for key in ("name", "description"):
        if key in body:
            if isinstance(body[key], str):
                changes[key] = body[key]
            else:
                problems.append(deserialization_error(key, ["Not a valid string."]))
    if "is_available" in body:
        value = body["is_available"]
        if _hashable(value) and value in _TRUTHY:
            changes["is_available"] = True
        elif _hashable(value) and value in _FALSY:
            changes["is_available"] = False
        else:
            problems.append(deserialization_error("is_available", ["Not a valid boolean."]))
    if "timeout" in body:
        timeout = _integer(body["timeout"])
        if timeout is None:
            problems.append(deserialization_error("timeout", ["Not a valid integer."]))
        elif timeout < 0:
            problems.append(
                deserialization_error("timeout", ["Attempted to set a negative timeout duration"])
            )
        else:
            changes["timeout"] = timeout
    return changes, problems


def _hashable(value: object) -> bool:
    return isinstance(value, (str, int, float, bool))


def _integer(value: object) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        try:
            return int(value)
        except (OverflowError, ValueError):
            return None
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


_NOT_JSON = object()


@attrs.define
class Context:
    """What one endpoint call needs: the request and helpers on it."""

    request: AppRequest
    body: bytes
    host: str
    segments: tuple[str, ...]

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"

    def _parsed_json(self) -> object | Any:
        content_type = self.request.headers.get("content-type", "")
        mime = content_type.split(";", 1)[0].strip().lower()
        if not (
            mime == "application/json"
            or (mime.startswith("application/") and mime.endswith("+json"))
        ):
            return _NOT_JSON
        try:
            return json.loads(self.body)
        except ValueError:
            return _NOT_JSON

    def json_or_none(self) -> Any:
        """The JSON body, or None when there is none or it is not JSON."""
        parsed = self._parsed_json()
        return None if parsed is _NOT_JSON else parsed

    def json_object(self) -> dict[str, Any]:
        """The JSON body as an object, or fail as TopChef does (400)."""
        parsed = self._parsed_json()
        if parsed is _NOT_JSON or parsed is None:
            raise Fail(error_response([error_entry(400, "Request Not JSON", _NOT_JSON_DETAIL)]))
        if not isinstance(parsed, dict):
            raise Fail(error_response([deserialization_error("_schema", ["Invalid input type."])]))
        return parsed
