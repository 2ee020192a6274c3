"""Heartbeats: each service checks in well within its timeout, whatever else happens.

Only ``PATCH /services/<id>`` refreshes a service's ``has_timed_out``; nothing else
the worker sends counts.  Each service has a heartbeat timer; when it falls due, a
check-in is sent on the heartbeat pool, a pool of its own so that a check-in never
waits behind slow polls or deliveries.  Whatever the check-in's outcome, the next
one is scheduled (in the task's cleanup, so even an unexpected error cannot end a
service's heartbeats): a regular period after a success, a retry wait after a
failure, never later than the period.

Only services this worker serves check in (see :mod:`._standby`): a standby's
check-in would keep a dead holder's lease alive.  For an exclusive service each
check-in is followed by a read of the lease; another holder's marker, or two thirds
of the timeout without a check-in, steps the service down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from ._context import Context
from ._lost import LostServices
from ._policy import heartbeat_delay
from ._services import ServiceRun
from .events import HeartbeatFailed
from .exceptions import TopChefError

__all__ = ["Heartbeats"]

_log = logging.getLogger("topchef_worker")


class Heartbeats:
    """Sends every service's check-ins on schedule."""

    def __init__(self, ctx: Context, services: list[ServiceRun]) -> None:
        self._ctx = ctx
        self._services = services
        self._running = True
        #: Called (lock not held) when a service's lease is found lost or lapsed.
        self.on_lost: Callable[..., None] = lambda svc, reason, lapsed=False: None
        self.lost: LostServices | None = None  # told of a 404 for the service
        for svc in services:
            svc.heartbeat_timer.action = lambda svc=svc: self._due(svc)  # type: ignore[misc]

    def serve(self, svc: ServiceRun) -> None:
        """Check in for *svc* from now on (lock held): the first one a period after
        the last (a lease's write was one), or now."""
        if not self._running:
            return
        delay = 0.0
        renewed_at = svc.lease.renewed_at if svc.lease is not None else None
        if renewed_at is not None:
            delay = max(0.0, renewed_at + svc.interval - self._ctx.clock())
            if svc.last_beat is None or svc.last_beat < renewed_at:  # the write was one
                svc.last_beat, svc.last_heartbeat = renewed_at, datetime.now(UTC)
        self._ctx.scheduler.rearm(svc.heartbeat_timer, delay)

    def pause(self, svc: ServiceRun) -> None:
        """Send no more check-ins for *svc* (lock held)."""
        self._ctx.scheduler.cancel(svc.heartbeat_timer)

    def end(self) -> None:
        """Send no more check-ins."""
        with self._ctx.cond:
            self._running = False
            for svc in self._services:
                self._ctx.scheduler.cancel(svc.heartbeat_timer)

    def _due(self, svc: ServiceRun) -> None:
        """The timer fell due (scheduler thread, lock held)."""
        if not self._running or not svc.serving:
            return
        self._ctx.launcher.launch(
            self._ctx.heartbeat_pool,
            f"heartbeat of service {svc.id}",
            lambda: self._beat(svc),
            cleanup=lambda: self._next(svc),
        )

    def _beat(self, svc: ServiceRun) -> None:
        ctx = self._ctx
        sent_at = ctx.clock()
        lost: str | None = None
        try:
            if svc.lease is None:
                ctx.requests.check_in(svc.id)
            else:
                lost = svc.lease.renew(ctx.requests)
        except TopChefError as error:
            gone = self.lost is not None and self.lost.report(svc, error)
            with ctx.cond:
                svc.heartbeat_failures += 1
                first = svc.heartbeat_failures == 1 and not gone
                ctx.counts["heartbeats_failed"] += 1
                if not gone:
                    ctx.health.failed(f"heartbeats of service {svc.id}", error, svc.id)
                ctx.emit(HeartbeatFailed(time=time.time(), service_id=svc.id, error=str(error)))
                # Retried with backoff, but never later than the regular period.
                delay = ctx.settings.retry.wait(svc.heartbeat_failures, error, ctx.rand())
                ctx.scheduler.rearm(svc.heartbeat_timer, min(delay, svc.interval))
                lease = svc.lease
                lapsed = (
                    lease is not None
                    and lease.renewed_at is not None
                    and not lease.claimable(ctx.clock())
                )
            _log.log(
                logging.WARNING if first else logging.DEBUG,
                "heartbeat for service %s failed: %s",
                svc.id,
                error,
                extra={"service_id": svc.id},
            )
            if lapsed:
                self.on_lost(
                    svc,
                    "no check-in for two thirds of the service's timeout: another worker "
                    "may take over; taking the lease back when the server answers",
                    lapsed=True,
                )
            return
        if lost is not None:
            self.on_lost(svc, lost)
            return
        with ctx.cond:
            ctx.health.answered(f"heartbeats of service {svc.id}")
            if self.lost is not None:
                self.lost.answered(svc)
            svc.heartbeat_failures = 0
            svc.last_beat = sent_at
            svc.last_heartbeat = datetime.now(UTC)
            ctx.counts["heartbeats_sent"] += 1
            # From when this one was sent, so a slow server does not stretch the period.
            period = heartbeat_delay(svc.interval, jitter=ctx.settings.jitter, rand=ctx.rand)
            ctx.scheduler.rearm(svc.heartbeat_timer, sent_at + period - ctx.clock())

    def _next(self, svc: ServiceRun) -> None:
        """After any outcome, make sure the next check-in is scheduled."""
        with self._ctx.cond:
            if self._running and svc.serving and svc.heartbeat_timer.due is None:
                self._ctx.scheduler.arm(svc.heartbeat_timer, svc.interval)
