"""A started worker's parts, put together, and taken apart in order at stop.

:class:`Runtime` is built once the server answered and every service was found.
It only wires the parts (the scheduler, the heartbeat and poll tasks, the job pool,
the job runs and their delivery) and runs the stop sequence:

1. stop claiming, and release the leases held (see :mod:`._standby`); with
   ``cancel=True`` put the jobs not started back at once;
2. let running jobs finish and their outcomes be delivered, until the timeout;
3. at the timeout, put back every job not finished, give owed outcomes one last
   quick try, and within :data:`~topchef_worker._settings.STOP_MARGIN` keep what is
   still owed in the outbox (or name it in an ERROR log line);
4. stop heartbeats and the scheduler, and shut the pools down.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from datetime import datetime

from . import _schemas
from ._arguments import redact
from ._capacity import Capacity
from ._context import Context
from ._delivery import Delivery
from ._handlers import HandlerSpec
from ._health import ACTIVE
from ._heartbeat import Heartbeats
from ._identity import load as load_identity
from ._lease import DETAIL_SHARE, Lease, Listing, ServiceRole
from ._ledger import Outcome
from ._lost import LostServices
from ._models import Service
from ._poll import Polling
from ._pools import Pools, PoolSource
from ._recovery import recover
from ._runs import Runs
from ._scheduler import Timer
from ._services import ServiceRun
from ._settings import STOP_MARGIN
from ._standby import Standby
from ._stats import Health, ServiceHealth, WorkerState, WorkerStats

__all__ = ["Runtime", "stats_without_runtime"]

_log = logging.getLogger("topchef_worker")


class Runtime:
    """The parts of a started worker."""

    def __init__(
        self,
        ctx: Context,
        resolved: Sequence[tuple[HandlerSpec, Service]],
        *,
        pools: dict[str, PoolSource],
        on_idle: Callable[[], None],
    ) -> None:
        self.ctx = ctx
        settings = ctx.settings
        identity, self.memory = load_identity(settings.journal)
        self._identity, self._listing = identity, Listing(ctx.clock)  # one GET /services
        self.services = [
            _service_run(spec, service, settings.heartbeat_interval) for spec, service in resolved
        ]
        exclusive = [
            svc
            for svc in self.services
            if (svc.spec.exclusive if svc.spec.exclusive is not None else settings.exclusive)
        ]
        self._detail_share = DETAIL_SHARE / max(1, len(exclusive))
        for svc in exclusive:
            svc.lease = self._lease(svc.service)
        self.capacity = Capacity(
            settings.max_jobs,
            settings.overrun_limit,
            {svc.id: svc.spec.concurrency for svc in self.services},
            on_release=self._slot_freed,
        )
        self.pools = Pools(
            pools,
            {svc.spec.pool for svc in self.services},
            # Room for the calls that overran their timeout, so that they never keep
            # a newly claimed job from starting at once.
            default_size=settings.max_jobs + settings.overrun_limit,
            cond=ctx.cond,
            counts=ctx.counts,
            health=ctx.health,
            retire=self._retire,
        )
        self.runs = Runs(ctx, self.capacity, self.pools)
        self.heartbeats = Heartbeats(ctx, self.services)
        self.polling = Polling(ctx, self.services, self.capacity, self.pools, self.runs, on_idle)
        self.standby = Standby(
            ctx, self.services, self.heartbeats, self.polling, self.runs, self.memory
        )
        lost = LostServices(ctx, rebind=self._rebind)
        self.heartbeats.lost = self.polling.lost = self.standby.lost = lost

    @property
    def delivery(self) -> Delivery:
        return self.runs.delivery

    def begin(self, left: tuple[list[Outcome], dict[str, str]]) -> None:
        """Open the job pool, start the scheduler, beat and poll, and settle what
        an earlier run *left* (its outbox and journal)."""
        self.pools.open((svc.spec.pool, svc.spec.fn) for svc in self.services)
        self.ctx.scheduler.start()
        outcomes, claims = left
        kept = {outcome.job_id for outcome in outcomes}  # delivered, not put back
        with self.ctx.cond:
            claims = self.standby.begin({j: s for j, s in claims.items() if j not in kept})
        recover(
            self.delivery,
            outbox=outcomes,
            journal=claims,
            on_orphan={svc.id: svc.spec.on_orphan for svc in self.services},
        )
        _log.info(
            "worker started on %s: %d service(s) (%s), max_jobs=%d, pools: %s",
            redact(self.ctx.settings.url or ""),
            len(self.services),
            ", ".join(
                f"{svc.service.name!r} {svc.id}{'' if svc.lease else ' (shared)'}"
                for svc in self.services
            ),
            self.ctx.settings.max_jobs,
            self.pools.describe(),
        )

    def _lease(self, service: Service) -> Lease:
        return Lease(
            service.id,
            self._identity,
            self.ctx.clock,
            service.timeout,
            settle=self.ctx.settings.lease_settle,
            listing=self._listing,
            detail_share=self._detail_share,
        )

    def _rebind(self, svc: ServiceRun, service: Service) -> None:
        """Serve *svc* under *service*, the record it was registered again as (lock
        held): what was kept under its old id moves, and its exclusive lease is
        elected anew."""
        old = svc.id
        self.heartbeats.pause(svc)
        self.polling.pause(svc)
        for source in ("heartbeats", "polls", "lease"):
            self.ctx.health.forget(f"{source} of service {old}")
        fresh = _service_run(svc.spec, service, self.ctx.settings.heartbeat_interval)
        for field in ("service", "interval", "last_beat", "last_heartbeat", "last_poll"):
            setattr(svc, field, getattr(fresh, field))
        svc.heartbeat_failures = svc.poll_failures = svc.empty_polls = 0
        svc.idle = svc.busy = False
        self.capacity.rename(old, service.id)
        if svc.lease is not None:
            self.standby.rejoin(svc, self._lease(service))
        else:
            self.heartbeats.serve(svc)
            self.polling.serve(svc)

    def _slot_freed(self, service_id: str) -> None:
        self.polling.slot_freed(service_id)
        self.ctx.cond.notify_all()

    def _retire(self, pool: Executor) -> None:
        self.ctx.launcher.launch(
            self.ctx.io_pool,
            "shutting a broken job pool down",
            lambda: pool.shutdown(wait=False, cancel_futures=True),
        )

    # -- observation ------------------------------------------------------------------

    def idle(self) -> bool:
        """Every queue was found empty and nothing is in flight."""
        with self.ctx.cond:
            return self.polling.idle() and not self.runs.in_flight and not self.delivery.busy

    def stats(self, state: WorkerState) -> WorkerStats:
        """The worker's counters and what is in flight now (lock held)."""
        return stats_without_runtime(
            self.ctx.counts,
            state,
            in_flight=self.runs.in_flight,
            last_heartbeat={svc.id: svc.last_heartbeat for svc in self.services},
            overrun=self.runs.overrun,
            owed=self.delivery.owed,
            roles={svc.id: svc.role for svc in self.services},
        )

    def health(self, now: float, problems: list[str]) -> Health:
        """The health report (lock held)."""
        services, reasons = self.service_health(now)
        alive = self.ctx.health.state in ACTIVE and self.ctx.scheduler.alive
        if self.pools.unusable is not None:
            alive = False
        return self.ctx.health.report(
            alive=alive,
            in_flight=self.runs.in_flight,
            services=services,
            problems=problems + reasons,
        )

    def service_health(self, now: float) -> tuple[list[ServiceHealth], list[str]]:
        """Each service's health, and the reasons of those that are not healthy."""
        ctx = self.ctx
        poll_limit = max(3 * ctx.settings.idle_poll_interval(len(self.services)), 10.0)
        reports, reasons = [], []
        with ctx.cond:
            free = self.capacity.has_room()
            for svc in self.services:
                expected = free and self.capacity.has_room(svc.id) and not svc.waiting_for_slot
                report = svc.health(
                    now,
                    poll_limit=poll_limit,
                    polling_expected=expected,
                    in_flight=self.runs.per_service(svc.id),
                )
                reports.append(report)
                if svc.role is ServiceRole.STANDBY:
                    if not report.healthy:
                        reasons.append(f"service {svc.id}: its lease could not be read lately")
                    continue
                if (
                    report.last_heartbeat_age is None
                    or report.last_heartbeat_age >= svc.service.timeout
                ):
                    reasons.append(f"service {svc.id}: no check-in within its timeout")
                elif not report.healthy:
                    reasons.append(f"service {svc.id}: no successful poll for {poll_limit:g} s")
        return reports, reasons

    # -- stopping ---------------------------------------------------------------------

    def settled(self) -> bool:
        with self.ctx.cond:
            return not self.runs.in_flight and not self.polling.in_flight and not self.delivery.busy

    def stop(self, deadline: Callable[[], float | None], cancel: Callable[[], bool]) -> None:
        """The stop sequence; *deadline* and *cancel* are read again as it goes, since
        a later ``stop()`` call (or a second signal) may hurry it."""
        ctx = self.ctx
        self.polling.end()
        self.standby.end()  # a standby elsewhere takes over while running jobs finish
        self.runs.requeue_waiting()  # an attempt it would not start
        if cancel():
            self.runs.requeue_unstarted()
        drained = self._wait(self.settled, deadline, cancel)
        left: list[Outcome] = []
        # Past the timeout, everything below fits in STOP_MARGIN, whatever happens,
        # with a second left for the listeners and the threads to end.
        end = ctx.clock() + STOP_MARGIN - 1.5
        if not drained:
            ctx.hurry.set()
            _log.warning("stop timeout expired: putting back the jobs not finished")
            self.runs.requeue_unstarted()
            self.runs.interrupt_running()
            self.delivery.hurry()
            self._wait(self.settled, lambda: end - 1.0, lambda: False)
            left = self.delivery.abandon()
        self.heartbeats.end()
        ctx.scheduler.stop(timeout=max(0.0, min(0.5, end - ctx.clock())))
        remaining = None if drained and deadline() is None else max(0.0, end - ctx.clock())
        idle = ctx.launcher.wait_idle(remaining, ctx.clock)
        if not idle:
            _log.warning(
                "a request to the server is still waiting for its answer; its thread ends "
                "when it does (request_timeout)"
            )
        ctx.close(wait=idle)
        self.pools.close(wait=not self.runs.overrun)  # no call runs: the threads end now
        self._report_left(left)
        with ctx.cond:
            claiming = sorted(self.polling.claiming)
        if claiming:
            _log.error(
                "the claim of %d job(s) was still waiting for the server's answer when the "
                "worker stopped; if it lands, these jobs stay WORKING until a start with "
                "the journal (or an operator) puts them back: %s",
                len(claiming),
                ", ".join(claiming),
            )

    def _wait(
        self,
        done: Callable[[], bool],
        deadline: Callable[[], float | None],
        cancel: Callable[[], bool],
    ) -> bool:
        ctx = self.ctx
        requeued = False
        with ctx.cond:
            while not done():
                if cancel() and not requeued:
                    requeued = True
                    self.runs.requeue_unstarted()
                limit = deadline()
                remaining = None if limit is None else limit - ctx.clock()
                if remaining is not None and remaining <= 0:
                    return False
                ctx.cond.wait(0.25 if remaining is None else min(remaining, 0.25))
            return True

    def _report_left(self, left: list[Outcome]) -> None:
        if not left:
            return
        listed = ", ".join(f"{outcome.job_id} {outcome.status.value}" for outcome in left)
        outbox = self.ctx.outbox
        if outbox is not None and outbox.path.exists():
            _log.warning(
                "%d undelivered outcome(s) kept in %s, for the next start: %s",
                len(left),
                outbox.path,
                listed,
            )
        else:
            where = (
                "no outbox" if outbox is None else f"the outbox {outbox.path} could not be written"
            )
            _log.error(
                "%d outcome(s) could NOT be delivered and are lost (%s); these jobs "
                "stay WORKING on the server: %s",
                len(left),
                where,
                listed,
            )


def _service_run(
    spec: HandlerSpec, service: Service, heartbeat_interval: float | None
) -> ServiceRun:
    interval = heartbeat_interval or service.timeout / 3.0
    if interval >= service.timeout:
        _log.warning(
            "heartbeat interval %.3g s is not below service %s's timeout of %d s: "
            "it will appear timed out",
            interval,
            service.id,
            service.timeout,
        )
    return ServiceRun(
        spec=spec,
        service=service,
        interval=interval,
        check_parameters=_schemas.checker(
            service.job_registration_schema, f"the registration schema of service {service.id}"
        ),
        check_results=_schemas.checker(
            service.job_result_schema, f"the result schema of service {service.id}"
        ),
        heartbeat_timer=Timer(f"heartbeat of service {service.id}", lambda: None),
        poll_timer=Timer(f"poll of service {service.id}", lambda: None),
        lease_timer=Timer(f"lease of service {service.id}", lambda: None),
    )


def stats_without_runtime(
    counts: Counter[str],
    state: WorkerState,
    *,
    in_flight: int = 0,
    last_heartbeat: dict[str, datetime | None] | None = None,
    overrun: int = 0,
    owed: int = 0,
    roles: dict[str, ServiceRole] | None = None,
) -> WorkerStats:
    """The stats from the counters (and, when running, what is in flight)."""
    return WorkerStats(
        state=state,
        claimed=counts["claimed"],
        completed=counts["completed"],
        failed=counts["failed"],
        requeued=counts["requeued"],
        in_flight=in_flight,
        polls=counts["polls"],
        empty_polls=counts["empty_polls"],
        poll_errors=counts["poll_errors"],
        heartbeats_sent=counts["heartbeats_sent"],
        heartbeats_failed=counts["heartbeats_failed"],
        last_heartbeat=last_heartbeat or {},
        overrun=overrun,
        undelivered=counts["undelivered"] + owed,
        pool_rebuilds=counts["pool_rebuilds"],
        task_errors=counts["task_errors"],
        retries=counts["retries"],
        roles=roles or {},
    )
