"""TopChef's HTTP API as a plain function from request to response.

This module knows nothing of sockets: :class:`TopChefApp` takes a parsed request and
returns status, headers and body, exactly as the real server would for the same
request, so the contract can be tested without I/O and the HTTP layer stays small.
It is not thread-safe on its own; the server calls it under one lock, which is also
how the real server behaves (one request at a time).
"""

from __future__ import annotations

import heapq
import json
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, Callable

import attrs
import jsonschema

from topchef_worker._ids import parse_id

__all__ = ["AppRequest", "AppResponse", "TopChefApp"]

Clock = Callable[[], datetime]

_JSON = "application/json"
_HTML = "text/html"
_EMPTY_TYPE = "text/html; charset=utf-8"

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

_OVERRIDABLE = frozenset({"GET", "HEAD", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"})
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
_STATUSES = ("REGISTERED", "WORKING", "COMPLETED", "ERROR")
_NOT_JSON_DETAIL = (
    "Could not undertand input. Either it is not JSON, or the type was not specified "
    "using the Content-Type header"
)
_MISSING = "Missing data for required field."
_TRUTHY = frozenset({"t", "T", "true", "True", "TRUE", "1", 1})
_FALSY = frozenset({"f", "F", "false", "False", "FALSE", "0", 0})

# The meta schemas the real server attaches are generated, inaccurate (the contract
# says not to validate against them) and large; these keep their keys and intent.
_JOB_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "type": "object",
    "properties": {
        "date_submitted": {"type": "string"},
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "results": {"type": "object"},
        "status": {"enum": list(_STATUSES), "type": "string"},
    },
    "required": ["id", "parameters", "results", "status"],
}
_SERVICE_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "title": "Detailed Service Schema",
    "type": "object",
}
_META_JOB = json.dumps({"job_schema": _JOB_SCHEMA}, sort_keys=True)
_META_JOB_LIST = json.dumps({"data_schema": {"type": "array", "items": _JOB_SCHEMA}})
_META_SERVICE = json.dumps({"service_schema": _SERVICE_SCHEMA})
_META_SERVICES = json.dumps(
    {"service_schema": _SERVICE_SCHEMA, "new_service_schema": _SERVICE_SCHEMA}
)
_API_INFO = {
    "documentation_url": "https://topchef.readthedocs.io/en/latest/",
    "maintainer_email": "michalkononenko@gmail.com",
    "maintainer_name": "Michal Kononenko",
    "source_code_repository_url": "https://www.github.com/MichalKononenko/TopChef",
    "version": "0.1dev",
}

# Routes: (first segment, number of segments, tail) -> (name, methods).
_ROUTES: dict[tuple[str, ...], tuple[str, tuple[str, ...]]] = {
    (): ("root", ("GET",)),
    ("services",): ("services", ("GET", "POST")),
    ("services", "*"): ("service", ("GET", "PATCH")),
    ("services", "*", "jobs"): ("service_jobs", ("GET", "POST")),
    ("services", "*", "jobs", "next"): ("next_job", ("GET",)),
    ("services", "*", "queue"): ("queue", ("GET",)),
    ("jobs",): ("jobs", ("GET",)),
    ("jobs", "*"): ("job", ("GET", "PATCH")),
    ("validator",): ("validator", ("GET", "POST")),
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


class _Fail(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a handler to answer with a prepared response."""

    def __init__(self, response: AppResponse) -> None:
        super().__init__(response.status)
        self.response = response


@attrs.define
class _Service:
    id: str
    name: str
    description: str
    registration_schema: dict[str, Any]
    result_schema: dict[str, Any]
    last_checked_in: datetime
    is_available: bool = False
    timeout: int = 30
    jobs: list[_Job] = attrs.Factory(list)
    # REGISTERED jobs by submission order; entries go stale when a job's status
    # changes and are dropped lazily, so next/queue cost O(log n), not O(jobs).
    waiting: list[tuple[int, str]] = attrs.Factory(list)
    in_waiting: set[str] = attrs.Factory(set)
    validators: dict[str, Any] = attrs.Factory(dict)


@attrs.define
class _Job:
    id: str
    service_id: str
    seq: int
    parameters: dict[str, Any]
    date_submitted: str
    status: str = "REGISTERED"
    results: dict[str, Any] | None = None

    def view(self) -> dict[str, Any]:
        return {
            "date_submitted": self.date_submitted,
            "id": self.id,
            "parameters": self.parameters,
            "results": self.results,
            "status": self.status,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "date_submitted": self.date_submitted,
            "id": self.id,
            "status": self.status,
        }


def _entry(status: int, title: str, detail: str) -> dict[str, Any]:
    return {"status_code": status, "title": title, "detail": detail}


def _deserialization(field: str, messages: Iterable[str]) -> dict[str, Any]:
    return _entry(
        400,
        "Deserialization Error From Client Data",
        f"Valdation of key '{field}' threw error '{list(messages)!r}'.",
    )


def _errors(entries: list[dict[str, Any]]) -> AppResponse:
    """Answer with TopChef's error body; the status is derived from the entries."""
    codes = {entry["status_code"] for entry in entries}
    if len(codes) == 1:
        status = codes.pop()
    elif all(400 < code < 500 for code in codes):
        status = 400
    else:
        status = 500
    return _json_response(status, {"errors": entries})


def _html(status: int, headers: tuple[tuple[str, str], ...] = ()) -> AppResponse:
    return AppResponse(status, _HTML, _HTML_PAGES[status].encode(), headers)


def _json_response(
    status: int, body: Any, headers: tuple[tuple[str, str], ...] = ()
) -> AppResponse:
    return AppResponse(status, _JSON, json.dumps(body).encode(), headers)


def _enveloped(data: Any, meta_json: str, self_url: str) -> AppResponse:
    # The meta part is constant per endpoint and pre-serialised, which keeps the
    # hot endpoints (next, job detail) cheap.
    links = json.dumps({"self": self_url})
    body = f'{{"data": {json.dumps(data)}, "links": {links}, "meta": {meta_json}}}'
    return AppResponse(200, _JSON, body.encode())


def _schema_error_detail(error: Any) -> str:
    return f"Validation of schema [] threw error {error.message}"


class TopChefApp:
    """The in-memory state and request handling of one TopChef server."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or (lambda: datetime.now(timezone.utc))
        self.services: dict[str, _Service] = {}
        self.jobs: dict[str, _Job] = {}
        self._seq = 0

    # -- entry point ------------------------------------------------------------------

    def handle(self, request: AppRequest, host: str) -> AppResponse:
        """Answer *request* as TopChef would; *host* builds the absolute links."""
        method, body = request.method, request.body
        override = request.headers.get("x-http-method-override", "").upper()
        if override in _OVERRIDABLE:
            method = override
            if method in _BODYLESS:
                body = b""
        segments = tuple(request.path.strip("/").split("/")) if request.path != "/" else ()
        if request.path.endswith("/") and request.path != "/":
            segments = (*segments, "")  # Flask: a trailing slash is another route
        pattern = tuple("*" if i == 1 and s else s for i, s in enumerate(segments))
        route = _ROUTES.get(pattern)
        if route is None:
            return _html(404)
        name, methods = route
        allow = (("Allow", ", ".join(("HEAD", *methods, "OPTIONS"))),)
        if method == "OPTIONS":
            return AppResponse(200, _EMPTY_TYPE, b"", allow)
        if method == "HEAD":
            # TopChef's own 405 with a JSON body that HEAD then drops.
            return AppResponse(405, _JSON, b"", ())
        if method not in methods:
            return _html(405, allow)
        handler = getattr(self, f"_{name}_{method.lower()}")
        context = _Context(self, request, body, host, segments)
        try:
            response: AppResponse = handler(context)
        except _Fail as fail:
            return fail.response
        except Exception:
            # Flask's answer to any unhandled exception.
            return _html(500)
        return response

    # -- helpers ----------------------------------------------------------------------

    def _service(self, raw: str) -> _Service:
        sid = parse_id(raw)
        if sid is None:
            raise _Fail(
                _errors(
                    [
                        _entry(
                            404,
                            "Not UUID Error",
                            f"The string {raw} could not be converted to a UUID",
                        )
                    ]
                )
            )
        service = self.services.get(sid)
        if service is None:
            raise _Fail(
                _errors(
                    [
                        _entry(
                            404,
                            "Service Not Found",
                            f"A service with UUID {sid} does not exist",
                        )
                    ]
                )
            )
        return service

    def _job(self, raw: str) -> _Job:
        jid = parse_id(raw)
        if jid is None:
            raise _Fail(
                _errors(
                    [
                        _entry(
                            404,
                            "Not UUID Error",
                            f"The string {raw} could not be converted to a UUID",
                        )
                    ]
                )
            )
        job = self.jobs.get(jid)
        if job is None:
            raise _Fail(
                _errors([_entry(404, "Job Not Found", f"A job with id {jid} was not found")])
            )
        return job

    def _validator(self, service: _Service, which: str) -> Any:
        validator = service.validators.get(which)
        if validator is None:
            schema = (
                service.registration_schema if which == "registration" else service.result_schema
            )
            # An invalid stored schema is an unhandled exception (500) on the real
            # server, at the first job that needs it.
            jsonschema.Draft4Validator.check_schema(schema)
            validator = service.validators[which] = jsonschema.Draft4Validator(schema)
        return validator

    def _has_timed_out(self, service: _Service) -> bool:
        return (self.clock() - service.last_checked_in).total_seconds() > service.timeout

    def _service_detail(self, service: _Service) -> dict[str, Any]:
        return {
            "description": service.description,
            "has_timed_out": self._has_timed_out(service),
            "id": service.id,
            "is_service_available": service.is_available,
            "job_registration_schema": service.registration_schema,
            "job_result_schema": service.result_schema,
            "jobs": [job.summary() for job in service.jobs],
            "name": service.name,
            "timeout": service.timeout,
        }

    def _set_status(self, job: _Job, status: str) -> None:
        job.status = status
        if status == "REGISTERED" and job.id not in self.services[job.service_id].in_waiting:
            service = self.services[job.service_id]
            heapq.heappush(service.waiting, (job.seq, job.id))
            service.in_waiting.add(job.id)

    def _waiting(self, service: _Service, limit: int) -> list[_Job]:
        """Return up to *limit* REGISTERED jobs, oldest submission first."""
        waiting = service.waiting
        while waiting and self.jobs[waiting[0][1]].status != "REGISTERED":
            service.in_waiting.discard(heapq.heappop(waiting)[1])
        if limit == 1:
            return [self.jobs[waiting[0][1]]] if waiting else []
        found = [self.jobs[jid] for _, jid in heapq.nsmallest(len(waiting), waiting)]
        return [job for job in found if job.status == "REGISTERED"][:limit]

    # -- endpoints --------------------------------------------------------------------

    def _root_get(self, ctx: _Context) -> AppResponse:
        return _enveloped(_API_INFO, json.dumps({"schema": {"type": "object"}}), ctx.url("/"))

    def _services_get(self, ctx: _Context) -> AppResponse:
        data = [
            {"description": s.description, "id": s.id, "name": s.name}
            for s in self.services.values()
        ]
        return _enveloped(data, _META_SERVICES, ctx.url("/services"))

    def _services_post(self, ctx: _Context) -> AppResponse:
        body = ctx.json_object()
        problems = []
        for key in (
            "description",
            "job_registration_schema",
            "job_result_schema",
            "name",
        ):
            if key not in body:
                problems.append(_deserialization(key, [_MISSING]))
            elif key.endswith("schema") and not isinstance(body[key], dict):
                problems.append(_deserialization(key, ["Not a valid mapping type."]))
            elif not key.endswith("schema") and not isinstance(body[key], str):
                problems.append(_deserialization(key, ["Not a valid string."]))
        if problems:
            return _errors(problems)
        sid = str(uuid.uuid4())
        self.services[sid] = _Service(
            id=sid,
            name=body["name"],
            description=body["description"],
            registration_schema=body["job_registration_schema"],
            result_schema=body["job_result_schema"],
            last_checked_in=self.clock(),
        )
        body_out = {
            "data": {"message": "service successfully created"},
            "links": {"self": ctx.url("/services")},
        }
        return _json_response(201, body_out, (("Location", ctx.url(f"/services/{sid}")),))

    def _service_get(self, ctx: _Context) -> AppResponse:
        service = self._service(ctx.segments[1])
        return _enveloped(
            self._service_detail(service),
            _META_SERVICE,
            ctx.url(f"/services/{service.id}"),
        )

    def _service_patch(self, ctx: _Context) -> AppResponse:
        service = self._service(ctx.segments[1])
        # The real handler checks in first and commits in a `finally`, so the
        # check-in sticks even when the rest of the request fails.
        now = self.clock()
        service.last_checked_in = now
        body = ctx.json_or_none()
        if body is None:
            stamp = now.astimezone(timezone.utc).replace(tzinfo=None).isoformat()
            return _json_response(200, {"meta": f"Service checked in at {stamp}"})
        if not isinstance(body, dict):
            return _errors([_deserialization("_schema", ["Invalid input type."])])
        changes, problems = _service_changes(body)
        if problems:
            return _errors(problems)
        for key in ("is_available", "description", "name"):
            if key in changes:
                setattr(service, key, changes[key])
        if "timeout" in changes:
            if changes["timeout"] == 0:
                return _html(500)  # ValueError in the model's setter, after the above
            service.timeout = changes["timeout"]
        return _enveloped(
            self._service_detail(service),
            _META_SERVICE,
            ctx.url(f"/services/{service.id}"),
        )

    def _service_jobs_get(self, ctx: _Context) -> AppResponse:
        service = self._service(ctx.segments[1])
        meta = json.dumps(
            {
                "new_job_schema": {
                    "type": "object",
                    "properties": {"parameters": service.registration_schema},
                },
                "data_schema": {"type": "array", "items": _JOB_SCHEMA},
            }
        )
        return _enveloped(
            [job.view() for job in service.jobs],
            meta,
            ctx.url(f"/services/{service.id}/jobs"),
        )

    def _service_jobs_post(self, ctx: _Context) -> AppResponse:
        service = self._service(ctx.segments[1])
        body = ctx.json_object()
        if "parameters" not in body:
            return _errors([_deserialization("parameters", [_MISSING])])
        parameters = body["parameters"]
        if not isinstance(parameters, dict):
            return _errors([_deserialization("parameters", ["Not a valid mapping type."])])
        validator = self._validator(service, "registration")
        problems = [
            _entry(400, "JSONSchema Validation Error", _schema_error_detail(error))
            for error in validator.iter_errors(parameters)
        ]
        if problems:
            return _errors(problems)
        jid = str(uuid.uuid4())
        self._seq += 1
        # Deliberate difference: the real server stamps every job with its own start
        # time (a default-argument bug); this one records the submission time.
        stamp = self.clock().astimezone(timezone.utc).isoformat()
        job = _Job(
            id=jid,
            service_id=service.id,
            seq=self._seq,
            parameters=parameters,
            date_submitted=stamp,
        )
        self.jobs[jid] = job
        service.jobs.append(job)
        self._set_status(job, "REGISTERED")
        return _json_response(
            201,
            {"data": job.view(), "meta": f"new job ID is {jid}"},
            (("Location", ctx.url(f"/jobs/{jid}")),),
        )

    def _next_job_get(self, ctx: _Context) -> AppResponse:
        service = self._service(ctx.segments[1])
        waiting = self._waiting(service, 1)
        if not waiting:
            return AppResponse(204, _EMPTY_TYPE)
        return _enveloped(
            waiting[0].view(), _META_JOB, ctx.url(f"/services/{service.id}/jobs/next")
        )

    def _queue_get(self, ctx: _Context) -> AppResponse:
        service = self._service(ctx.segments[1])
        waiting = self._waiting(service, 10)
        if not waiting:
            return AppResponse(204, _EMPTY_TYPE)
        return _enveloped(
            [job.view() for job in waiting],
            _META_JOB_LIST,
            ctx.url(f"/services/{service.id}/queue"),
        )

    def _jobs_get(self, ctx: _Context) -> AppResponse:
        return _enveloped(
            [job.summary() for job in self.jobs.values()],
            _META_JOB_LIST,
            ctx.url("/jobs"),
        )

    def _job_get(self, ctx: _Context) -> AppResponse:
        job = self._job(ctx.segments[1])
        meta = json.dumps({"job_info_schema": _JOB_SCHEMA, "patch_request_schema": _JOB_SCHEMA})
        return _enveloped(job.view(), meta, ctx.url(f"/jobs/{job.id}"))

    def _job_patch(self, ctx: _Context) -> AppResponse:
        job = self._job(ctx.segments[1])
        body = ctx.json_object()
        problems = []
        status = body.get("status")
        if status is not None:
            # A non-string status is an unhandled AttributeError: 500 HTML.
            status = status.upper()
            if status not in _STATUSES:
                problems.append(
                    _deserialization("status", [f"Invalid enum member {body['status']}"])
                )
        results = body.get("results")
        if results is not None and not isinstance(results, dict):
            problems.append(_deserialization("results", ["Not a valid mapping type."]))
        if problems:
            return _errors(problems)
        if results is not None:
            validator = self._validator(self.services[job.service_id], "result")
            schema_problems = [
                _entry(400, "JSONSchema Validation Error", _schema_error_detail(error))
                for error in validator.iter_errors(results)
            ]
            if schema_problems:
                return _errors(schema_problems)  # nothing applied, status included
            job.results = results
        if status is not None:
            self._set_status(job, status)
        return _json_response(200, job.view())

    def _validator_get(self, ctx: _Context) -> AppResponse:
        meta = json.dumps({"validator_schema": {"type": "object"}})
        return _enveloped({}, meta, ctx.url("/validator"))

    def _validator_post(self, ctx: _Context) -> AppResponse:
        body = ctx.json_object()
        problems = []
        for key in ("object", "schema"):
            if key not in body:
                problems.append(_deserialization(key, [_MISSING]))
            elif not isinstance(body[key], dict):
                problems.append(_deserialization(key, ["Not a valid mapping type."]))
        if problems:
            return _errors(problems)
        jsonschema.Draft4Validator.check_schema(body["schema"])
        errors = [
            _entry(400, "JSONSchema Validation Error", _schema_error_detail(error))
            for error in jsonschema.Draft4Validator(body["schema"]).iter_errors(body["object"])
        ]
        if errors:
            return _errors(errors)
        return _json_response(
            200,
            {
                "data": {"status": "Validation was successful"},
                "links": {"self": ctx.url("/validator")},
            },
        )


def _service_changes(
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
                problems.append(_deserialization(key, ["Not a valid string."]))
    if "is_available" in body:
        value = body["is_available"]
        if _hashable(value) and value in _TRUTHY:
            changes["is_available"] = True
        elif _hashable(value) and value in _FALSY:
            changes["is_available"] = False
        else:
            problems.append(_deserialization("is_available", ["Not a valid boolean."]))
    if "timeout" in body:
        timeout = _integer(body["timeout"])
        if timeout is None:
            problems.append(_deserialization("timeout", ["Not a valid integer."]))
        elif timeout < 0:
            problems.append(
                _deserialization("timeout", ["Attempted to set a negative timeout duration"])
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
class _Context:
    """What one endpoint call needs: the app, the request and helpers on it."""

    app: TopChefApp
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
            raise _Fail(_errors([_entry(400, "Request Not JSON", _NOT_JSON_DETAIL)]))
        if not isinstance(parsed, dict):
            raise _Fail(_errors([_deserialization("_schema", ["Invalid input type."])]))
        return parsed
