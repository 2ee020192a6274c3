"""A typed client for every TopChef endpoint a service implementer needs.

The client is a thin layer over one :class:`requests.Session`: it builds the request
the real server expects (a heartbeat is a PATCH with no body and no Content-Type; a
job update needs ``Content-Type: application/json``), sends it with a connect and a
read timeout, checks the status and the Content-Type before decoding, and turns the
answer into a record or a specific :class:`~topchef_worker.exceptions.TopChefError`.

It keeps no state besides the session, so one client may be shared by many threads:
the session's connection pool is thread-safe, and TopChef sets no cookies.  It does
not retry; retrying is a policy decision made by its callers.

This module holds the endpoints and the sending.  The checks on arguments are in
:mod:`topchef_worker._arguments`, and what becomes of an answer (decoding, the
size limit, the mapping of failures to exceptions) in :mod:`topchef_worker._responses`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import requests

from . import _parse
from ._arguments import (
    TimeoutLike,
    check_base_url,
    check_bool,
    check_job_id,
    check_job_status,
    check_object,
    check_schema,
    check_service_id,
    check_string,
    json_body,
    redact,
    timeout_pair,
    whole_seconds,
)
from ._ids import id_from_url
from ._models import Job, JobStatus, JobSummary, Service, ServiceSummary
from ._responses import (
    decode_json,
    envelope,
    parse_list,
    parsed,
    read_body,
    response_error,
    transport_error,
    unexpected_body,
)
from ._retry import RetryPolicy
from ._session import make_session
from .exceptions import ResponseError, TransportError, UnexpectedResponseError, is_transient

__all__ = ["DEFAULT_RETRY", "DEFAULT_TIMEOUT", "TimeoutLike", "TopChefClient"]

#: The client's retry policy unless told otherwise: a few quick retries within 30 s.
DEFAULT_RETRY = RetryPolicy()

#: Connect and read timeouts in seconds.  TopChef serves one request at a time, so a
#: read may wait behind other clients' requests; the connect timeout stays short so a
#: dead server is noticed quickly.
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 30.0)

_NO_BODY = object()
_JSON_HEADERS = {"Content-Type": "application/json"}


class TopChefClient:
    """Talk to one TopChef server.

    Args:
        base_url: The server's root, e.g. ``http://topchef.lab:5000``, with or without
            a trailing slash.
        session: The :class:`requests.Session` to send requests with; by default the
            client makes one, which reads proxy and CA settings from the environment
            once rather than on every request, and closes it in :meth:`close`.  Pass
            your own for other TLS settings, adapters or authentication; the client
            never changes it.  Its headers, auth, cookies and hooks are read on every
            request, so a rotated token is sent from the next request on; its
            proxies, ``verify`` and ``cert`` are read once, here.
        timeout: Seconds (or a timedelta) for both connecting and reading, or a
            ``(connect, read)`` pair.  Every request has both.
        retry: How transient failures are retried; None to fail at once.  GET and
            PATCH requests are retried on any transient error; POST requests only when
            they cannot have been applied (the connection was refused, or the server
            answered 429 or 503), so a job is never submitted twice.
        max_response_bytes: Bodies larger than this are refused with
            :class:`~topchef_worker.exceptions.ResponseTooLargeError`.
        sleep: How to wait between retries.
    """

    def __init__(
        self,
        base_url: str,
        *,
        session: requests.Session | None = None,
        timeout: TimeoutLike = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        max_response_bytes: int = 64 * 1024 * 1024,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not isinstance(base_url, str):
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        self.base_url = check_base_url(base_url).rstrip("/")
        self._shown_url = redact(self.base_url)  # for messages: no password in them
        self.timeout = timeout_pair(timeout)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy or None, got {retry!r}")
        self.retry = retry
        if isinstance(max_response_bytes, bool) or not isinstance(max_response_bytes, int):
            raise TypeError(f"max_response_bytes must be an int, got {max_response_bytes!r}")
        if max_response_bytes < 1:
            raise ValueError(f"max_response_bytes must be positive, got {max_response_bytes!r}")
        self.max_response_bytes = max_response_bytes
        self._sleep = sleep
        self._owns_session = session is None
        self.session = make_session(self.base_url) if session is None else session
        # What Session.request would read from the environment on every call
        # (proxies, CA bundle), read once.
        self._send_settings = self.session.merge_environment_settings(
            self.base_url, {}, None, None, None
        )

    def __repr__(self) -> str:
        return f"TopChefClient({self._shown_url!r})"

    def close(self) -> None:
        """Close the session if the client made it; a session passed in stays open."""
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> TopChefClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- services ---------------------------------------------------------------------

    def api_info(self) -> dict[str, Any]:
        """Return the server's metadata (``GET /``); a cheap way to check it answers."""
        data = self._data("GET", "/")
        if not isinstance(data, dict):
            raise unexpected_body(
                "GET", "/", 200, _parse.ShapeError("data is not an object")
            ) from None
        return data

    def services(self) -> list[ServiceSummary]:
        """List every service on the server (id, name and description)."""
        path = "/services"
        data = self._data("GET", path)
        return parsed("GET", path, lambda: parse_list(data, _parse.service_summary, "data"))

    def service(self, service_id: str) -> Service:
        """Return a service's full detail.  This is not a heartbeat."""
        sid = check_service_id(service_id)
        path = f"/services/{sid}"
        data = self._data("GET", path, service_id=sid)
        return parsed("GET", path, lambda: _parse.service(data, "data"))

    def create_service(
        self,
        *,
        name: str,
        description: str,
        job_registration_schema: Mapping[str, Any],
        job_result_schema: Mapping[str, Any],
        timeout: float | timedelta | None = None,
    ) -> Service:
        """Create a service and return its detail.

        TopChef reports the new id only in the ``Location`` header and ignores a
        ``timeout`` in the creation body, so a timeout is applied with a PATCH
        afterwards.  The server does not check the schemas; a schema that is not
        valid JSON Schema makes every later job submission fail with a 500, so check
        them first where that matters (``jsonschema.Draft4Validator.check_schema``).
        """
        check_string(name, "name")
        check_string(description, "description")
        check_schema(job_registration_schema, "job_registration_schema")
        check_schema(job_result_schema, "job_result_schema")
        seconds = None if timeout is None else whole_seconds(timeout)
        body = {
            "name": name,
            "description": description,
            "job_registration_schema": dict(job_registration_schema),
            "job_result_schema": dict(job_result_schema),
        }
        response = self._send("POST", "/services", body=body, expect=(200, 201))
        location = response.headers.get("Location", "")
        sid = id_from_url(location)
        if sid is None:
            raise UnexpectedResponseError(
                f"POST /services answered {response.status_code} without a service id in "
                f"its Location header ({location!r:.100})",
                method="POST",
                path="/services",
                status_code=response.status_code,
            )
        if seconds is not None:
            return self.update_service(sid, timeout=seconds)
        return self.service(sid)

    def check_in(self, service_id: str) -> None:
        """Send a heartbeat: a PATCH with no body and no Content-Type.

        Only a PATCH on the service counts as a heartbeat; polling does not.  The
        server keeps ``has_timed_out`` false while heartbeats arrive more often than
        the service's ``timeout``.
        """
        sid = check_service_id(service_id)
        path = f"/services/{sid}"
        body = decode_json("PATCH", path, self._send("PATCH", path, service_id=sid))
        if not isinstance(body, dict) or not isinstance(body.get("meta"), str):
            raise unexpected_body(
                "PATCH",
                path,
                200,
                _parse.ShapeError("check-in answer has no 'meta' string"),
            ) from None

    def update_service(
        self,
        service_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        is_available: bool | None = None,
        timeout: float | timedelta | None = None,
    ) -> Service:
        """Change a service's fields (also a heartbeat) and return its new detail.

        The schemas cannot be changed after creation.  With no arguments this is a
        heartbeat that returns the detail.
        """
        sid = check_service_id(service_id)
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = check_string(name, "name")
        if description is not None:
            body["description"] = check_string(description, "description")
        if is_available is not None:
            body["is_available"] = check_bool(is_available, "is_available")
        if timeout is not None:
            # Sent last on purpose: the server applies fields in this order.
            body["timeout"] = whole_seconds(timeout)
        path = f"/services/{sid}"
        data = self._data("PATCH", path, body=body, service_id=sid)
        return parsed("PATCH", path, lambda: _parse.service(data, "data"))

    # -- jobs -------------------------------------------------------------------------

    def submit_job(self, service_id: str, parameters: Mapping[str, Any]) -> Job:
        """Submit a job; the server checks *parameters* against the service's schema."""
        sid = check_service_id(service_id)
        check_object(parameters, "job parameters")
        path = f"/services/{sid}/jobs"
        response = self._send(
            "POST",
            path,
            body={"parameters": dict(parameters)},
            expect=(200, 201),
            service_id=sid,
        )
        data = envelope("POST", path, response)
        return parsed("POST", path, lambda: _parse.job(data, sid, "data"))

    def next_job(self, service_id: str) -> Job | None:
        """Return the oldest REGISTERED job of a service, or None when there is none.

        This does not claim the job: two calls return the same job until someone
        PATCHes its status.  Claim it with ``update_job(job.id, status="WORKING")``.
        """
        sid = check_service_id(service_id)
        path = f"/services/{sid}/jobs/next"
        response = self._send("GET", path, expect=(200, 204), service_id=sid)
        if response.status_code == 204:
            return None  # an empty body, never decoded
        data = envelope("GET", path, response)
        return parsed("GET", path, lambda: _parse.job(data, sid, "data"))

    def queue(self, service_id: str) -> list[Job]:
        """Return up to ten REGISTERED jobs of a service, oldest first."""
        sid = check_service_id(service_id)
        path = f"/services/{sid}/queue"
        response = self._send("GET", path, expect=(200, 204), service_id=sid)
        if response.status_code == 204:
            return []
        data = envelope("GET", path, response)
        return parsed("GET", path, lambda: _parse.job_list(data, sid, "data"))

    def jobs(self, service_id: str) -> list[Job]:
        """Return every job of a service, in every status."""
        sid = check_service_id(service_id)
        path = f"/services/{sid}/jobs"
        data = self._data("GET", path, service_id=sid)
        return parsed("GET", path, lambda: _parse.job_list(data, sid, "data"))

    def all_jobs(self) -> list[JobSummary]:
        """Return a summary of every job on the server."""
        path = "/jobs"
        data = self._data("GET", path)
        return parsed("GET", path, lambda: parse_list(data, _parse.job_summary, "data"))

    def job(self, job_id: str) -> Job:
        """Return one job by id (its ``service_id`` is None: the server does not say)."""
        jid = check_job_id(job_id)
        path = f"/jobs/{jid}"
        data = self._data("GET", path, job_id=jid)
        return parsed("GET", path, lambda: _parse.job(data, None, "data"))

    def update_job(
        self,
        job_id: str,
        *,
        status: JobStatus | str | None = None,
        results: Mapping[str, Any] | None = None,
    ) -> Job:
        """Set a job's status and/or results and return the job as stored.

        The server checks *results* against the service's result schema; if they fail,
        it raises :class:`RejectedError` with one entry per violation and applies
        nothing, not even the status sent alongside.  Any status transition is
        accepted, and the PATCH is unconditional: it cannot tell whether another
        worker claimed the job first.
        """
        jid = check_job_id(job_id)
        body: dict[str, Any] = {}
        if status is not None:
            body["status"] = check_job_status(status).value
        if results is not None:
            body["results"] = dict(check_object(results, "job results"))
        path = f"/jobs/{jid}"
        response = self._send("PATCH", path, body=body, job_id=jid)
        # The one endpoint that answers with the bare job, without an envelope.
        bare = decode_json("PATCH", path, response)
        return parsed("PATCH", path, lambda: _parse.job(bare, None, "job"))

    def validate(self, schema: Mapping[str, Any], instance: Mapping[str, Any]) -> None:
        """Check *instance* against a Draft-4 *schema* on the server.

        Raises :class:`RejectedError` with one entry per violation.  The server only
        accepts objects for both.
        """
        body = {"schema": dict(schema), "object": dict(instance)}
        self._send("POST", "/validator", body=body)

    # -- plumbing ---------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        body: Any = _NO_BODY,
        expect: tuple[int, ...] = (200,),
        service_id: str | None = None,
        job_id: str | None = None,
    ) -> requests.Response:
        if body is _NO_BODY:
            data, headers = None, None
        else:
            data, headers = json_body(method, path, body), _JSON_HEADERS
        attempt = functools.partial(
            self._send_once, method, path, data, headers, expect, service_id, job_id
        )
        if self.retry is None:
            return attempt()
        # GET and PATCH are idempotent here (a PATCH sets, it does not add), so any
        # transient failure may be retried; a POST only when it cannot have been
        # applied (never sent, or refused with 429/503), lest a job be submitted twice.
        return self.retry.call(
            attempt,
            sleep=self._sleep,
            retry_if=is_transient if method in ("GET", "PATCH") else _not_applied,
        )

    def _send_once(
        self,
        method: str,
        path: str,
        data: bytes | None,
        headers: dict[str, str] | None,
        expect: tuple[int, ...],
        service_id: str | None,
        job_id: str | None,
    ) -> requests.Response:
        try:
            response = self.session.send(
                self._prepare(method, path, data, headers),
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
                proxies=self._send_settings["proxies"],
                verify=self._send_settings["verify"],
                cert=self._send_settings["cert"],
            )
            read_body(method, path, response, self.max_response_bytes)
        except requests.RequestException as error:
            raise transport_error(
                method, path, error, base_url=self._shown_url, timeout=self.timeout
            ) from error
        if response.status_code not in expect:
            raise response_error(
                method,
                path,
                response,
                base_url=self._shown_url,
                service_id=service_id,
                job_id=job_id,
            )
        return response

    def _prepare(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str] | None
    ) -> requests.PreparedRequest:
        """Build a request from the session as it is now, as ``Session.request`` does.

        The session's headers, auth, cookies and hooks are merged anew for every
        request (and every retry), so a token rotated on an injected session is sent
        from the next request on.  That costs more than copying a cached request, but
        little next to a request to the real server.  Proxies and the CA bundle were
        resolved once, in ``__init__``; a session that trusts the environment still
        has requests look up ``.netrc`` here when it has no auth, as it would in
        ``Session.request``.
        """
        return self.session.prepare_request(
            requests.Request(method, self.base_url + path, headers=headers, data=data)
        )

    def _data(
        self,
        method: str,
        path: str,
        *,
        body: Any = _NO_BODY,
        service_id: str | None = None,
        job_id: str | None = None,
    ) -> Any:
        response = self._send(method, path, body=body, service_id=service_id, job_id=job_id)
        return envelope(method, path, response)


def _not_applied(error: BaseException) -> bool:
    """Whether a failed POST certainly did nothing, so that repeating it is safe."""
    if isinstance(error, TransportError):
        return not error.request_sent
    return isinstance(error, ResponseError) and error.status_code in (429, 503)
