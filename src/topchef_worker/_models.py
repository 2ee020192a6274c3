"""The records TopChef serves, as frozen values.

Records are built only by :mod:`topchef_worker._parse` from server answers (or by
users' tests), so their fields hold already-checked, plain data: ids are canonical
strings, dates are aware UTC datetimes, parameters and results are plain dicts that
pickle and cross a process pool unchanged.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import attrs

__all__ = [
    "ErrorEntry",
    "Job",
    "JobStatus",
    "JobSummary",
    "Service",
    "ServiceSummary",
]


class JobStatus(str, enum.Enum):
    """The four states of a TopChef job.

    A ``str`` enum, so ``job.status == "COMPLETED"`` holds and values serialise as the
    plain strings the server speaks.  The server accepts any transition between them.
    """

    REGISTERED = "REGISTERED"
    WORKING = "WORKING"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"

    def __str__(self) -> str:
        return self.value

    @property
    def is_finished(self) -> bool:
        """True for COMPLETED and ERROR, the states a worker reports at the end."""
        return self in (JobStatus.COMPLETED, JobStatus.ERROR)


@attrs.frozen(kw_only=True)
class ErrorEntry:
    """One entry of the ``errors`` list of a TopChef error body.

    For a results PATCH rejected by the result schema there is one entry per schema
    violation, and ``detail`` says which (``'eleven' is not of type 'number'``).
    """

    status_code: int
    title: str
    detail: str

    def __str__(self) -> str:
        return f"{self.title}: {self.detail}"


@attrs.frozen(kw_only=True)
class JobSummary:
    """A job as listed by ``GET /jobs`` and in a service's detail: no parameters."""

    id: str
    status: JobStatus
    date_submitted: datetime


@attrs.frozen(kw_only=True)
class Job:
    """A job with its parameters and results.

    ``service_id`` is known when the job was read through its service (submit, next,
    queue, jobs) and None when read by id alone: TopChef's job view does not name the
    service.  ``results`` is None until a worker sets them.
    """

    id: str
    status: JobStatus
    parameters: dict[str, Any] = attrs.field(hash=False)
    results: dict[str, Any] | None = attrs.field(hash=False)
    date_submitted: datetime
    service_id: str | None = None


@attrs.frozen(kw_only=True)
class ServiceSummary:
    """A service as listed by ``GET /services``."""

    id: str
    name: str
    description: str


@attrs.frozen(kw_only=True)
class Service:
    """A service's full detail.

    ``timeout`` is the heartbeat timeout in whole seconds: the server reports
    ``has_timed_out`` once more than that has passed since the last check-in.
    ``is_service_available`` is a flag users set; the server never acts on it.
    ``jobs`` lists every job the service ever had, which is why reading a detail gets
    slower as a service ages.
    """

    id: str
    name: str
    description: str
    job_registration_schema: dict[str, Any] = attrs.field(hash=False)
    job_result_schema: dict[str, Any] = attrs.field(hash=False)
    is_service_available: bool
    has_timed_out: bool
    timeout: int
    jobs: tuple[JobSummary, ...] = ()
