"""A typed client for every TopChef endpoint a service implementer needs.

The client is a thin layer over one :class:`requests.Session`: it builds the request
the real server expects (a heartbeat is a PATCH with no body and no Content-Type; a
job update needs ``Content-Type: application/json``), sends it with a connect and a
read timeout, checks the status and the Content-Type before decoding, and turns the
answer into a record or a specific :class:`~topchef_worker.exceptions.TopChefError`.

It keeps no state besides the session, so one client may be shared by many threads:
the session's connection pool is thread-safe, and TopChef sets no cookies.  It does
not retry; retrying is a policy decision made by its callers.
"""

from __future__ import annotations

import email.utils
import functools
import json
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, NoReturn, TypeVar, Union

import requests
import urllib3.exceptions

from . import _parse
from ._durations import to_seconds
from ._ids import id_from_url, parse_id
from ._models import ErrorEntry, Job, JobStatus, JobSummary, Service, ServiceSummary
from ._retry import RetryPolicy
from ._session import make_session
from .exceptions import (
    ClientError,
    InvalidRequestError,
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
    is_transient,
)

__all__ = ["DEFAULT_RETRY", "DEFAULT_TIMEOUT", "TimeoutLike", "TopChefClient"]

TimeoutLike = Union[float, timedelta, "tuple[float, float]"]

#: The client's retry policy unless told otherwise: a few quick retries within 30 s.
DEFAULT_RETRY = RetryPolicy()

#: Connect and read timeouts in seconds.  TopChef serves one request at a time, so a
#: read may wait behind other clients' requests; the connect timeout stays short so a
#: dead server is noticed quickly.
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 30.0)

_T = TypeVar("_T")
_NO_BODY = object()
_JSON_HEADERS = {"Content-Type": "application/json"}


def _timeout_pair(timeout: TimeoutLike) -> tuple[float, float]:
    if isinstance(timeout, tuple):
        if len(timeout) != 2:
            raise ValueError(f"timeout must be (connect, read), got {timeout!r}")
        return (
            to_seconds(timeout[0], "connect timeout"),
            to_seconds(timeout[1], "read timeout"),
        )
    both = to_seconds(timeout, "timeout")
    return (both, both)


def _whole_seconds(value: float | timedelta) -> int:
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
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


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
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = _timeout_pair(timeout)
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
        return f"TopChefClient({self.base_url!r})"

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
            self._shape("GET", "/", 200, _parse.ShapeError("data is not an object"))
        return data

    def services(self) -> list[ServiceSummary]:
        """List every service on the server (id, name and description)."""
        path = "/services"
        data = self._data("GET", path)
        return self._parsed("GET", path, lambda: _list(data, _parse.service_summary, "data"))

    def service(self, service_id: str) -> Service:
        """Return a service's full detail.  This is not a heartbeat."""
        sid = _service_id(service_id)
        path = f"/services/{sid}"
        data = self._data("GET", path, service_id=sid)
        return self._parsed("GET", path, lambda: _parse.service(data, "data"))

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
        for label, value in (("name", name), ("description", description)):
            if not isinstance(value, str):
                raise InvalidRequestError(f"{label} must be a string, got {value!r:.60}")
        for label, schema in (
            ("job_registration_schema", job_registration_schema),
            ("job_result_schema", job_result_schema),
        ):
            if not isinstance(schema, Mapping):
                raise InvalidRequestError(f"{label} must be a JSON object, got {schema!r:.60}")
        seconds = None if timeout is None else _whole_seconds(timeout)
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
        sid = _service_id(service_id)
        path = f"/services/{sid}"
        body = self._json("PATCH", path, self._send("PATCH", path, service_id=sid))
        if not isinstance(body, dict) or not isinstance(body.get("meta"), str):
            self._shape(
                "PATCH",
                path,
                200,
                _parse.ShapeError("check-in answer has no 'meta' string"),
            )

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
        sid = _service_id(service_id)
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = _string(name, "name")
        if description is not None:
            body["description"] = _string(description, "description")
        if is_available is not None:
            if not isinstance(is_available, bool):
                raise InvalidRequestError(f"is_available must be a bool, got {is_available!r}")
            body["is_available"] = is_available
        if timeout is not None:
            # Sent last on purpose: the server applies fields in this order.
            body["timeout"] = _whole_seconds(timeout)
        path = f"/services/{sid}"
        data = self._data("PATCH", path, body=body, service_id=sid)
        return self._parsed("PATCH", path, lambda: _parse.service(data, "data"))

    # -- jobs -------------------------------------------------------------------------

    def submit_job(self, service_id: str, parameters: Mapping[str, Any]) -> Job:
        """Submit a job; the server checks *parameters* against the service's schema."""
        sid = _service_id(service_id)
        if not isinstance(parameters, Mapping):
            raise InvalidRequestError(
                f"job parameters must be a JSON object (a dict), got {type(parameters).__name__}"
            )
        path = f"/services/{sid}/jobs"
        response = self._send(
            "POST",
            path,
            body={"parameters": dict(parameters)},
            expect=(200, 201),
            service_id=sid,
        )
        data = self._envelope("POST", path, response)
        return self._parsed("POST", path, lambda: _parse.job(data, sid, "data"))

    def next_job(self, service_id: str) -> Job | None:
        """Return the oldest REGISTERED job of a service, or None when there is none.

        This does not claim the job: two calls return the same job until someone
        PATCHes its status.  Claim it with ``update_job(job.id, status="WORKING")``.
        """
        sid = _service_id(service_id)
        path = f"/services/{sid}/jobs/next"
        response = self._send("GET", path, expect=(200, 204), service_id=sid)
        if response.status_code == 204:
            return None  # an empty body, never decoded
        data = self._envelope("GET", path, response)
        return self._parsed("GET", path, lambda: _parse.job(data, sid, "data"))

    def queue(self, service_id: str) -> list[Job]:
        """Return up to ten REGISTERED jobs of a service, oldest first."""
        sid = _service_id(service_id)
        path = f"/services/{sid}/queue"
        response = self._send("GET", path, expect=(200, 204), service_id=sid)
        if response.status_code == 204:
            return []
        data = self._envelope("GET", path, response)
        return self._parsed("GET", path, lambda: _parse.job_list(data, sid, "data"))

    def jobs(self, service_id: str) -> list[Job]:
        """Return every job of a service, in every status."""
        sid = _service_id(service_id)
        path = f"/services/{sid}/jobs"
        data = self._data("GET", path, service_id=sid)
        return self._parsed("GET", path, lambda: _parse.job_list(data, sid, "data"))

    def all_jobs(self) -> list[JobSummary]:
        """Return a summary of every job on the server."""
        path = "/jobs"
        data = self._data("GET", path)
        return self._parsed("GET", path, lambda: _list(data, _parse.job_summary, "data"))

    def job(self, job_id: str) -> Job:
        """Return one job by id (its ``service_id`` is None: the server does not say)."""
        jid = _job_id(job_id)
        path = f"/jobs/{jid}"
        data = self._data("GET", path, job_id=jid)
        return self._parsed("GET", path, lambda: _parse.job(data, None, "data"))

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
        jid = _job_id(job_id)
        body: dict[str, Any] = {}
        if status is not None:
            body["status"] = _job_status(status).value
        if results is not None:
            if not isinstance(results, Mapping):
                raise InvalidRequestError(
                    f"job results must be a JSON object (a dict), got {type(results).__name__}"
                )
            body["results"] = dict(results)
        path = f"/jobs/{jid}"
        response = self._send("PATCH", path, body=body, job_id=jid)
        # The one endpoint that answers with the bare job, without an envelope.
        bare = self._json("PATCH", path, response)
        return self._parsed("PATCH", path, lambda: _parse.job(bare, None, "job"))

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
            try:
                data = json.dumps(body, allow_nan=False, separators=(",", ":")).encode()
            except (TypeError, ValueError) as error:
                raise InvalidRequestError(
                    f"{method} {path}: the request body is not JSON-serialisable ({error})"
                ) from error
            headers = _JSON_HEADERS
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
            self._read(method, path, response)
        except requests.Timeout as error:
            raise RequestTimeoutError(
                f"{method} {path}: no answer from {self.base_url} within "
                f"{self.timeout[0]:g} s (connect) / {self.timeout[1]:g} s (read): {error}",
                method=method,
                path=path,
                request_sent=not isinstance(error, requests.ConnectTimeout),
            ) from error
        except requests.RequestException as error:
            raise TransportError(
                f"{method} {path}: could not reach {self.base_url}: {_reason(error)}",
                method=method,
                path=path,
                request_sent=not _refused(error),
            ) from error
        if response.status_code not in expect:
            self._fail(method, path, response, service_id=service_id, job_id=job_id)
        return response

    def _read(self, method: str, path: str, response: requests.Response) -> None:
        """Read the body, refusing one larger than ``max_response_bytes``."""
        limit = self.max_response_bytes
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

    def _fail(
        self,
        method: str,
        path: str,
        response: requests.Response,
        *,
        service_id: str | None,
        job_id: str | None,
    ) -> NoReturn:
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
            raise JobNotFoundError(
                f"job {job_id} not found on {self.base_url} ({message})",
                job_id=job_id,
                **context,
            )
        if status == 404 and service_id is not None:
            raise ServiceNotFoundError(
                f"service {service_id} not found on {self.base_url} ({message})",
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
        raise error_class(message, **context)

    def _json(self, method: str, path: str, response: requests.Response) -> Any:
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

    def _envelope(self, method: str, path: str, response: requests.Response) -> Any:
        body = self._json(method, path, response)
        if not isinstance(body, dict) or "data" not in body:
            self._shape(
                method,
                path,
                response.status_code,
                _parse.ShapeError("the answer has no 'data' envelope"),
            )
        return body["data"]

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
        return self._envelope(method, path, response)

    def _parsed(self, method: str, path: str, parse: Callable[[], _T]) -> _T:
        try:
            return parse()
        except _parse.ShapeError as error:
            self._shape(method, path, 200, error)

    def _shape(self, method: str, path: str, status: int, error: Exception) -> NoReturn:
        raise UnexpectedResponseError(
            f"{method} {path} answered {status} with an unexpected body: {error}",
            method=method,
            path=path,
            status_code=status,
        ) from None


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


def _not_applied(error: BaseException) -> bool:
    """Whether a failed POST certainly did nothing, so that repeating it is safe."""
    if isinstance(error, TransportError):
        return not error.request_sent
    return isinstance(error, ResponseError) and error.status_code in (429, 503)


def _list(data: Any, parse: Callable[[Any, str], _T], where: str) -> list[_T]:
    if not isinstance(data, list):
        raise _parse.ShapeError(f"{where} is not an array")
    return [parse(item, f"{where}[{i}]") for i, item in enumerate(data)]


def _string(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequestError(f"{name} must be a string, got {value!r:.60}")
    return value


def _service_id(value: object) -> str:
    canonical = parse_id(value)
    if canonical is None:
        raise InvalidRequestError(f"{value!r:.60} is not a valid service id (a UUID)")
    return canonical


def _job_id(value: object) -> str:
    canonical = parse_id(value)
    if canonical is None:
        raise InvalidRequestError(f"{value!r:.60} is not a valid job id (a UUID)")
    return canonical


def _job_status(value: object) -> JobStatus:
    if isinstance(value, JobStatus):
        return value
    if isinstance(value, str):
        try:
            return JobStatus(value.upper())
        except ValueError:
            pass
    choices = ", ".join(status.value for status in JobStatus)
    raise InvalidRequestError(f"{value!r:.40} is not a job status (one of {choices})")
