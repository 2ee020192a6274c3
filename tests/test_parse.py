"""Parsing server JSON into records: malformed input gets a ShapeError naming the field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from topchef_worker import JobStatus
from topchef_worker._parse import ShapeError, body_excerpt, error_entries, job, service

JOB: dict[str, Any] = {
    "date_submitted": "2026-11-27T20:33:16.974270+00:00",
    "id": "BE2D23DD-9d3f-4f40-a99b-d7866bf89d60",
    "parameters": {"a": 1, "b": 10},
    "results": None,
    "status": "REGISTERED",
}


def test_job_is_parsed_and_normalised() -> None:
    """Ids become canonical, statuses an enum, dates aware datetimes."""
    parsed = job(JOB, "svc")
    assert "be2d23dd-9d3f-4f40-a99b-d7866bf89d60" == parsed.id
    assert JobStatus.REGISTERED == parsed.status
    assert datetime(2026, 11, 27, 20, 33, 16, 974270, tzinfo=UTC) == (parsed.date_submitted)
    assert "svc" == parsed.service_id
    assert parsed.status == "REGISTERED"


def test_naive_dates_are_utc() -> None:
    """A date without an offset is taken as UTC, as TopChef writes it."""
    parsed = job({**JOB, "date_submitted": "2026-11-27T20:33:16"})
    assert UTC == parsed.date_submitted.tzinfo


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status": "DONE"}, "unknown job status"),
        ({"status": 3}, "job.status is a number"),
        ({"id": "nope"}, "not a UUID"),
        ({"parameters": []}, "job.parameters is an array"),
        ({"results": "x"}, "job.results is a string"),
        ({"date_submitted": "yesterday"}, "not an ISO date"),
    ],
)
def test_malformed_job_fields_are_named(change: dict[str, Any], message: str) -> None:
    """Each malformed field produces a ShapeError that says which and why."""
    with pytest.raises(ShapeError, match=message):
        job({**JOB, **change})


@pytest.mark.parametrize("missing", sorted(JOB))
def test_missing_job_fields_are_named(missing: str) -> None:
    """A missing field is reported by name, never as a KeyError."""
    broken = {k: v for k, v in JOB.items() if k != missing}
    with pytest.raises(ShapeError, match=f"has no '{missing}'"):
        job(broken)


def test_non_object_job() -> None:
    """A job that is not an object is a ShapeError."""
    with pytest.raises(ShapeError, match="expected an object"):
        job(["not", "a", "job"])


def test_booleans_are_not_numbers() -> None:
    """A boolean timeout is rejected although bool subclasses int."""
    detail = {
        "id": "8a432f0e-7b17-4c63-8e68-ddd5b4eb46c0",
        "name": "n",
        "description": "d",
        "job_registration_schema": {},
        "job_result_schema": {},
        "is_service_available": False,
        "has_timed_out": False,
        "timeout": True,
        "jobs": [],
    }
    with pytest.raises(ShapeError, match="timeout is a boolean"):
        service(detail)
    assert 30 == service({**detail, "timeout": 30}).timeout


def test_error_entries_are_read_leniently() -> None:
    """Entries that fit are kept; malformed ones are skipped rather than raising."""
    body = {
        "errors": [
            {"status_code": 400, "title": "T", "detail": "D"},
            "junk",
            {"title": "only a title"},
        ]
    }
    entries = error_entries(body)
    assert [(400, "T", "D"), (0, "only a title", "")] == [
        (e.status_code, e.title, e.detail) for e in entries
    ]
    assert () == error_entries({"errors": "nope"})
    assert () == error_entries(["x"])


def test_html_excerpt_is_one_readable_line() -> None:
    """HTML tags are stripped and whitespace collapsed, within the limit."""
    html = b"<!DOCTYPE HTML>\n<title>500 Internal Server Error</title>\n<h1>Oops</h1>\n"
    assert "500 Internal Server Error Oops" == body_excerpt(html, "text/html")
    long = body_excerpt(b"x" * 1000, "text/plain", limit=50)
    assert 50 == len(long)
    assert long.endswith("...")
