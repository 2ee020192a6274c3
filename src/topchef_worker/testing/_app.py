"""TopChef's HTTP API as a plain function from request to response.

This module knows nothing of sockets: :class:`TopChefApp` takes a parsed request and
returns status, headers and body, exactly as the real server would for the same
request, so the contract can be tested without I/O and the HTTP layer stays small.
It is not thread-safe on its own; the server calls it under one lock, which is also
how the real server behaves (one request at a time).  Here are the routes, the state
and what each endpoint does to it; how answers are worded and request bodies read
is in :mod:`topchef_worker.testing._wire`.
"""

from __future__ import annotations

import heapq
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs

from topchef_worker._ids import parse_id
from topchef_worker._schemas import draft4_validator

from ._wire import (
    API_INFO,
    EMPTY_TYPE,
    JOB_SCHEMA,
    JSON_TYPE,
    META_JOB,
    META_JOB_LIST,
    META_SERVICE,
    META_SERVICES,
    MISSING,
    STATUSES,
    AppRequest,
    AppResponse,
    Context,
    Fail,
    deserialization_error,
    enveloped,
    error_entry,
    error_response,
    html_page,
    json_response,
    not_found,
    schema_error_detail,
    service_changes,
)

__all__ = ["AppRequest", "AppResponse", "TopChefApp"]

Clock = Callable[[], datetime]

_OVERRIDABLE = frozenset({"GET", "HEAD", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"})
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})

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


class TopChefApp:
    """The in-memory state and request handling of one TopChef server."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
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
            return html_page(404)
        name, methods = route
        allow = (("Allow", ", ".join(("HEAD", *methods, "OPTIONS"))),)
        if method == "OPTIONS":
            return AppResponse(200, EMPTY_TYPE, b"", allow)
        if method == "HEAD":
            # TopChef's own 405 with a JSON body that HEAD then drops.
            return AppResponse(405, JSON_TYPE, b"", ())
        if method not in methods:
            return html_page(405, allow)
        handler = getattr(self, f"_{name}_{method.lower()}")
        context = Context(request, body, host, segments)
        try:
            response: AppResponse = handler(context)
        except Fail as fail:
            return fail.response
        except Exception:
            # Flask's answer to any unhandled exception.
            return html_page(500)
        return response

    # -- helpers ----------------------------------------------------------------------

    def _service(self, raw: str) -> _Service:
        sid = parse_id(raw)
        if sid is None:
            raise not_found("Not UUID Error", f"The string {raw} could not be converted to a UUID")
        service = self.services.get(sid)
        if service is None:
            raise not_found("Service Not Found", f"A service with UUID {sid} does not exist")
        return service

    def _job(self, raw: str) -> _Job:
        jid = parse_id(raw)
        if jid is None:
            raise not_found("Not UUID Error", f"The string {raw} could not be converted to a UUID")
        job = self.jobs.get(jid)
        if job is None:
            raise not_found("Job Not Found", f"A job with id {jid} was not found")
        return job

    def _validator(self, service: _Service, which: str) -> Any:
        validator = service.validators.get(which)
        if validator is None:
            schema = (
                service.registration_schema if which == "registration" else service.result_schema
            )
            # See _validator_post: as the real server validates, never fetching.
            validator = service.validators[which] = draft4_validator(schema)
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

    def _root_get(self, ctx: Context) -> AppResponse:
        return enveloped(API_INFO, json.dumps({"schema": {"type": "object"}}), ctx.url("/"))

    def _services_get(self, ctx: Context) -> AppResponse:
        data = [
            {"description": s.description, "id": s.id, "name": s.name}
            for s in self.services.values()
        ]
        return enveloped(data, META_SERVICES, ctx.url("/services"))

    def _services_post(self, ctx: Context) -> AppResponse:
        body = ctx.json_object()
        problems = []
        for key in (
            "description",
            "job_registration_schema",
            "job_result_schema",
            "name",
        ):
            if key not in body:
                problems.append(deserialization_error(key, [MISSING]))
            elif key.endswith("schema") and not isinstance(body[key], dict):
                problems.append(deserialization_error(key, ["Not a valid mapping type."]))
            elif not key.endswith("schema") and not isinstance(body[key], str):
                problems.append(deserialization_error(key, ["Not a valid string."]))
        if problems:
            return error_response(problems)
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
        return json_response(201, body_out, (("Location", ctx.url(f"/services/{sid}")),))

    def _service_get(self, ctx: Context) -> AppResponse:
        service = self._service(ctx.segments[1])
        return enveloped(
            self._service_detail(service),
            META_SERVICE,
            ctx.url(f"/services/{service.id}"),
        )

    def _service_patch(self, ctx: Context) -> AppResponse:
        service = self._service(ctx.segments[1])
        # The real handler checks in first and commits in a `finally`, so the
        # check-in sticks even when the rest of the request fails.
        now = self.clock()
        service.last_checked_in = now
        body = ctx.json_or_none()
        if body is None:
            stamp = now.astimezone(UTC).replace(tzinfo=None).isoformat()
            return json_response(200, {"meta": f"Service checked in at {stamp}"})
        if not isinstance(body, dict):
            return error_response([deserialization_error("_schema", ["Invalid input type."])])
        changes, problems = service_changes(body)
        if problems:
            return error_response(problems)
        for key in ("is_available", "description", "name"):
            if key in changes:
                setattr(service, key, changes[key])
        if "timeout" in changes:
            if changes["timeout"] == 0:
                return html_page(500)  # ValueError in the model's setter, after the above
            service.timeout = changes["timeout"]
        return enveloped(
            self._service_detail(service),
            META_SERVICE,
            ctx.url(f"/services/{service.id}"),
        )

    def _service_jobs_get(self, ctx: Context) -> AppResponse:
        service = self._service(ctx.segments[1])
        meta = json.dumps(
            {
                "new_job_schema": {
                    "type": "object",
                    "properties": {"parameters": service.registration_schema},
                },
                "data_schema": {"type": "array", "items": JOB_SCHEMA},
            }
        )
        return enveloped(
            [job.view() for job in service.jobs],
            meta,
            ctx.url(f"/services/{service.id}/jobs"),
        )

    def _service_jobs_post(self, ctx: Context) -> AppResponse:
        service = self._service(ctx.segments[1])
        body = ctx.json_object()
        if "parameters" not in body:
            return error_response([deserialization_error("parameters", [MISSING])])
        parameters = body["parameters"]
        if not isinstance(parameters, dict):
            return error_response(
                [deserialization_error("parameters", ["Not a valid mapping type."])]
            )
        validator = self._validator(service, "registration")
        problems = [
            error_entry(400, "JSONSchema Validation Error", schema_error_detail(error))
            for error in validator.iter_errors(parameters)
        ]
        if problems:
            return error_response(problems)
        jid = str(uuid.uuid4())
        self._seq += 1
        # Deliberate difference: the real server stamps every job with its own start
        # time (a default-argument bug); this one records the submission time.
        stamp = self.clock().astimezone(UTC).isoformat()
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
        return json_response(
            201,
            {"data": job.view(), "meta": f"new job ID is {jid}"},
            (("Location", ctx.url(f"/jobs/{jid}")),),
        )

    def _next_job_get(self, ctx: Context) -> AppResponse:
        service = self._service(ctx.segments[1])
        waiting = self._waiting(service, 1)
        if not waiting:
            return AppResponse(204, EMPTY_TYPE)
        return enveloped(waiting[0].view(), META_JOB, ctx.url(f"/services/{service.id}/jobs/next"))

    def _queue_get(self, ctx: Context) -> AppResponse:
        service = self._service(ctx.segments[1])
        waiting = self._waiting(service, 10)
        if not waiting:
            return AppResponse(204, EMPTY_TYPE)
        return enveloped(
            [job.view() for job in waiting],
            META_JOB_LIST,
            ctx.url(f"/services/{service.id}/queue"),
        )

    def _jobs_get(self, ctx: Context) -> AppResponse:
        return enveloped(
            [job.summary() for job in self.jobs.values()],
            META_JOB_LIST,
            ctx.url("/jobs"),
        )

    def _job_get(self, ctx: Context) -> AppResponse:
        job = self._job(ctx.segments[1])
        meta = json.dumps({"job_info_schema": JOB_SCHEMA, "patch_request_schema": JOB_SCHEMA})
        return enveloped(job.view(), meta, ctx.url(f"/jobs/{job.id}"))

    def _job_patch(self, ctx: Context) -> AppResponse:
        job = self._job(ctx.segments[1])
        body = ctx.json_object()
        problems = []
        status = body.get("status")
        if status is not None:
            # A non-string status is an unhandled AttributeError: 500 HTML.
            status = status.upper()
            if status not in STATUSES:
                problems.append(
                    deserialization_error("status", [f"Invalid enum member {body['status']}"])
                )
        results = body.get("results")
        if results is not None and not isinstance(results, dict):
            problems.append(deserialization_error("results", ["Not a valid mapping type."]))
        if problems:
            return error_response(problems)
        if results is not None:
            validator = self._validator(self.services[job.service_id], "result")
            schema_problems = [
                error_entry(400, "JSONSchema Validation Error", schema_error_detail(error))
                for error in validator.iter_errors(results)
            ]
            if schema_problems:
                return error_response(schema_problems)  # nothing applied, status included
            job.results = results
        if status is not None:
            self._set_status(job, status)
        return json_response(200, job.view())

    def _validator_get(self, ctx: Context) -> AppResponse:
        meta = json.dumps({"validator_schema": {"type": "object"}})
        return enveloped({}, meta, ctx.url("/validator"))

    def _validator_post(self, ctx: Context) -> AppResponse:
        body = ctx.json_object()
        problems = []
        for key in ("object", "schema"):
            if key not in body:
                problems.append(deserialization_error(key, [MISSING]))
            elif not isinstance(body[key], dict):
                problems.append(deserialization_error(key, ["Not a valid mapping type."]))
        if problems:
            return error_response(problems)
        # As the real server (jsonschema 2.6): Draft4Validator(schema).iter_errors,
        # no check_schema.  So Draft-6 keywords ("const", a numeric
        # "exclusiveMinimum") are ignored, "exclusiveMinimum" is only read, for its
        # truth, by "minimum" (0 is false, 5 true), and a schema that is not valid
        # Draft 4 fails (500) only where an instance reaches the broken part, e.g.
        # {"type": "float"}.  A $ref outside the schema is never fetched: it is
        # unresolvable, a 500 page, as on the real server when its fetch fails.
        errors = [
            error_entry(400, "JSONSchema Validation Error", schema_error_detail(error))
            for error in draft4_validator(body["schema"]).iter_errors(body["object"])
        ]
        if errors:
            return error_response(errors)
        return json_response(
            200,
            {
                "data": {"status": "Validation was successful"},
                "links": {"self": ctx.url("/validator")},
            },
        )
