"""Turn TopChef's JSON into records, or say exactly what is wrong with it.

These functions are pure: they take decoded JSON and return records, or raise
:class:`ShapeError` naming the field that does not fit.  The client adds method,
path and status and re-raises it as :class:`UnexpectedResponseError`, so a malformed
answer never escapes as a raw ``KeyError`` or ``TypeError``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from ._ids import parse_id
from ._models import ErrorEntry, Job, JobStatus, JobSummary, Service, ServiceSummary

__all__ = [
    "ShapeError",
    "body_excerpt",
    "error_entries",
    "field",
    "job",
    "job_list",
    "job_summary",
    "service",
    "service_summary",
]


class ShapeError(Exception):
    """A JSON value does not have the documented shape."""


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


def field(obj: object, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """Return ``obj[key]`` after checking that it exists and is of *kind*."""
    if not isinstance(obj, dict):
        raise ShapeError(f"{where} is {_type_name(obj)}, expected an object")
    if key not in obj:
        raise ShapeError(f"{where} has no {key!r}")
    value = obj[key]
    # bool is an int subclass; a boolean is never a valid number here.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        raise ShapeError(f"{where}.{key} is {_type_name(value)} ({value!r:.40})")
    return value


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _id(obj: object, key: str, where: str) -> str:
    raw = field(obj, key, str, where)
    canonical = parse_id(raw)
    if canonical is None:
        raise ShapeError(f"{where}.{key} is not a UUID: {raw!r:.60}")
    return canonical


def _status(obj: object, where: str) -> JobStatus:
    raw = field(obj, "status", str, where)
    try:
        return JobStatus(raw.upper())
    except ValueError:
        raise ShapeError(f"{where}.status is an unknown job status: {raw!r:.40}") from None


def _date(obj: object, key: str, where: str) -> datetime:
    raw = field(obj, key, str, where)
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ShapeError(f"{where}.{key} is not an ISO date: {raw!r:.40}") from None
    # TopChef writes UTC with an explicit +00:00; a naive value is UTC too.
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def job_summary(obj: object, where: str = "job") -> JobSummary:
    """Parse ``{"id", "status", "date_submitted"}``."""
    return JobSummary(
        id=_id(obj, "id", where),
        status=_status(obj, where),
        date_submitted=_date(obj, "date_submitted", where),
    )


def job(obj: object, service_id: str | None = None, where: str = "job") -> Job:
    """Parse a full job view; results may be null until a worker sets them."""
    job_id = _id(obj, "id", where)
    status = _status(obj, where)
    return Job(
        id=job_id,
        status=status,
        parameters=field(obj, "parameters", dict, where),
        results=field(obj, "results", (dict, type(None)), where),
        date_submitted=_date(obj, "date_submitted", where),
        service_id=service_id,
    )


def job_list(obj: object, service_id: str | None, where: str) -> list[Job]:
    """Parse a JSON array of full job views."""
    if not isinstance(obj, list):
        raise ShapeError(f"{where} is {_type_name(obj)}, expected an array")
    return [job(item, service_id, f"{where}[{i}]") for i, item in enumerate(obj)]


def service_summary(obj: object, where: str = "service") -> ServiceSummary:
    """Parse ``{"id", "name", "description"}``."""
    return ServiceSummary(
        id=_id(obj, "id", where),
        name=field(obj, "name", str, where),
        description=field(obj, "description", str, where),
    )


def service(obj: object, where: str = "service") -> Service:
    """Parse a service's full detail, including its list of job summaries."""
    jobs = field(obj, "jobs", list, where) if isinstance(obj, dict) and "jobs" in obj else []
    return Service(
        id=_id(obj, "id", where),
        name=field(obj, "name", str, where),
        description=field(obj, "description", str, where),
        job_registration_schema=field(obj, "job_registration_schema", dict, where),
        job_result_schema=field(obj, "job_result_schema", dict, where),
        is_service_available=field(obj, "is_service_available", bool, where),
        has_timed_out=field(obj, "has_timed_out", bool, where),
        timeout=field(obj, "timeout", int, where),
        jobs=tuple(job_summary(item, f"{where}.jobs[{i}]") for i, item in enumerate(jobs)),
    )


def error_entries(obj: object) -> tuple[ErrorEntry, ...]:
    """Parse a TopChef error body leniently: whatever entries fit, nothing else.

    Error bodies are read only to explain a failure, so a malformed one yields no
    entries rather than a second error.
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("errors"), list):
        return ()
    entries = []
    for item in obj["errors"]:
        if not isinstance(item, dict):
            continue
        code = item.get("status_code")
        entries.append(
            ErrorEntry(
                status_code=code if isinstance(code, int) and not isinstance(code, bool) else 0,
                title=str(item.get("title", "")),
                detail=str(item.get("detail", "")),
            )
        )
    return tuple(entries)


_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def body_excerpt(body: bytes, content_type: str, limit: int = 200) -> str:
    """Return the start of *body* as one readable line, tags stripped from HTML."""
    text = body[: limit * 8].decode("utf-8", errors="replace")
    if "html" in content_type.lower() or text.lstrip().startswith("<"):
        text = _TAG.sub(" ", text)
    text = _SPACE.sub(" ", text).strip()
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text
