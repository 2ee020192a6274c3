"""The services a worker runs: found (or created) at start, then scheduled.

:func:`resolve` turns a handler's registration into the service on the server.
:class:`ServiceRun` is one service's run-time state: its heartbeat and poll timers
and what they last saw.  The heartbeat and poll tasks own the logic; this module
only holds the state they share with health and stats.
"""

from __future__ import annotations

import logging
from datetime import datetime

import attrs

from . import _schemas
from ._client import TopChefClient
from ._handlers import HandlerSpec
from ._lease import Lease, ServiceRole, parse
from ._models import Service
from ._scheduler import Timer
from ._stats import ServiceHealth

__all__ = ["ServiceRun", "resolve"]

_log = logging.getLogger("topchef_worker")


@attrs.define(eq=False)
class ServiceRun:
    """The scheduling state of one registered service."""

    spec: HandlerSpec
    service: Service
    interval: float  # seconds between heartbeats
    check_parameters: _schemas.Check | None
    check_results: _schemas.Check | None
    heartbeat_timer: Timer
    poll_timer: Timer
    lease_timer: Timer
    lease: Lease | None = None  # None: a SHARED service, served by any worker
    last_lease_read: float | None = None  # clock time of the last successful lease step
    heartbeat_failures: int = 0
    last_beat: float | None = None  # clock time of the last successful check-in
    last_heartbeat: datetime | None = None
    poll_in_flight: bool = False
    waiting_for_slot: bool = False
    empty_polls: int = 0
    poll_failures: int = 0
    last_poll: float | None = None  # clock time of the last successful poll
    idle: bool = False  # the last poll found the queue empty
    busy: bool = False  # the last poll claimed a job: claim in batches

    @property
    def id(self) -> str:
        return self.service.id

    @property
    def role(self) -> ServiceRole:
        return ServiceRole.SHARED if self.lease is None else self.lease.role

    @property
    def serving(self) -> bool:
        """Whether this worker checks in and claims for the service now."""
        return self.lease is None or self.lease.role is ServiceRole.ACTIVE

    def health(
        self, now: float, *, poll_limit: float, polling_expected: bool, in_flight: int
    ) -> ServiceHealth:
        """This service's part of the health report."""
        heartbeat_age = None if self.last_beat is None else now - self.last_beat
        poll_age = None if self.last_poll is None else now - self.last_poll
        if self.role is ServiceRole.STANDBY:
            # It must not check in or poll: healthy while it reads the lease.
            read_age = None if self.last_lease_read is None else now - self.last_lease_read
            beating = polling = read_age is not None and read_age < poll_limit
        else:
            beating = heartbeat_age is not None and heartbeat_age < self.service.timeout
            polling = not polling_expected or (poll_age is not None and poll_age < poll_limit)
        return ServiceHealth(
            service_id=self.id,
            name=self.service.name,
            timeout=self.service.timeout,
            last_heartbeat_age=heartbeat_age,
            last_poll_age=poll_age,
            in_flight=in_flight,
            role=self.role,
            healthy=beating and polling,
        )


def resolve(client: TopChefClient, spec: HandlerSpec) -> Service:
    """Find the service a handler is for, creating it if described and missing.

    Find-or-create is safe to repeat (a service created by a lost answer is found
    the next time), so the caller retries it as a whole.
    """
    if spec.service_id is not None:
        return client.service(spec.service_id)
    wanted = spec.service
    assert wanted is not None
    for summary in client.services():
        if summary.name != wanted.name:
            continue
        candidate = client.service(summary.id)
        if (
            candidate.job_registration_schema == wanted.job_registration_schema
            and candidate.job_result_schema == wanted.job_result_schema
        ):
            if wanted.timeout is not None and candidate.timeout != wanted.timeout:
                marker = parse(candidate.description)[1]
                if marker is not None and not marker.released and not candidate.has_timed_out:
                    # A PATCH is a check-in, and a standby must not send one; the
                    # active worker keeps the timeout it works to.
                    _log.warning(
                        "service %r (%s) has a timeout of %d s, not %d s; left as it is "
                        "while %s serves it",
                        wanted.name,
                        candidate.id,
                        candidate.timeout,
                        wanted.timeout,
                        marker.who,
                    )
                else:
                    candidate = client.update_service(candidate.id, timeout=wanted.timeout)
            _log.info("using service %r (%s)", wanted.name, candidate.id)
            return candidate
    created = client.create_service(
        name=wanted.name,
        description=wanted.description,
        job_registration_schema=wanted.job_registration_schema,
        job_result_schema=wanted.job_result_schema,
        timeout=wanted.timeout,
    )
    # Two workers started together may both have created it: each uses the first
    # one the server lists, so that they meet on one service.
    for summary in client.services():
        if summary.id == created.id:
            break
        if summary.name != wanted.name:
            continue
        first = client.service(summary.id)
        if (
            first.job_registration_schema == wanted.job_registration_schema
            and first.job_result_schema == wanted.job_result_schema
        ):
            _log.warning(
                "service %r was created twice (by another worker starting at the same "
                "time); using the first, %s, and leaving %s unused",
                wanted.name,
                first.id,
                created.id,
            )
            return first
    _log.info("created service %r (%s)", wanted.name, created.id)
    return created
