"""TopChefClient against TopChefServer over real HTTP on loopback."""

from __future__ import annotations

import base64
import re
import socket
import uuid
from datetime import timedelta

import pytest
import requests

from conftest import ADDER_PARAMETERS, ADDER_RESULTS
from topchef_worker import Job, JobStatus, Service, TopChefClient, is_transient
from topchef_worker.exceptions import (
    ClientError,
    ConfigurationError,
    InvalidRequestError,
    JobNotFoundError,
    NotFoundError,
    RejectedError,
    RequestTimeoutError,
    ResponseTooLargeError,
    ServerError,
    ServiceNotFoundError,
    TransportError,
    UnexpectedResponseError,
)
from topchef_worker.testing import ManualClock, TopChefServer

UNKNOWN = "00000000-0000-0000-0000-000000000000"


# -- construction ---------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/", "//"])
def test_base_url_with_or_without_trailing_slash(server: TopChefServer, suffix: str) -> None:
    """The base URL may end in slashes; requests still hit the right routes."""
    with TopChefClient(server.url + suffix) as client:
        assert [] == client.services()
    assert ["/services"] == [r.path for r in server.requests]


def test_every_request_has_both_timeouts(server: TopChefServer) -> None:
    """Connect and read timeouts are passed on every request."""
    seen = []

    class Recording(requests.Session):
        def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:  # type: ignore[override]
            seen.append(kwargs.get("timeout"))
            return super().send(request, **kwargs)  # type: ignore[arg-type]

    with Recording() as session:
        client = TopChefClient(server.url, session=session, timeout=(1.5, 7))
        client.services()
        client.api_info()
    assert [(1.5, 7.0), (1.5, 7.0)] == seen


@pytest.mark.parametrize("timeout", [0, -1, (1, 0), (1, 2, 3), "5", True])
def test_nonsense_timeouts_are_refused(timeout: object) -> None:
    """A zero, negative or malformed timeout fails at construction."""
    with pytest.raises((ValueError, TypeError), match="timeout"):
        TopChefClient("http://127.0.0.1:1", timeout=timeout)  # type: ignore[arg-type]


def test_timedelta_timeout() -> None:
    """A timedelta is accepted and stored as seconds for both phases."""
    client = TopChefClient("http://127.0.0.1:1", timeout=timedelta(seconds=2))
    assert (2.0, 2.0) == client.timeout


@pytest.mark.parametrize("url", ["topchef.lab:5000", "ftp://x", ""])
def test_base_url_must_be_http(url: str) -> None:
    """A URL without an http(s) scheme is refused with the URL in the message."""
    with pytest.raises(ValueError, match="http"):
        TopChefClient(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://[::1", "is malformed: Invalid IPv6 URL"),
        (
            "http://127.0.0.1:5000/services",
            "names the /services endpoint, not the server's root: use 'http://127.0.0.1:5000'",
        ),
        ("http://lab/topchef/jobs/", "use 'http://lab/topchef'"),
        ("http://lab:99999", "Port out of range"),
        ("http://lab/?x=1", "must not have a query"),
    ],
)
def test_a_base_url_that_cannot_be_the_api_root_is_refused(url: str, message: str) -> None:
    """Refused before anything is sent: ``/services`` as the root would send
    ``/services/services`` and read the 404 as a missing service."""
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        TopChefClient(url)


def test_a_base_url_with_a_path_prefix_is_a_root_behind_a_proxy() -> None:
    assert "http://lab/topchef" == TopChefClient("http://lab/topchef/").base_url


def test_injected_session_is_used_and_left_open(server: TopChefServer) -> None:
    """The client sends through the given session, with its headers, and does not
    close it."""
    session = requests.Session()
    session.headers["X-Lab"] = "fid-1"
    with TopChefClient(server.url, session=session) as client:
        client.services()
    assert "fid-1" == server.requests[-1].headers["x-lab"]
    assert session.get(server.url + "/services", timeout=5).ok
    session.close()


# -- services -------------------------------------------------------------------------


def test_create_service_returns_its_detail(client: TopChefClient, adder: Service) -> None:
    """A new service is found by the id from its Location header, with every field."""
    assert "Adder" == adder.name
    assert "adds a and b" == adder.description
    assert ADDER_PARAMETERS == adder.job_registration_schema
    assert ADDER_RESULTS == adder.job_result_schema
    assert 30 == adder.timeout
    assert adder.is_service_available is False
    assert adder.has_timed_out is False
    assert () == adder.jobs
    assert adder == client.service(adder.id)


def test_create_service_applies_timeout_with_a_patch(
    client: TopChefClient, server: TopChefServer
) -> None:
    """The timeout is not part of the POST; it is set by a PATCH afterwards."""
    service = client.create_service(
        name="n",
        description="d",
        job_registration_schema={},
        job_result_schema={},
        timeout=timedelta(seconds=7),
    )
    assert 7 == service.timeout
    assert ["POST", "PATCH"] == [r.method for r in server.requests]
    assert b'{"timeout":7}' == server.requests[-1].body


@pytest.mark.parametrize("timeout", [0, 0.5, 2.5, -3, "7"])
def test_create_service_refuses_timeouts_the_server_cannot_store(
    client: TopChefClient, server: TopChefServer, timeout: object
) -> None:
    """Whole seconds >= 1 only; nothing is sent otherwise."""
    with pytest.raises(InvalidRequestError, match="whole"):
        client.create_service(
            name="n",
            description="d",
            job_registration_schema={},
            job_result_schema={},
            timeout=timeout,  # type: ignore[arg-type]
        )
    assert [] == server.requests


def test_create_service_refuses_non_object_schemas(client: TopChefClient) -> None:
    """A schema must be a JSON object, as the server requires."""
    with pytest.raises(InvalidRequestError, match="job_result_schema"):
        client.create_service(
            name="n",
            description="d",
            job_registration_schema={},
            job_result_schema=[],  # type: ignore[arg-type]
        )


def test_create_service_without_location(client: TopChefClient, server: TopChefServer) -> None:
    """A 201 with no usable Location header is an unexpected response, not a crash."""
    server.faults.fail_next(
        status=201, body="{}", content_type="application/json", method="POST", path="/services"
    )
    with pytest.raises(UnexpectedResponseError, match="Location"):
        client.create_service(
            name="n", description="d", job_registration_schema={}, job_result_schema={}
        )


def test_services_lists_summaries(client: TopChefClient, adder: Service) -> None:
    """The list holds id, name and description of every service."""
    other = client.create_service(
        name="Other", description="o", job_registration_schema={}, job_result_schema={}
    )
    assert [(adder.id, "Adder", "adds a and b"), (other.id, "Other", "o")] == [
        (s.id, s.name, s.description) for s in client.services()
    ]


def test_check_in_is_a_bare_patch(
    client: TopChefClient, server: TopChefServer, clock: ManualClock, adder: Service
) -> None:
    """The heartbeat has no body and no Content-Type, and resets has_timed_out."""
    clock.advance(31)
    assert client.service(adder.id).has_timed_out
    client.check_in(adder.id)
    heartbeat = server.requests[-1]
    assert ("PATCH", b"") == (heartbeat.method, heartbeat.body)
    assert "content-type" not in heartbeat.headers
    assert not client.service(adder.id).has_timed_out


def test_update_service(client: TopChefClient, adder: Service) -> None:
    """Fields given are changed; the schemas stay; the answer is the new detail."""
    updated = client.update_service(
        adder.id, name="Adder2", description="new", is_available=True, timeout=3
    )
    assert ("Adder2", "new", True, 3) == (
        updated.name,
        updated.description,
        updated.is_service_available,
        updated.timeout,
    )
    assert updated == client.service(adder.id)


def test_update_service_without_fields_is_a_heartbeat_with_detail(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """No arguments send {} which checks in and returns the detail."""
    assert adder == client.update_service(adder.id)
    assert b"{}" == server.requests[-1].body


@pytest.mark.parametrize(
    "kwargs",
    [{"name": 5}, {"description": 2}, {"is_available": "yes"}, {"timeout": 0}],
)
def test_update_service_refuses_bad_values(
    client: TopChefClient, adder: Service, kwargs: dict[str, object]
) -> None:
    """Values the server would reject (or 500 on) are refused before sending."""
    with pytest.raises(InvalidRequestError):
        client.update_service(adder.id, **kwargs)  # type: ignore[arg-type]


# -- jobs -----------------------------------------------------------------------------


def test_job_lifecycle(client: TopChefClient, adder: Service) -> None:
    """Submit, poll (which does not claim), claim, complete, read back."""
    submitted = client.submit_job(adder.id, {"a": 1, "b": 10})
    assert (JobStatus.REGISTERED, {"a": 1, "b": 10}, None, adder.id) == (
        submitted.status,
        submitted.parameters,
        submitted.results,
        submitted.service_id,
    )
    assert submitted == client.next_job(adder.id)
    assert submitted == client.next_job(adder.id), "GET next must not claim"

    claimed = client.update_job(submitted.id, status=JobStatus.WORKING)
    assert JobStatus.WORKING == claimed.status
    assert claimed.service_id is None
    assert client.next_job(adder.id) is None

    done = client.update_job(submitted.id, status="completed", results={"sum": 11})
    assert (JobStatus.COMPLETED, {"sum": 11}) == (done.status, done.results)
    assert done == client.job(submitted.id)


def test_next_job_is_none_on_204_without_decoding(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """An empty queue answers 204 with an empty text/html body: None, no decoding."""
    assert client.next_job(adder.id) is None
    assert 204 == server.requests[-1].status


def test_queue_and_jobs(client: TopChefClient, adder: Service) -> None:
    """queue lists REGISTERED jobs oldest first (at most 10); jobs lists all."""
    submitted = [client.submit_job(adder.id, {"a": i, "b": 0}) for i in range(12)]
    client.update_job(submitted[0].id, status="WORKING")
    assert [j.id for j in submitted[1:11]] == [j.id for j in client.queue(adder.id)]
    everything = client.jobs(adder.id)
    assert [j.id for j in submitted] == [j.id for j in everything]
    assert JobStatus.WORKING == everything[0].status
    assert {adder.id} == {j.service_id for j in everything}


def test_queue_is_empty_list_on_204(client: TopChefClient, adder: Service) -> None:
    """An empty queue answers 204, which is an empty list."""
    assert [] == client.queue(adder.id)


def test_all_jobs(client: TopChefClient, adder: Service) -> None:
    """Every job on the server is listed with its status."""
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    assert [(job.id, JobStatus.REGISTERED)] == [(j.id, j.status) for j in client.all_jobs()]


def test_service_detail_lists_job_summaries(client: TopChefClient, adder: Service) -> None:
    """The detail's jobs are summaries with id, status and submission date."""
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    (summary,) = client.service(adder.id).jobs
    assert (job.id, job.status, job.date_submitted) == (
        summary.id,
        summary.status,
        summary.date_submitted,
    )


def test_rejected_results_explain_why_and_change_nothing(
    client: TopChefClient, adder: Service
) -> None:
    """A schema violation is a RejectedError carrying the server's entries."""
    job = client.submit_job(adder.id, {"a": 1, "b": 10})
    client.update_job(job.id, status="WORKING")
    with pytest.raises(RejectedError) as caught:
        client.update_job(job.id, status="COMPLETED", results={"sum": "eleven"})
    error = caught.value
    assert 400 == error.status_code
    assert [("JSONSchema Validation Error", "'eleven' is not of type 'number'")] == [
        (e.title, e.detail.rsplit("threw error ", 1)[1]) for e in error.errors
    ]
    assert "'eleven' is not of type 'number'" in str(error)
    assert f"PATCH /jobs/{job.id}" in str(error)
    assert not is_transient(error)
    assert (JobStatus.WORKING, None) == (client.job(job.id).status, client.job(job.id).results)


def test_rejected_parameters(client: TopChefClient, adder: Service) -> None:
    """Parameters failing the registration schema: one entry per violation."""
    with pytest.raises(RejectedError) as caught:
        client.submit_job(adder.id, {"a": "one"})
    assert 2 == len(caught.value.errors)
    assert "'b' is a required property" in str(caught.value)


@pytest.mark.parametrize("parameters", [[1, 2], "a=1", None])
def test_parameters_must_be_an_object(
    client: TopChefClient, adder: Service, parameters: object
) -> None:
    """Non-object parameters are refused before sending."""
    with pytest.raises(InvalidRequestError, match="JSON object"):
        client.submit_job(adder.id, parameters)  # type: ignore[arg-type]


def test_update_job_refuses_unknown_status_and_non_object_results(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """Statuses the server would 400 or 500 on, and list results, never leave the client."""
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    server.clear_requests()
    with pytest.raises(InvalidRequestError, match="not a job status"):
        client.update_job(job.id, status="DONE")
    with pytest.raises(InvalidRequestError, match="not a job status"):
        client.update_job(job.id, status=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="JSON object"):
        client.update_job(job.id, results=[11])  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="JSON-serialisable"):
        client.update_job(job.id, results={"sum": float("nan")})
    with pytest.raises(InvalidRequestError, match="JSON-serialisable"):
        client.update_job(job.id, results={"sum": object()})
    assert [] == server.requests


def test_validate(client: TopChefClient) -> None:
    """The server-side validator passes or raises RejectedError with the reason."""
    schema = {"type": "object", "properties": {"v": {"type": "integer", "maximum": 10}}}
    client.validate(schema, {"v": 10})
    with pytest.raises(RejectedError, match="11 is greater than the maximum of 10"):
        client.validate(schema, {"v": 11})


def test_api_info(client: TopChefClient) -> None:
    """GET / answers the API metadata."""
    assert "0.1dev" == client.api_info()["version"]


# -- errors ---------------------------------------------------------------------------


def test_unknown_service_carries_its_id(client: TopChefClient) -> None:
    """Every service endpoint raises ServiceNotFoundError with the id."""
    calls = [
        lambda: client.service(UNKNOWN),
        lambda: client.check_in(UNKNOWN),
        lambda: client.next_job(UNKNOWN),
        lambda: client.queue(UNKNOWN),
        lambda: client.jobs(UNKNOWN),
        lambda: client.submit_job(UNKNOWN, {}),
        lambda: client.update_service(UNKNOWN, name="x"),
    ]
    for call in calls:
        with pytest.raises(ServiceNotFoundError) as caught:
            call()
        assert UNKNOWN == caught.value.service_id
        assert 404 == caught.value.status_code
        assert "does not exist" in str(caught.value)


def test_unknown_job_carries_its_id(client: TopChefClient) -> None:
    """Job endpoints raise JobNotFoundError with the id."""
    for call in (lambda: client.job(UNKNOWN), lambda: client.update_job(UNKNOWN, status="ERROR")):
        with pytest.raises(JobNotFoundError) as caught:
            call()
        assert UNKNOWN == caught.value.job_id


def test_ids_are_canonicalised_and_malformed_ids_refused(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """Any spelling uuid.UUID accepts works; a malformed id is refused locally."""
    assert adder.id == client.service(adder.id.upper().replace("-", "")).id
    assert f"/services/{adder.id}" == server.requests[-1].path
    with pytest.raises(InvalidRequestError, match="not a valid service id"):
        client.next_job("not-a-uuid")
    with pytest.raises(InvalidRequestError, match="not a valid job id"):
        client.job("42")


def test_server_error_with_html_names_method_path_status_and_body(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """A 500 HTML page becomes a ServerError whose message says where and what."""
    server.faults.fail_next(path="/services/*/jobs/next")
    with pytest.raises(ServerError) as caught:
        client.next_job(adder.id)
    message = str(caught.value)
    assert f"GET /services/{adder.id}/jobs/next" in message
    assert "500" in message
    assert "Internal Server Error" in message
    assert "<" not in caught.value.body_excerpt
    assert () == caught.value.errors
    assert is_transient(caught.value)


def test_real_500_from_an_invalid_stored_schema(client: TopChefClient) -> None:
    """The server accepts an invalid schema, then fails every submission with a 500."""
    broken = client.create_service(
        name="b", description="d", job_registration_schema={"type": 5}, job_result_schema={}
    )
    with pytest.raises(ServerError, match="500"):
        client.submit_job(broken.id, {})


def test_503_with_retry_after(client: TopChefServer, server: TopChefServer, adder: Service) -> None:
    """Retry-After seconds are carried on the error."""
    server.faults.fail_next(status=503, headers=[("Retry-After", "3")])
    with pytest.raises(ServerError) as caught:
        TopChefClient(server.url, retry=None).service(adder.id)
    assert (503, 3.0) == (caught.value.status_code, caught.value.retry_after)


def test_429_is_a_transient_client_error(server: TopChefServer, adder: Service) -> None:
    """Too Many Requests is a ClientError that is worth retrying."""
    server.faults.fail_next(status=429, body="slow down", content_type="text/plain")
    with pytest.raises(ClientError) as caught:
        TopChefClient(server.url, retry=None).service(adder.id)
    assert is_transient(caught.value)
    assert "slow down" in str(caught.value)


def test_unknown_route_404_html(server: TopChefServer, adder: Service) -> None:
    """An HTML 404 on a non-id route is a NotFoundError with the page's text."""
    server.faults.fail_next(
        status=404, body="<h1>Not Found</h1>", content_type="text/html", path="/services"
    )
    with pytest.raises(NotFoundError, match="Not Found") as caught:
        TopChefClient(server.url, retry=None).services()
    assert not isinstance(caught.value, ServiceNotFoundError)


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        ("<html>maintenance</html>", "text/html", "instead of JSON: maintenance"),
        ("{not json", "application/json", "invalid JSON"),
        ('{"meta": "no data"}', "application/json", "no 'data' envelope"),
        ('{"data": {"id": 5}}', "application/json", "data.id is a number"),
        ('{"data": {"status": "DONE"}}', "application/json", "has no 'id'"),
    ],
)
def test_malformed_success_bodies(
    client: TopChefClient,
    server: TopChefServer,
    adder: Service,
    body: str,
    content_type: str,
    message: str,
) -> None:
    """A 200 that is not the documented JSON is an UnexpectedResponseError, never raw."""
    server.faults.fail_next(status=200, body=body, content_type=content_type)
    with pytest.raises(UnexpectedResponseError, match=message) as caught:
        client.next_job(adder.id)
    assert (200, "GET") == (caught.value.status_code, caught.value.method)
    assert not is_transient(caught.value)


def test_malformed_bare_job_and_heartbeat(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """The unwrapped answers are checked too."""
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    server.faults.fail_next(status=200, body="[]", content_type="application/json")
    with pytest.raises(UnexpectedResponseError, match="expected an object"):
        client.update_job(job.id, status="WORKING")
    server.faults.fail_next(status=200, body="{}", content_type="application/json")
    with pytest.raises(UnexpectedResponseError, match="meta"):
        client.check_in(adder.id)


def test_unexpected_status(client: TopChefClient, server: TopChefServer, adder: Service) -> None:
    """A status outside the documented ones is unexpected, with the body's text."""
    server.faults.fail_next(status=302, body="moved", content_type="text/plain")
    with pytest.raises(UnexpectedResponseError, match="302"):
        client.service(adder.id)


def test_connection_refused_is_a_transport_error() -> None:
    """Nothing listening: TransportError naming the method, path and server."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = TopChefClient(f"http://127.0.0.1:{port}", timeout=2, retry=None)
    with pytest.raises(TransportError) as caught:
        client.services()
    assert ("GET", "/services") == (caught.value.method, caught.value.path)
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert is_transient(caught.value)


def test_dropped_connection_is_a_transport_error(server: TopChefServer, adder: Service) -> None:
    """A connection closed without an answer is a TransportError."""
    server.faults.drop_next()
    with pytest.raises(TransportError):
        TopChefClient(server.url, retry=None).service(adder.id)


def test_read_timeout(server: TopChefServer, adder: Service) -> None:
    """A server slower than the read timeout raises RequestTimeoutError."""
    server.faults.add_latency(0.5)
    client = TopChefClient(server.url, timeout=(2, 0.05), retry=None)
    with pytest.raises(RequestTimeoutError, match=r"0\.05 s"):
        client.service(adder.id)
    server.faults.clear()


def test_client_is_usable_from_many_threads(client: TopChefClient, adder: Service) -> None:
    """Concurrent calls on one client all succeed and see consistent answers."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        jobs = list(pool.map(lambda i: client.submit_job(adder.id, {"a": i, "b": 0}), range(40)))
    assert 40 == len({j.id for j in jobs})
    assert sorted(j.id for j in jobs) == sorted(j.id for j in client.jobs(adder.id))


def test_job_records_are_hashable_values(client: TopChefClient, adder: Service) -> None:
    """Jobs compare by value and hash by their scalar fields."""
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    again = client.job(job.id)
    assert isinstance(again, Job)
    assert {job.id} == {j.id for j in {job, job}}
    assert job.parameters == again.parameters


def test_job_id_is_a_uuid4(client: TopChefClient, adder: Service) -> None:
    """Ids are canonical UUID4 strings."""
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    assert 4 == uuid.UUID(job.id).version


def test_proxy_settings_are_read_once_at_construction(
    server: TopChefServer, adder: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's own session takes proxies from the environment when it is made,
    not on every request."""
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    before = TopChefClient(server.url)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    after = TopChefClient(server.url, retry=None)
    assert adder.id == before.service(adder.id).id
    with pytest.raises(TransportError):
        after.service(adder.id)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert adder.id == TopChefClient(server.url, retry=None).service(adder.id).id


def test_session_auth_and_headers_are_sent(server: TopChefServer, adder: Service) -> None:
    """An injected session's auth and headers reach the server on every request."""
    session = requests.Session()
    session.auth = ("lab", "secret")
    session.headers["X-Instrument"] = "nmr-1"
    client = TopChefClient(server.url, session=session)
    client.check_in(adder.id)
    client.update_job(client.submit_job(adder.id, {"a": 1, "b": 2}).id, status="WORKING")
    for logged in server.requests[-3:]:
        assert logged.headers["authorization"].startswith("Basic ")
        assert "nmr-1" == logged.headers["x-instrument"]
    session.close()


def test_rotated_session_header_is_sent_on_the_next_request(
    server: TopChefServer, adder: Service
) -> None:
    """A header changed on an injected session after a request goes out on the next."""
    with requests.Session() as session:
        session.headers["Authorization"] = "Bearer one"
        client = TopChefClient(server.url, session=session, retry=None)
        client.service(adder.id)
        first = server.requests[-1].headers.get("authorization")
        session.headers["Authorization"] = "Bearer two"
        client.service(adder.id)
        second = server.requests[-1].headers.get("authorization")
    assert ["Bearer one", "Bearer two"] == [first, second]


def test_changed_session_auth_is_sent_on_the_next_request(
    server: TopChefServer, adder: Service
) -> None:
    """New credentials set as an injected session's auth are used from the next request."""
    with requests.Session() as session:
        session.auth = ("lab", "one")
        client = TopChefClient(server.url, session=session, retry=None)
        client.check_in(adder.id)
        first = server.requests[-1].headers.get("authorization")
        session.auth = ("lab", "two")
        client.check_in(adder.id)
        second = server.requests[-1].headers.get("authorization")
    expected = [
        f"Basic {base64.b64encode(f'lab:{password}'.encode()).decode()}"
        for password in ("one", "two")
    ]
    assert expected == [first, second]


def test_cookie_added_to_session_is_sent_on_the_next_request(
    server: TopChefServer, adder: Service
) -> None:
    """A cookie put in an injected session's jar after a request goes out on the next."""
    with requests.Session() as session:
        client = TopChefClient(server.url, session=session, retry=None)
        client.service(adder.id)
        first = server.requests[-1].headers.get("cookie")
        session.cookies.set("lab_session", "abc")
        client.service(adder.id)
        second = server.requests[-1].headers.get("cookie")
    assert [None, "lab_session=abc"] == [first, second]


def test_bodies_over_the_limit_are_refused(server: TopChefServer, adder: Service) -> None:
    """A body far larger than sensible is refused without being read whole, and the
    client goes on working."""
    client = TopChefClient(server.url, retry=None, max_response_bytes=4096)
    server.faults.fail_next(
        status=200, body="[" + "0," * 5000 + "0]", content_type="application/json"
    )
    with pytest.raises(ResponseTooLargeError, match="more than 4096 bytes") as caught:
        client.services()
    assert isinstance(caught.value, UnexpectedResponseError)
    assert ("GET", "/services", 200) == (
        caught.value.method,
        caught.value.path,
        caught.value.status_code,
    )
    assert adder.id == client.service(adder.id).id


def test_real_answers_over_the_limit(server: TopChefServer, adder: Service) -> None:
    """A job list that outgrows the limit is refused like any other body."""
    client = TopChefClient(server.url, retry=None, max_response_bytes=300)
    for _ in range(10):
        client.submit_job(adder.id, {"a": 1, "b": 2})
    with pytest.raises(ResponseTooLargeError):
        client.jobs(adder.id)
