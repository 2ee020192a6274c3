"""Snapshots of a worker's state for callers and monitoring."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import attrs

from ._lease import ServiceRole

__all__ = ["Health", "ServiceHealth", "WorkerState", "WorkerStats"]


class WorkerState(str, enum.Enum):
    """Where a worker is in its life.

    STANDBY is RUNNING while every one of its services is served by another worker
    (see ``exclusive``): it claims nothing and takes over when that worker stops.
    DEGRADED is RUNNING with trouble: the server does not answer (the worker keeps
    retrying, and is RUNNING again as soon as it does), too many handler calls
    overran their timeout (the worker claims nothing until they end), or its job
    pool cannot run jobs.  STARTING lasts until the server answered and every
    service was found; a worker that cannot start (a configuration error) ends
    STOPPED.
    """

    NEW = "NEW"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STANDBY = "STANDBY"
    DEGRADED = "DEGRADED"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"

    def __str__(self) -> str:
        return self.value


def _plain(inst: Any, field: attrs.Attribute[Any] | None, value: Any) -> Any:
    # Enums become their value and times ISO 8601 strings (UTC), so that the result
    # is what ``json.dumps`` and web frameworks' JSON responses accept.
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


def _to_dict(value: Any) -> dict[str, Any]:
    return attrs.asdict(value, value_serializer=_plain)


@attrs.frozen(kw_only=True)
class WorkerStats:
    """Counters since the worker started, and the jobs in flight now.

    Attributes:
        claimed: Jobs claimed (PATCHed to WORKING).
        completed: Jobs reported COMPLETED.
        failed: Jobs reported ERROR.
        requeued: Claimed jobs put back to REGISTERED: not started (or not finished)
            when the worker stopped, a claim that could not be confirmed, a job the
            pool refused or its owner cancelled.
        in_flight: Claimed jobs whose outcome is not yet delivered.
        polls: Polls sent; ``empty_polls`` found nothing, ``poll_errors`` failed.
        heartbeats_sent: Successful check-ins; ``heartbeats_failed`` failed ones.
        last_heartbeat: Per service id, when its last check-in succeeded (UTC).
        overrun: Handler calls still running although their job's outcome is decided:
            it timed out, or the worker's stop timeout expired.
        undelivered: Outcomes the worker could not deliver (yet), and those it gave
            up on: kept in the outbox as soon as a delivery fails, if there is one.
        pool_rebuilds: Times a broken job pool was replaced.
        task_errors: Background tasks that raised (each one logged with its
            traceback).
        retries: Attempts a handler got again after raising an error its
            ``retry_on`` names.
        roles: Per service id, whether this worker serves it (active), waits for
            another worker that does (standby), or shares it (shared).
    """

    state: WorkerState
    claimed: int = 0
    completed: int = 0
    failed: int = 0
    requeued: int = 0
    in_flight: int = 0
    polls: int = 0
    empty_polls: int = 0
    poll_errors: int = 0
    heartbeats_sent: int = 0
    heartbeats_failed: int = 0
    last_heartbeat: dict[str, datetime | None] = attrs.field(factory=dict, hash=False)
    overrun: int = 0
    undelivered: int = 0
    pool_rebuilds: int = 0
    task_errors: int = 0
    retries: int = 0
    roles: dict[str, ServiceRole] = attrs.field(factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """These counters as plain JSON values: enums as their values, times as
        ISO 8601 strings, ``None`` kept.  ``json.dumps(stats.to_dict())`` works, and
        so does returning it from a Flask or FastAPI route."""
        return _to_dict(self)


@attrs.frozen(kw_only=True)
class ServiceHealth:
    """How one service is served: its ``role`` (active, standby or shared), ages in
    seconds since the last success (None: never), and its jobs in flight.  A standby
    is healthy while it reads the lease: it must not check in or poll."""

    service_id: str
    name: str
    timeout: int
    last_heartbeat_age: float | None
    last_poll_age: float | None
    in_flight: int
    healthy: bool
    role: ServiceRole = ServiceRole.SHARED


@attrs.frozen(kw_only=True)
class Health:
    """Whether a worker is really working, not only alive.

    ``alive`` (liveness): this process works: its scheduler runs, and nothing of
    its own stops it from working; a TopChef outage does not make it dead.
    ``ready`` (readiness): it can take jobs now: started, its job pool usable, not
    over its overrun cap, and the server answering for at least one service.  ``healthy``: ready,
    every service's last check-in younger than its timeout, and every service
    that has a free slot polled within a few of its poll intervals.  ``reasons``
    says what is wrong when not healthy.
    """

    state: WorkerState
    alive: bool
    healthy: bool
    ready: bool
    in_flight: int
    services: tuple[ServiceHealth, ...]
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """This report as plain JSON values (``services`` a list of dicts, states and
        roles as strings), for a web route or a log line: see
        :meth:`WorkerStats.to_dict`."""
        return _to_dict(self)
