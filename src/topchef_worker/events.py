"""What happens in a worker, as typed events for listeners.

``worker.add_listener(callback)`` calls *callback* with each event, in order, on one
thread of the worker's own: a slow listener delays other listeners, never heartbeats
or jobs, and a listener that raises is logged and kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from ._lease import ServiceRole
    from ._stats import WorkerState

__all__ = [
    "Event",
    "HeartbeatFailed",
    "JobClaimed",
    "JobCompleted",
    "JobFailed",
    "JobRequeued",
    "JobRetrying",
    "JobStarted",
    "PollFailed",
    "RoleChanged",
    "StateChanged",
]


@attrs.frozen(kw_only=True)
class Event:
    """The base of every event; ``time`` is the wall-clock time (Unix seconds)."""

    time: float


@attrs.frozen(kw_only=True)
class JobClaimed(Event):
    """A job was claimed.  ``claim_latency``: seconds from the poll that saw it to
    the confirmed PATCH to WORKING."""

    job_id: str
    service_id: str
    claim_latency: float


@attrs.frozen(kw_only=True)
class JobStarted(Event):
    """A claimed job was handed to the job pool."""

    job_id: str
    service_id: str


@attrs.frozen(kw_only=True)
class JobCompleted(Event):
    """A job's results were delivered with COMPLETED.  ``duration``: seconds from
    start to the handler's return."""

    job_id: str
    service_id: str
    duration: float


@attrs.frozen(kw_only=True)
class JobFailed(Event):
    """A job ended ERROR (or its outcome could not be delivered: ``delivered``)."""

    job_id: str
    service_id: str
    duration: float
    error: str
    delivered: bool = True


@attrs.frozen(kw_only=True)
class JobRequeued(Event):
    """A claimed job was put back to REGISTERED."""

    job_id: str
    service_id: str
    reason: str


@attrs.frozen(kw_only=True)
class JobRetrying(Event):
    """A job's handler raised an error its ``retry_on`` names: ``attempt`` (2 for the
    first retry) starts after ``delay`` seconds."""

    job_id: str
    service_id: str
    attempt: int
    delay: float
    error: str


@attrs.frozen(kw_only=True)
class HeartbeatFailed(Event):
    """A check-in failed; the worker retries."""

    service_id: str
    error: str


@attrs.frozen(kw_only=True)
class PollFailed(Event):
    """A poll (or the claim after it) failed; the worker retries."""

    service_id: str
    error: str


@attrs.frozen(kw_only=True)
class StateChanged(Event):
    """The worker moved from ``old`` to ``new`` state."""

    old: WorkerState
    new: WorkerState


@attrs.frozen(kw_only=True)
class RoleChanged(Event):
    """This worker became the ``role`` (active or standby) for a service, and why:
    another worker holds it, released it or stopped checking in."""

    service_id: str
    role: ServiceRole
    reason: str
