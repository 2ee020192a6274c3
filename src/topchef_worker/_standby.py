"""Who serves each service: this worker, or another one it stands by for.

:mod:`._lease` is the protocol; this module runs it.  A service registered with
``exclusive=True`` (the default) starts as a standby: its lease is stepped on a
timer, one short task at a time on the heartbeat pool, and no check-in or poll is
sent for it.  When the lease becomes this worker's, the service's heartbeats and
polls begin, and what its earlier holder left WORKING goes back to the queue.  When
a check-in finds another holder's marker, or the lease lapses in an outage, the
service steps down: its polls and check-ins stop (running jobs finish) and the
lease is watched again.  At stop, the lease is released so that a standby elsewhere
takes over at once.

A service registered with ``exclusive=False`` is SHARED: served from the start,
with no lease.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ._context import Context
from ._delivery import Delivery
from ._heartbeat import Heartbeats
from ._identity import Memory
from ._lease import CHECK, Lease, ServiceRole
from ._ledger import LedgerError, Outcome
from ._lost import LostServices
from ._models import JobStatus
from ._poll import Polling
from ._runs import Runs
from ._scheduler import Timer
from ._services import ServiceRun
from .events import RoleChanged
from .exceptions import TopChefError

__all__ = ["Standby"]

_log = logging.getLogger("topchef_worker")

#: Seconds a release at stop is tried for (well within ``STOP_MARGIN``).
_RELEASE_TIME = 2.5


class Standby:
    """Steps the lease of every exclusive service, and turns services on and off."""

    def __init__(
        self,
        ctx: Context,
        services: list[ServiceRun],
        heartbeats: Heartbeats,
        polling: Polling,
        runs: Runs,
        memory: Memory,
    ) -> None:
        self._ctx = ctx
        self._memory = memory
        self._services = services
        self._heartbeats = heartbeats
        self._polling = polling
        self._runs = runs
        self._running = True
        self._failures: dict[str, int] = {}
        self._told: dict[str, ServiceRole] = {}  # the role last announced, per service
        #: Claims an earlier run journaled, per exclusive service: settled only once
        #: this worker serves it, and only if nobody else did in between.
        self._inherited: dict[str, dict[str, str]] = {}
        self.lost: LostServices | None = None  # told of a 404 for the service
        heartbeats.on_lost = self.step_down
        for svc in services:
            if svc.lease is not None:
                svc.lease_timer.action = lambda svc=svc: self._due(svc)  # type: ignore[misc]

    @property
    def _delivery(self) -> Delivery:
        return self._runs.delivery

    def begin(self, claims: dict[str, str]) -> dict[str, str]:
        """Serve the shared services now and watch the others' leases.  Returns the
        journaled *claims* to settle now (those of shared services)."""
        now: dict[str, str] = {}
        # Claims of a service the earlier run released are its own, whoever serves
        # it now: a worker that takes over from a release puts nothing back.
        exclusive = {
            svc.id
            for svc in self._services
            if svc.lease is not None and svc.id not in self._memory.released_before
        }
        for job_id, service_id in claims.items():
            if service_id in exclusive:
                self._inherited.setdefault(service_id, {})[job_id] = service_id
            else:
                now[job_id] = service_id
        with self._ctx.cond:
            for svc in self._services:
                if svc.lease is None:
                    self._emit(svc, "registered with exclusive=False")
                    self._serve(svc)
                else:
                    self._ctx.scheduler.arm(svc.lease_timer)
        return now

    def end(self) -> None:
        """Watch no more leases, and release those this worker holds (at stop), so
        that a standby elsewhere takes over without waiting for a timeout."""
        ctx = self._ctx
        with ctx.cond:
            self._running = False
            for svc in self._services:
                ctx.scheduler.cancel(svc.lease_timer)
            held = [svc for svc in self._services if self._holds(svc)]
        for svc in held:
            self._launch_release(svc)

    def _holds(self, svc: ServiceRun) -> bool:
        """Whether *svc*'s marker may be this worker's: active, or written and not
        read back yet (a stop then must not leave it looking active)."""
        lease = svc.lease
        return lease is not None and (lease.role is ServiceRole.ACTIVE or lease.candidate)

    def _launch_release(self, svc: ServiceRun) -> None:
        # Critical: a stop from an atexit hook (an embedding application's) finds every
        # pool refusing work, and a skipped release leaves the next worker waiting a
        # whole timeout.
        self._ctx.launcher.launch(
            self._ctx.heartbeat_pool,
            f"release of service {svc.id}",
            self._releaser(svc),
            critical=True,
        )

    def _releaser(self, svc: ServiceRun) -> Callable[[], None]:
        return lambda: self._release(svc)

    # -- the lease task ---------------------------------------------------------------

    def _due(self, svc: ServiceRun) -> None:
        """The lease timer fell due (scheduler thread, lock held)."""
        if not self._running or self._ctx.stopping.is_set():
            return
        # On the I/O pool: a detail read may be slow, and check-ins must not queue
        # behind it.
        self._ctx.launcher.launch(
            self._ctx.io_pool,
            f"lease of service {svc.id}",
            lambda: self._step(svc),
            cleanup=lambda: self._next(svc),
        )

    def _step(self, svc: ServiceRun) -> None:
        ctx = self._ctx
        lease = svc.lease
        assert lease is not None
        source = f"lease of service {svc.id}"
        try:
            delay = lease.step(ctx.requests)
        except TopChefError as error:
            gone = self.lost is not None and self.lost.report(svc, error)
            with ctx.cond:
                failures = self._failures[svc.id] = self._failures.get(svc.id, 0) + 1
                if not gone:
                    ctx.health.failed(source, error, svc.id)
                # Never later than CHECK: after an outage the holder must take its
                # lease back before a standby's GRACE runs out.
                wait = ctx.settings.retry.wait(failures, error, ctx.rand())
                ctx.scheduler.rearm(svc.lease_timer, min(wait, CHECK))
            _log.log(
                logging.WARNING if failures == 1 and not gone else logging.DEBUG,
                "reading the lease of service %s failed: %s",
                svc.id,
                error,
                extra={"service_id": svc.id},
            )
            return
        with ctx.cond:
            self._failures.pop(svc.id, None)
            ctx.health.answered(source)
            if self.lost is not None:
                self.lost.answered(svc)
            svc.last_lease_read = ctx.clock()
            if not self._running or ctx.stopping.is_set():
                # The stop came while this step ran: a marker it wrote (or read back
                # as this worker's) must not be left looking active.
                if self._holds(svc):
                    self._launch_release(svc)
                return
            if lease.role is ServiceRole.ACTIVE:
                self._activated(svc)
                return
            holder = lease.holder
            if holder is not None and holder.id != lease.identity.id:
                self._forget_inherited(svc, holder.who)
            if lease.waits() and holder is not None:
                self._emit(svc, f"served by {holder.who}")
            self._standing_by()
            ctx.scheduler.rearm(svc.lease_timer, delay)

    def _next(self, svc: ServiceRun) -> None:
        with self._ctx.cond:
            if (
                self._running
                and svc.role is ServiceRole.STANDBY
                and svc.lease_timer.due is None
                and not self._ctx.stopping.is_set()
            ):
                self._ctx.scheduler.arm(svc.lease_timer, CHECK)

    # -- turning a service on and off -------------------------------------------------

    def _activated(self, svc: ServiceRun) -> None:
        """The lease became this worker's (lock held)."""
        lease = svc.lease
        assert lease is not None
        previous = lease.previous
        if previous is None:
            why = "the service had no holder"
        elif previous.released:
            why = f"{previous.who} released it"
        elif previous.id == lease.identity.id:
            why = "this worker held it before (its earlier run ended without releasing it)"
        else:
            why = f"{previous.who} stopped checking in"
        _log.info(
            "service %s (%r): this worker is now ACTIVE: %s",
            svc.id,
            svc.service.name,
            why,
            extra={"service_id": svc.id},
        )
        self._emit(svc, why)
        self._serve(svc)
        self._memory.note(svc.id, released=False)
        mine = previous is None or previous.id == lease.identity.id
        inherited = self._inherited.pop(svc.id, {})
        if inherited and mine:
            self._settle_inherited(svc, inherited)
        elif inherited:
            self._forget(svc, inherited, previous.who if previous else "another worker")
        if previous is not None and not previous.released:
            self._take_over(svc, previous.who, skip=set(inherited), attempt=1)
        wanted = svc.spec.service.timeout if svc.spec.service is not None else None
        if wanted is not None and wanted != lease.timeout:
            self._ctx.launcher.launch(
                self._ctx.io_pool,
                f"setting the timeout of service {svc.id}",
                lambda: self._set_timeout(svc, wanted),
            )
        self._standing_by()

    def _set_timeout(self, svc: ServiceRun, seconds: int) -> None:
        """Give the service the timeout its handler asks for, now that this worker
        is the one that checks in (a standby must not send the PATCH)."""
        ctx = self._ctx
        try:
            service = ctx.client.update_service(svc.id, timeout=seconds)
        except TopChefError as error:
            _log.warning(
                "could not set service %s's timeout to %d s: %s",
                svc.id,
                seconds,
                error,
                extra={"service_id": svc.id},
            )
            return
        with ctx.cond:
            lease = svc.lease
            assert lease is not None
            lease.timeout = service.timeout
            svc.service = service
            svc.interval = ctx.settings.heartbeat_interval or service.timeout / 3.0
            if svc.serving:
                self._heartbeats.serve(svc)  # the next check-in within the new period
        _log.info(
            "service %s's timeout is now %d s",
            svc.id,
            service.timeout,
            extra={"service_id": svc.id},
        )

    def _serve(self, svc: ServiceRun) -> None:
        self._heartbeats.serve(svc)
        self._polling.serve(svc)

    def step_down(self, svc: ServiceRun, reason: str, *, lapsed: bool = False) -> None:
        """Stop serving *svc*: another holder was found (or the lease lapsed)."""
        ctx = self._ctx
        lease = svc.lease
        assert lease is not None
        with ctx.cond:
            if lease.role is not ServiceRole.ACTIVE:
                return
            lease.step_down(lapsed=lapsed)
            self._heartbeats.pause(svc)
            self._polling.pause(svc)
            # A standby neither checks in nor polls: their last failures say nothing
            # about it any more, and must not keep it DEGRADED (and unready).
            for source in ("heartbeats", "polls"):
                ctx.health.forget(f"{source} of service {svc.id}")
            running = self._runs.per_service(svc.id)
            self._emit(svc, reason)
            if self._running and not ctx.stopping.is_set():
                ctx.scheduler.arm(svc.lease_timer, 0.0 if lapsed else CHECK)
            self._standing_by()
        _log.warning(
            "service %s: this worker is now a STANDBY and claims nothing more (%s)%s",
            svc.id,
            reason,
            f"; its {running} running job(s) finish here" if running else "",
            extra={"service_id": svc.id},
        )

    def _emit(self, svc: ServiceRun, reason: str) -> None:
        """Announce the service's role, if it changed (lock held)."""
        if self._told.get(svc.id) is svc.role:
            return
        self._told[svc.id] = svc.role
        self._ctx.emit(
            RoleChanged(time=time.time(), service_id=svc.id, role=svc.role, reason=reason)
        )

    def rejoin(self, svc: ServiceRun, lease: Lease) -> None:
        """Elect anew for *svc*, registered again under a new id, with *lease* (its
        new one): serve nothing for it until elected (lock held)."""
        self._heartbeats.pause(svc)
        self._polling.pause(svc)
        svc.lease = lease
        if self._running and not self._ctx.stopping.is_set():
            self._ctx.scheduler.rearm(svc.lease_timer, 0.0)
        self._emit(svc, "registered again, under a new id")
        self._standing_by()

    def _standing_by(self) -> None:
        """Tell health whether every service waits for another worker (lock held)."""
        self._ctx.health.standing_by(
            all(svc.role is ServiceRole.STANDBY for svc in self._services)
            and any(svc.lease is not None and svc.lease.waits() for svc in self._services)
        )

    def _release(self, svc: ServiceRun) -> None:
        lease = svc.lease
        assert lease is not None
        ctx = self._ctx
        # Tried again for a few seconds: one lost answer must not make a standby wait
        # a whole timeout.  Within the stop's margin, and cut short by a hurried stop.
        give_up_at = ctx.clock() + _RELEASE_TIME
        wait = 0.1
        while True:
            try:
                released = lease.release(ctx.requests)
                break
            except TopChefError as error:
                if ctx.clock() + wait > give_up_at or ctx.hurry.wait(wait):
                    _log.warning(
                        "could not release service %s (%s): a standby takes over once it "
                        "has not checked in for its timeout",
                        svc.id,
                        error,
                        extra={"service_id": svc.id},
                    )
                    return
                wait *= 2
        with self._ctx.cond:
            self._heartbeats.pause(svc)  # the next holder checks in from now on
        if released:
            self._memory.note(svc.id, released=True)
            _log.info(
                "released service %s for the next worker", svc.id, extra={"service_id": svc.id}
            )

    # -- what earlier holders left ----------------------------------------------------

    def _take_over(self, svc: ServiceRun, holder: str, *, skip: set[str], attempt: int) -> None:
        """Put back (on the I/O pool) the jobs a holder that is gone left WORKING;
        tried again, with the worker's retry waits, until it is done or the worker
        stops (lock held)."""
        ctx = self._ctx

        def attempt_it() -> None:
            try:
                self._put_back(svc, holder, skip)
            except TopChefError as error:
                _log.warning(
                    "service %s: could not read the jobs %s left WORKING (%s); trying again",
                    svc.id,
                    holder,
                    error,
                    extra={"service_id": svc.id},
                )
                with ctx.cond:
                    if ctx.stopping.is_set():
                        return
                    timer = Timer(f"taking over service {svc.id}", lambda: None)
                    timer.action = lambda: self._take_over(
                        svc, holder, skip=skip, attempt=attempt + 1
                    )
                    ctx.scheduler.arm(timer, ctx.settings.retry.wait(attempt, error, ctx.rand()))

        ctx.launcher.launch(ctx.io_pool, f"taking over service {svc.id}", attempt_it)

    def _put_back(self, svc: ServiceRun, holder: str, skip: set[str]) -> None:
        """Put back the jobs a holder that is gone left WORKING: only the active
        worker claims, so they are its, and nobody else will."""
        jobs = [
            summary.id
            for summary in self._ctx.client.service(svc.id).jobs
            if summary.status is JobStatus.WORKING
            and summary.id not in skip
            and not self._runs.holds(summary.id)
        ]
        if not jobs:
            return
        status = JobStatus.ERROR if svc.spec.on_orphan == "error" else JobStatus.REGISTERED
        _log.warning(
            "service %s: %d job(s) left WORKING by %s, which stopped checking in; %s: %s",
            svc.id,
            len(jobs),
            holder,
            "ending them ERROR (on_orphan='error')"
            if status is JobStatus.ERROR
            else "putting them back in the queue",
            ", ".join(jobs),
            extra={"service_id": svc.id},
        )
        for job_id in jobs:
            self._delivery.redeliver(
                Outcome(job_id=job_id, service_id=svc.id, status=status),
                reason=f"left WORKING by {holder}, which stopped checking in",
                in_outbox=False,
            )

    def _settle_inherited(self, svc: ServiceRun, claims: dict[str, str]) -> None:
        status = JobStatus.ERROR if svc.spec.on_orphan == "error" else JobStatus.REGISTERED
        _log.warning(
            "service %s: %d job(s) were claimed by an earlier run that did not finish "
            "them; settling those still WORKING: %s",
            svc.id,
            len(claims),
            ", ".join(claims),
            extra={"service_id": svc.id},
        )
        for job_id in claims:
            self._delivery.redeliver(
                Outcome(job_id=job_id, service_id=svc.id, status=status),
                reason="claimed by an earlier run that did not finish it",
                in_outbox=False,
            )

    def _forget_inherited(self, svc: ServiceRun, holder: str) -> None:
        claims = self._inherited.pop(svc.id, {})
        if claims:
            self._forget(svc, claims, holder)

    def _forget(self, svc: ServiceRun, claims: dict[str, str], holder: str) -> None:
        """Another worker served the service since the earlier run: it put back what
        that run left when it took over, and may be running those jobs now."""
        _log.warning(
            "service %s: %d job(s) claimed by an earlier run of this worker are left "
            "alone: %s has served the service since, and put back what it found "
            "WORKING when it took over (requeue them by hand if they are stuck): %s",
            svc.id,
            len(claims),
            holder,
            ", ".join(claims),
            extra={"service_id": svc.id},
        )
        journal = self._ctx.journal
        if journal is None:
            return
        for job_id in claims:
            try:
                journal.done(job_id)
            except LedgerError as error:
                _log.error("%s", error)
