"""How a job's end is told: a counter, an event for listeners, and a log line.

Kept apart from delivery, which decides *whether* an outcome landed, so that every
end of a job is counted, emitted and logged the same way.  Called with the worker's
lock held (counters and events), logging included.
"""

from __future__ import annotations

import logging
import time

from ._context import Context
from ._logging import job_extra
from ._models import JobStatus
from .events import Event, JobCompleted, JobFailed, JobRequeued

__all__ = ["announce_delivered", "announce_lost"]

_log = logging.getLogger("topchef_worker")

_COUNTERS = {
    JobStatus.COMPLETED: "completed",
    JobStatus.ERROR: "failed",
    JobStatus.REGISTERED: "requeued",
}


def announce_delivered(
    ctx: Context,
    job_id: str,
    service_id: str,
    status: JobStatus,
    *,
    duration: float,
    error: str,
    reason: str,
) -> None:
    """A job's outcome landed: COMPLETED, ERROR, or back to REGISTERED."""
    now = time.time()
    event: Event
    extra = job_extra(job_id, service_id)
    if status is JobStatus.COMPLETED:
        event = JobCompleted(time=now, job_id=job_id, service_id=service_id, duration=duration)
    elif status is JobStatus.ERROR:
        event = JobFailed(
            time=now, job_id=job_id, service_id=service_id, duration=duration, error=error
        )
    else:
        event = JobRequeued(time=now, job_id=job_id, service_id=service_id, reason=reason)
    ctx.counts[_COUNTERS.get(status, "requeued")] += 1
    ctx.emit(event)
    if status is JobStatus.REGISTERED:
        _log.info("job %s put back to REGISTERED: %s", job_id, reason, extra=extra)
    else:
        _log.info(
            "job %s of service %s: %s in %.3f s",
            job_id,
            service_id,
            status.value,
            duration,
            extra={**extra, "status": status.value, "duration": duration},
        )


def announce_lost(ctx: Context, job_id: str, service_id: str, *, duration: float, why: str) -> None:
    """A job's outcome could not be delivered and was given up on."""
    ctx.counts["undelivered"] += 1
    ctx.emit(
        JobFailed(
            time=time.time(),
            job_id=job_id,
            service_id=service_id,
            duration=duration,
            error=why,
            delivered=False,
        )
    )
    _log.error(
        "job %s of service %s: %s; it stays WORKING on the server",
        job_id,
        service_id,
        why,
        extra=job_extra(job_id, service_id),
    )
