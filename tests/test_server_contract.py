"""The facts of the TopChef API that TopChefServer must reproduce.

Each test pins a behaviour of the real server (status codes, headers, body shapes,
quirks) with plain ``requests`` calls, independent of the client.  The facts come
from a recorded session against the real server; ids and dates differ from run to run.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from conftest import ADDER_PARAMETERS, ADDER_RESULTS
from topchef_worker.testing import ManualClock, TopChefServer

T = 5  # seconds; every request has a timeout

NOT_FOUND_HTML = (
    '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">\n'
    "<title>404 Not Found</title>\n<h1>Not Found</h1>\n"
    "<p>The requested URL was not found on the server. If you entered the URL manually "
    "please check your spelling and try again.</p>\n"
)
NOT_JSON = {
    "status_code": 400,
    "title": "Request Not JSON",
    "detail": "Could not undertand input. Either it is not JSON, or the type was not "
    "specified using the Content-Type header",
}


@pytest.fixture
def http(server: TopChefServer) -> Iterator[Any]:
    """A requests session bound to the server's URL: http.get('/services')."""

    class Bound:
        def __init__(self) -> None:
            self.session = requests.Session()

        def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
            kwargs.setdefault("timeout", T)
            return self.session.request(method, server.url + path, **kwargs)

        def get(self, path: str, **kwargs: Any) -> requests.Response:
            return self("GET", path, **kwargs)

    bound = Bound()
    yield bound
    bound.session.close()


@pytest.fixture
def sid(http: Any) -> str:
    response = http(
        "POST",
        "/services",
        json={
            "name": "Adder",
            "description": "adds a and b",
            "job_registration_schema": ADDER_PARAMETERS,
            "job_result_schema": ADDER_RESULTS,
        },
    )
    return str(response.headers["Location"].rsplit("/", 1)[1])


def _submit(http: Any, sid: str, a: int = 1) -> str:
    response = http("POST", f"/services/{sid}/jobs", json={"parameters": {"a": a, "b": 10}})
    assert 201 == response.status_code
    return str(response.json()["data"]["id"])


def _errors(response: requests.Response) -> list[tuple[int, str]]:
    assert "application/json" == response.headers["Content-Type"]
    return [(e["status_code"], e["title"]) for e in response.json()["errors"]]


# -- root and services ----------------------------------------------------------------


def test_root_metadata(http: Any, server: TopChefServer) -> None:
    """GET / answers the metadata in the data/meta/links envelope."""
    body = http.get("/").json()
    assert "0.1dev" == body["data"]["version"]
    assert {"data", "meta", "links"} == set(body)
    assert server.url + "/" == body["links"]["self"]


def test_create_service_id_only_in_location(http: Any, server: TopChefServer) -> None:
    """201; the body has no id; the Location header is absolute and holds it."""
    response = http(
        "POST",
        "/services",
        json={
            "name": "Adder",
            "description": "d",
            "job_registration_schema": {},
            "job_result_schema": {},
        },
    )
    assert 201 == response.status_code
    assert {
        "data": {"message": "service successfully created"},
        "links": {"self": server.url + "/services"},
    } == response.json()
    location = response.headers["Location"]
    assert re.fullmatch(re.escape(server.url) + r"/services/[0-9a-f-]{36}", location)


def test_create_service_field_errors(http: Any) -> None:
    """One Deserialization entry per missing or mistyped key; schemas must be objects."""
    response = http("POST", "/services", json={"name": "x", "job_result_schema": []})
    assert 400 == response.status_code
    details = sorted(e["detail"] for e in response.json()["errors"])
    assert [
        "Valdation of key 'description' threw error '['Missing data for required field.']'.",
        (
            "Valdation of key 'job_registration_schema' threw error "
            "'['Missing data for required field.']'."
        ),
        "Valdation of key 'job_result_schema' threw error '['Not a valid mapping type.']'.",
    ] == details
    assert {"Deserialization Error From Client Data"} == {
        e["title"] for e in response.json()["errors"]
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": '{"name": "x"}'},  # no Content-Type
        {"data": "{not json", "headers": {"Content-Type": "application/json"}},
        {},
    ],
)
def test_create_service_not_json(http: Any, kwargs: dict[str, Any]) -> None:
    """A body that is missing, not JSON, or not labelled JSON: 400 Request Not JSON."""
    response = http("POST", "/services", **kwargs)
    assert 400 == response.status_code
    assert {"errors": [NOT_JSON]} == response.json()


def test_vendor_json_content_type_is_json(http: Any) -> None:
    """application/*+json with a charset counts as JSON."""
    response = http(
        "POST",
        "/services",
        data='{"name": "n", "description": "d", "job_registration_schema": {}, '
        '"job_result_schema": {}}',
        headers={"Content-Type": "application/vnd.topchef+json; charset=utf-8"},
    )
    assert 201 == response.status_code


def test_create_service_extra_keys_ignored(http: Any, sid: str) -> None:
    """A timeout in the creation body is ignored: the service starts at 30 s."""
    response = http(
        "POST",
        "/services",
        json={
            "name": "n",
            "description": "d",
            "job_registration_schema": {},
            "job_result_schema": {},
            "timeout": 5,
        },
    )
    new = response.headers["Location"].rsplit("/", 1)[1]
    assert 30 == http.get(f"/services/{new}").json()["data"]["timeout"]


def test_service_list(http: Any, sid: str) -> None:
    """The list holds id, name and description only, with both meta schemas."""
    body = http.get("/services").json()
    assert [{"id": sid, "name": "Adder", "description": "adds a and b"}] == body["data"]
    assert {"service_schema", "new_service_schema"} == set(body["meta"])


def test_fresh_service_detail(http: Any, sid: str, server: TopChefServer) -> None:
    """A new service: not available, 30 s timeout, not timed out, no jobs."""
    body = http.get(f"/services/{sid}").json()
    assert {
        "description": "adds a and b",
        "has_timed_out": False,
        "id": sid,
        "is_service_available": False,
        "job_registration_schema": ADDER_PARAMETERS,
        "job_result_schema": ADDER_RESULTS,
        "jobs": [],
        "name": "Adder",
        "timeout": 30,
    } == body["data"]
    assert {"self": f"{server.url}/services/{sid}"} == body["links"]
    assert ["service_schema"] == list(body["meta"])


def test_names_are_not_unique(http: Any, sid: str) -> None:
    """Two services may share a name."""
    http(
        "POST",
        "/services",
        json={
            "name": "Adder",
            "description": "again",
            "job_registration_schema": {},
            "job_result_schema": {},
        },
    )
    assert ["Adder", "Adder"] == [s["name"] for s in http.get("/services").json()["data"]]


# -- heartbeat and service PATCH --------------------------------------------------------


def test_bare_heartbeat(http: Any, sid: str, clock: ManualClock) -> None:
    """No body, no Content-Type: 200 with only a meta string in naive UTC ISO time."""
    response = http("PATCH", f"/services/{sid}")
    assert 200 == response.status_code
    stamp = clock().replace(tzinfo=None).isoformat()
    assert {"meta": f"Service checked in at {stamp}"} == response.json()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": "", "headers": {"Content-Type": "application/json"}},
        {"data": "{not json", "headers": {"Content-Type": "application/json"}},
        {"data": "null", "headers": {"Content-Type": "application/json"}},
        {
            "data": '{"timeout": 5}',
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        },
    ],
)
def test_non_json_patch_is_a_bare_check_in(http: Any, sid: str, kwargs: dict[str, Any]) -> None:
    """Empty, malformed, null or non-JSON-typed bodies are silently a bare check-in."""
    response = http("PATCH", f"/services/{sid}", **kwargs)
    assert 200 == response.status_code
    assert ["meta"] == list(response.json())
    assert 30 == http.get(f"/services/{sid}").json()["data"]["timeout"]


def test_patch_with_fields_modifies_and_answers_detail(http: Any, sid: str) -> None:
    """A JSON object checks in, applies the fields and answers the full detail."""
    response = http("PATCH", f"/services/{sid}", json={"timeout": 3, "is_available": True})
    assert 200 == response.status_code
    data = response.json()["data"]
    assert (3, True) == (data["timeout"], data["is_service_available"])
    assert {"data", "links", "meta"} == set(response.json())


def test_empty_object_patch_answers_detail(http: Any, sid: str) -> None:
    """{} is a check-in that answers the full detail."""
    assert sid == http("PATCH", f"/services/{sid}", json={}).json()["data"]["id"]


def test_patch_string_values(http: Any, sid: str) -> None:
    """A numeric-string timeout and marshmallow's truthy strings are accepted."""
    data = http("PATCH", f"/services/{sid}", json={"timeout": "7", "is_available": "true"}).json()
    assert (7, True) == (data["data"]["timeout"], data["data"]["is_service_available"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"timeout": -1}, "timeout"),
        ({"name": 5}, "name"),
        ({"is_available": "maybe"}, "is_available"),
        ({"timeout": "soon"}, "timeout"),
    ],
)
def test_patch_wrong_type_is_400_but_checks_in(
    http: Any, sid: str, clock: ManualClock, body: dict[str, Any], field: str
) -> None:
    """A bad field is a 400 that changes nothing, yet the check-in is saved."""
    clock.advance(31)
    response = http("PATCH", f"/services/{sid}", json={**body, "description": "changed"})
    assert [(400, "Deserialization Error From Client Data")] == _errors(response)
    assert f"Valdation of key '{field}'" in response.json()["errors"][0]["detail"]
    data = http.get(f"/services/{sid}").json()["data"]
    assert ("adds a and b", False) == (data["description"], data["has_timed_out"])


def test_negative_timeout_detail(http: Any, sid: str) -> None:
    """The negative-timeout message is the server's own."""
    response = http("PATCH", f"/services/{sid}", json={"timeout": -1})
    assert (
        "Valdation of key 'timeout' threw error '['Attempted to set a negative timeout duration']'."
    ) == response.json()["errors"][0]["detail"]


@pytest.mark.parametrize("timeout", [0, 0.5])
def test_zero_timeout_is_500_html_with_earlier_fields_committed(
    http: Any, sid: str, timeout: float
) -> None:
    """A timeout truncated to 0 is a 500 HTML page; name before it is committed."""
    response = http("PATCH", f"/services/{sid}", json={"name": "renamed", "timeout": timeout})
    assert (500, "text/html") == (response.status_code, response.headers["Content-Type"])
    data = http.get(f"/services/{sid}").json()["data"]
    assert ("renamed", 30) == (data["name"], data["timeout"])


def test_float_timeout_is_truncated(http: Any, sid: str) -> None:
    """2.9 seconds is stored as 2."""
    assert 2 == http("PATCH", f"/services/{sid}", json={"timeout": 2.9}).json()["data"]["timeout"]


def test_non_object_patch_is_400(http: Any, sid: str) -> None:
    """A JSON array is an invalid input type."""
    response = http("PATCH", f"/services/{sid}", json=[1])
    assert [(400, "Deserialization Error From Client Data")] == _errors(response)
    assert "'_schema'" in response.json()["errors"][0]["detail"]


def test_schemas_cannot_be_changed(http: Any, sid: str) -> None:
    """Schema keys in a PATCH are ignored."""
    http("PATCH", f"/services/{sid}", json={"job_result_schema": {"type": "string"}})
    assert ADDER_RESULTS == http.get(f"/services/{sid}").json()["data"]["job_result_schema"]


# -- liveness -------------------------------------------------------------------------


def test_timeout_is_strictly_greater(http: Any, sid: str, clock: ManualClock) -> None:
    """has_timed_out turns true only once more than `timeout` seconds have passed."""
    http("PATCH", f"/services/{sid}", json={"timeout": 3})
    clock.advance(3)
    assert http.get(f"/services/{sid}").json()["data"]["has_timed_out"] is False
    clock.advance(0.001)
    assert http.get(f"/services/{sid}").json()["data"]["has_timed_out"] is True


def test_only_a_service_patch_is_a_heartbeat(http: Any, sid: str, clock: ManualClock) -> None:
    """GET next, GET detail, job POST and job PATCH do not check in; PATCH does."""
    http("PATCH", f"/services/{sid}", json={"timeout": 3})
    clock.advance(4)
    job = _submit(http, sid)
    http.get(f"/services/{sid}/jobs/next")
    http("PATCH", f"/jobs/{job}", json={"status": "WORKING"})
    assert http.get(f"/services/{sid}").json()["data"]["has_timed_out"] is True
    http("PATCH", f"/services/{sid}")
    assert http.get(f"/services/{sid}").json()["data"]["has_timed_out"] is False


def test_timed_out_service_still_serves_jobs(http: Any, sid: str, clock: ManualClock) -> None:
    """The server does nothing on timeout: jobs are accepted and served."""
    clock.advance(31)
    job = _submit(http, sid)
    assert job == http.get(f"/services/{sid}/jobs/next").json()["data"]["id"]


def test_method_override_post_patch_is_a_heartbeat(http: Any, sid: str, clock: ManualClock) -> None:
    """POST with X-HTTP-Method-Override: PATCH and no body is a check-in."""
    clock.advance(31)
    response = http("POST", f"/services/{sid}", headers={"X-HTTP-Method-Override": "patch"})
    assert 200 == response.status_code
    assert ["meta"] == list(response.json())
    assert http.get(f"/services/{sid}").json()["data"]["has_timed_out"] is False


def test_method_override_to_get_drops_the_body(http: Any, sid: str) -> None:
    """Overriding to GET throws the body away and routes as GET."""
    response = http(
        "POST",
        f"/services/{sid}/jobs",
        json={"parameters": {"a": 1, "b": 1}},
        headers={"X-HTTP-Method-Override": "GET"},
    )
    assert (200, []) == (response.status_code, response.json()["data"])


def test_unknown_override_is_ignored(http: Any) -> None:
    """A value outside the known verbs leaves the method unchanged."""
    response = http.get("/services", headers={"X-HTTP-Method-Override": "FROB"})
    assert 200 == response.status_code


# -- jobs of a service ----------------------------------------------------------------


def test_submit_job(http: Any, sid: str, server: TopChefServer) -> None:
    """201, Location at /jobs/<id>, data is the job, meta a string, no links."""
    response = http("POST", f"/services/{sid}/jobs", json={"parameters": {"a": 1, "b": 10}})
    assert 201 == response.status_code
    body = response.json()
    job_id = body["data"]["id"]
    assert f"{server.url}/jobs/{job_id}" == response.headers["Location"]
    assert {"data", "meta"} == set(body)
    assert f"new job ID is {job_id}" == body["meta"]
    assert {"date_submitted", "id", "parameters", "results", "status"} == set(body["data"])
    assert ("REGISTERED", None, {"a": 1, "b": 10}) == (
        body["data"]["status"],
        body["data"]["results"],
        body["data"]["parameters"],
    )
    assert body["data"]["date_submitted"].endswith("+00:00")


def test_submit_invalid_parameters(http: Any, sid: str) -> None:
    """One JSONSchema Validation Error per violation, with the server's detail text."""
    response = http("POST", f"/services/{sid}/jobs", json={"parameters": {"a": "one"}})
    assert 400 == response.status_code
    assert sorted(
        [
            "Validation of schema [] threw error 'one' is not of type 'number'",
            "Validation of schema [] threw error 'b' is a required property",
        ]
    ) == sorted(e["detail"] for e in response.json()["errors"])


@pytest.mark.parametrize(
    ("body", "message"),
    [({}, "Missing data for required field."), ({"parameters": [1]}, "Not a valid mapping type.")],
)
def test_submit_without_object_parameters(
    http: Any, sid: str, body: dict[str, Any], message: str
) -> None:
    """Parameters must be present and an object."""
    response = http("POST", f"/services/{sid}/jobs", json=body)
    assert [(400, "Deserialization Error From Client Data")] == _errors(response)
    assert message in response.json()["errors"][0]["detail"]


def test_submit_not_json(http: Any, sid: str) -> None:
    """A job POST must be labelled JSON."""
    response = http("POST", f"/services/{sid}/jobs", data='{"parameters": {}}')
    assert {"errors": [NOT_JSON]} == response.json()


def test_invalid_stored_schema_fails_submissions_with_500(http: Any) -> None:
    """The server accepts an invalid schema, then every job POST is a 500 HTML page."""
    created = http(
        "POST",
        "/services",
        json={
            "name": "b",
            "description": "d",
            "job_registration_schema": {"type": 5},
            "job_result_schema": {},
        },
    )
    assert 201 == created.status_code
    bad = created.headers["Location"].rsplit("/", 1)[1]
    response = http("POST", f"/services/{bad}/jobs", json={"parameters": {}})
    assert (500, "text/html") == (response.status_code, response.headers["Content-Type"])


def test_an_unknown_type_in_the_result_schema_fails_only_the_results_it_reaches(
    http: Any,
) -> None:
    """Draft4Validator without check_schema (the real server's jsonschema 2.6): a
    property typed "float" is a 500 HTML page for results that have it, nothing for
    results without it."""
    created = http(
        "POST",
        "/services",
        json={
            "name": "f",
            "description": "d",
            "job_registration_schema": {},
            "job_result_schema": {"type": "object", "properties": {"x": {"type": "float"}}},
        },
    )
    sid = created.headers["Location"].rsplit("/", 1)[1]
    first, second = (
        http("POST", f"/services/{sid}/jobs", json={"parameters": {}}).json()["data"]["id"]
        for _ in range(2)
    )
    without = http("PATCH", f"/jobs/{first}", json={"status": "COMPLETED", "results": {"y": 1}})
    with_x = http("PATCH", f"/jobs/{second}", json={"status": "COMPLETED", "results": {"x": 1.5}})
    assert (200, 500, "text/html") == (
        without.status_code,
        with_x.status_code,
        with_x.headers["Content-Type"],
    )


def test_next_does_not_claim_and_is_fifo(http: Any, sid: str, server: TopChefServer) -> None:
    """next returns the oldest REGISTERED job, the same one until its status changes."""
    jobs = [_submit(http, sid, a) for a in range(12)]
    first = http.get(f"/services/{sid}/jobs/next").json()
    assert jobs[0] == first["data"]["id"]
    assert f"{server.url}/services/{sid}/jobs/next" == first["links"]["self"]
    assert ["job_schema"] == list(first["meta"])
    assert jobs[0] == http.get(f"/services/{sid}/jobs/next").json()["data"]["id"]
    seen = []
    for _ in jobs:
        job = http.get(f"/services/{sid}/jobs/next").json()["data"]["id"]
        http("PATCH", f"/jobs/{job}", json={"status": "WORKING"})
        seen.append(job)
    assert jobs == seen


def test_requeued_job_keeps_its_place(http: Any, sid: str) -> None:
    """A job put back to REGISTERED is served again before younger jobs."""
    first, second = _submit(http, sid, 1), _submit(http, sid, 2)
    http("PATCH", f"/jobs/{first}", json={"status": "COMPLETED", "results": {"sum": 11}})
    assert second == http.get(f"/services/{sid}/jobs/next").json()["data"]["id"]
    requeued = http("PATCH", f"/jobs/{first}", json={"status": "REGISTERED", "results": None})
    assert ("REGISTERED", {"sum": 11}) == (
        requeued.json()["status"],
        requeued.json()["results"],
    )
    assert first == http.get(f"/services/{sid}/jobs/next").json()["data"]["id"]


def test_empty_next_is_204_with_empty_body(http: Any, sid: str) -> None:
    """No REGISTERED job: 204, empty body, text/html Content-Type."""
    response = http.get(f"/services/{sid}/jobs/next", headers={"Content-Type": "application/json"})
    assert (204, b"", "text/html; charset=utf-8") == (
        response.status_code,
        response.content,
        response.headers["Content-Type"],
    )


def test_queue_first_ten(http: Any, sid: str) -> None:
    """queue answers up to 10 REGISTERED jobs, oldest first, or 204."""
    assert 204 == http.get(f"/services/{sid}/queue").status_code
    jobs = [_submit(http, sid, a) for a in range(11)]
    http("PATCH", f"/jobs/{jobs[1]}", json={"status": "ERROR"})
    body = http.get(f"/services/{sid}/queue").json()
    assert [jobs[0], *jobs[2:11]] == [j["id"] for j in body["data"]]
    assert ["data_schema"] == list(body["meta"])


def test_service_jobs_lists_every_status(http: Any, sid: str) -> None:
    """GET .../jobs lists all jobs with the registration schema in meta."""
    first, second = _submit(http, sid, 1), _submit(http, sid, 2)
    http("PATCH", f"/jobs/{first}", json={"status": "WORKING"})
    body = http.get(f"/services/{sid}/jobs").json()
    assert [(first, "WORKING"), (second, "REGISTERED")] == [
        (j["id"], j["status"]) for j in body["data"]
    ]
    assert ADDER_PARAMETERS == body["meta"]["new_job_schema"]["properties"]["parameters"]


def test_detail_lists_job_summaries(http: Any, sid: str) -> None:
    """The service detail lists every job as id, status and date only."""
    job = _submit(http, sid)
    (summary,) = http.get(f"/services/{sid}").json()["data"]["jobs"]
    assert {"id", "status", "date_submitted"} == set(summary)
    assert job == summary["id"]


# -- jobs -----------------------------------------------------------------------------


def test_all_jobs_overview(http: Any, sid: str) -> None:
    """GET /jobs lists every job as id, status and date."""
    job = _submit(http, sid)
    (summary,) = http.get("/jobs").json()["data"]
    assert (job, "REGISTERED") == (summary["id"], summary["status"])
    assert {"id", "status", "date_submitted"} == set(summary)


def test_job_detail(http: Any, sid: str, server: TopChefServer) -> None:
    """GET /jobs/<id> is enveloped, with both meta schemas."""
    job = _submit(http, sid)
    body = http.get(f"/jobs/{job}").json()
    assert job == body["data"]["id"]
    assert {"job_info_schema", "patch_request_schema"} == set(body["meta"])
    assert f"{server.url}/jobs/{job}" == body["links"]["self"]


def test_claim_answers_the_bare_job_and_is_unconditional(http: Any, sid: str) -> None:
    """PATCH WORKING answers the job without an envelope, and can be repeated."""
    job = _submit(http, sid)
    first = http("PATCH", f"/jobs/{job}", json={"status": "WORKING"})
    second = http("PATCH", f"/jobs/{job}", json={"status": "WORKING"})
    assert (200, 200) == (first.status_code, second.status_code)
    assert {"date_submitted", "id", "parameters", "results", "status"} == set(first.json())
    assert "WORKING" == second.json()["status"]


def test_rejected_results_apply_nothing(http: Any, sid: str) -> None:
    """Results failing the schema: 400, and the status in the same body is not applied."""
    job = _submit(http, sid)
    http("PATCH", f"/jobs/{job}", json={"status": "WORKING"})
    response = http(
        "PATCH", f"/jobs/{job}", json={"status": "COMPLETED", "results": {"sum": "eleven"}}
    )
    assert {
        "errors": [
            {
                "detail": "Validation of schema [] threw error 'eleven' is not of type 'number'",
                "status_code": 400,
                "title": "JSONSchema Validation Error",
            }
        ]
    } == response.json()
    missing = http("PATCH", f"/jobs/{job}", json={"results": {}})
    assert "'sum' is a required property" in missing.json()["errors"][0]["detail"]
    data = http.get(f"/jobs/{job}").json()["data"]
    assert ("WORKING", None) == (data["status"], data["results"])


def test_results_must_be_an_object(http: Any) -> None:
    """Even with a schema that allows arrays, results must be an object."""
    created = http(
        "POST",
        "/services",
        json={
            "name": "FID",
            "description": "d",
            "job_registration_schema": {},
            "job_result_schema": {"type": "array"},
        },
    )
    sid = created.headers["Location"].rsplit("/", 1)[1]
    job = http("POST", f"/services/{sid}/jobs", json={"parameters": {}}).json()["data"]["id"]
    response = http("PATCH", f"/jobs/{job}", json={"results": [11]})
    assert [(400, "Deserialization Error From Client Data")] == _errors(response)


def test_integer_rejects_float(http: Any) -> None:
    """Draft 4 integer rejects 1.0."""
    created = http(
        "POST",
        "/services",
        json={
            "name": "c",
            "description": "d",
            "job_registration_schema": {},
            "job_result_schema": {"type": "object", "properties": {"count": {"type": "integer"}}},
        },
    )
    sid = created.headers["Location"].rsplit("/", 1)[1]
    job = http("POST", f"/services/{sid}/jobs", json={"parameters": {}}).json()["data"]["id"]
    response = http("PATCH", f"/jobs/{job}", json={"results": {"count": 1.0}})
    assert (
        "Validation of schema [] threw error 1.0 is not of type 'integer'"
        == response.json()["errors"][0]["detail"]
    )
    assert 200 == http("PATCH", f"/jobs/{job}", json={"results": {"count": 1}}).status_code


def test_status_is_case_insensitive_and_any_transition_allowed(http: Any, sid: str) -> None:
    """Lower case is accepted, upper case returned; every transition succeeds."""
    job = _submit(http, sid)
    for status in ("completed", "REGISTERED", "error", "Working", "registered"):
        response = http("PATCH", f"/jobs/{job}", json={"status": status})
        assert (200, status.upper()) == (response.status_code, response.json()["status"])


def test_unknown_status_is_400(http: Any, sid: str) -> None:
    """A status string outside the enum is a Deserialization Error."""
    job = _submit(http, sid)
    response = http("PATCH", f"/jobs/{job}", json={"status": "DONE"})
    assert [(400, "Deserialization Error From Client Data")] == _errors(response)


def test_non_string_status_is_500_html(http: Any, sid: str) -> None:
    """A numeric status crashes the real server: 500 with an HTML body."""
    job = _submit(http, sid)
    response = http("PATCH", f"/jobs/{job}", json={"status": 3})
    assert (500, "text/html") == (response.status_code, response.headers["Content-Type"])
    assert "Internal Server Error" in response.text


def test_empty_and_null_patch(http: Any, sid: str) -> None:
    """{} changes nothing; results: null is ignored (results cannot be cleared)."""
    job = _submit(http, sid)
    http("PATCH", f"/jobs/{job}", json={"results": {"sum": 1}})
    assert {"sum": 1} == http("PATCH", f"/jobs/{job}", json={}).json()["results"]
    assert {"sum": 1} == http("PATCH", f"/jobs/{job}", json={"results": None}).json()["results"]


def test_job_patch_requires_json(http: Any, sid: str) -> None:
    """Without Content-Type the job PATCH is Request Not JSON."""
    job = _submit(http, sid)
    response = http("PATCH", f"/jobs/{job}", data='{"status": "COMPLETED"}')
    assert {"errors": [NOT_JSON]} == response.json()


# -- ids, routes and methods ----------------------------------------------------------


def test_malformed_uuid_is_404_json(http: Any) -> None:
    """A path id uuid.UUID cannot parse: 404 Not UUID Error."""
    response = http.get("/services/not-a-uuid/jobs/next")
    assert {
        "errors": [
            {
                "detail": "The string not-a-uuid could not be converted to a UUID",
                "status_code": 404,
                "title": "Not UUID Error",
            }
        ]
    } == response.json()
    assert 404 == response.status_code


def test_unknown_ids_are_404_json(http: Any) -> None:
    """Well-formed unknown ids: Service Not Found / Job Not Found."""
    zero = "00000000-0000-0000-0000-000000000000"
    service = http("PATCH", f"/services/{zero}")
    job = http.get(f"/jobs/{zero}")
    assert [(404, "Service Not Found")] == _errors(service)
    assert f"A service with UUID {zero} does not exist" == service.json()["errors"][0]["detail"]
    assert [(404, "Job Not Found")] == _errors(job)
    assert f"A job with id {zero} was not found" == job.json()["errors"][0]["detail"]


def test_lenient_uuids_and_canonical_links(http: Any, sid: str, server: TopChefServer) -> None:
    """Upper case without dashes, braces and urn: all work; links are canonical."""
    for spelling in (sid.upper().replace("-", ""), "{" + sid + "}", uuid.UUID(sid).urn):
        body = http.get(f"/services/{spelling}").json()
        assert f"{server.url}/services/{sid}" == body["links"]["self"]


@pytest.mark.parametrize(
    "path", ["/services/", "/services/{sid}/", "/services/{sid}/next", "/nope", "/jobs/x/y"]
)
def test_unknown_routes_are_404_html(http: Any, sid: str, path: str) -> None:
    """Unknown routes, trailing slashes and the classic example's /next: 404 HTML."""
    response = http.get(path.format(sid=sid), headers={"Content-Type": "application/json"})
    assert (404, "text/html") == (response.status_code, response.headers["Content-Type"])
    assert NOT_FOUND_HTML == response.text


@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", "/jobs/{job}"), ("DELETE", "/services/{sid}"), ("POST", "/jobs/{job}")],
)
def test_wrong_methods_are_405_html_with_allow(http: Any, sid: str, method: str, path: str) -> None:
    """Methods a route lacks: 405 HTML with an Allow header."""
    job = _submit(http, sid)
    response = http(method, path.format(sid=sid, job=job), json={"status": "COMPLETED"})
    assert (405, "text/html") == (response.status_code, response.headers["Content-Type"])
    assert "Method Not Allowed" in response.text
    assert {"HEAD", "GET", "OPTIONS"} <= set(response.headers["Allow"].split(", "))


def test_head_is_405_without_body_and_options_is_200(http: Any, sid: str) -> None:
    """HEAD gets TopChef's JSON 405 (body dropped); OPTIONS 200 with Allow."""
    head = http("HEAD", f"/services/{sid}")
    assert (405, "application/json", b"") == (
        head.status_code,
        head.headers["Content-Type"],
        head.content,
    )
    options = http("OPTIONS", f"/services/{sid}")
    assert (200, b"") == (options.status_code, options.content)
    assert {"HEAD", "PATCH", "GET", "OPTIONS"} == set(options.headers["Allow"].split(", "))


def test_validator(http: Any) -> None:
    """GET answers an empty data; POST validates an object against a Draft-4 schema."""
    assert {} == http.get("/validator").json()["data"]
    schema = {"type": "object", "properties": {"v": {"type": "integer", "maximum": 10}}}
    ok = http("POST", "/validator", json={"schema": schema, "object": {"v": 10}})
    assert {"status": "Validation was successful"} == ok.json()["data"]
    bad = http("POST", "/validator", json={"schema": schema, "object": {"v": 11}})
    assert (
        "Validation of schema [] threw error 11 is greater than the maximum of 10"
        == bad.json()["errors"][0]["detail"]
    )
    array = http("POST", "/validator", json={"schema": schema, "object": [1]})
    assert [(400, "Deserialization Error From Client Data")] == _errors(array)


def test_responses_are_keep_alive_http11(http: Any, sid: str, server: TopChefServer) -> None:
    """One keep-alive connection serves many requests; the Server header is topchef."""
    responses = [http.get(f"/services/{sid}/jobs/next") for _ in range(5)]
    assert {"topchef"} == {r.headers["Server"] for r in responses}
    assert {11} == {r.raw.version for r in responses}
    assert all("close" not in r.headers.get("Connection", "") for r in responses)
