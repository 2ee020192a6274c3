"""Polls and claims: the next job of a service, taken only with a slot for it.

``GET .../jobs/next`` does not claim; ``PATCH /jobs/<id> {"status": "WORKING"}``
does, unconditionally.  When a service's poll timer falls due, a slot is reserved
first (or the service waits for one), then the poll and the claim run as one task
on the I/O pool, and the slot passes to the claimed job.  One poll per service is
in flight at a time, and a job is claimed before its service is polled again.

Empty polls back off exponentially with jitter up to the idle poll interval (see
:meth:`Settings.idle_poll_interval`); a poll that claimed a job polls again at once.

Two things must never block a service's queue: a job this worker holds that was
put back to REGISTERED by someone else (the next one not held is taken from
``/queue`` instead), and a job too large to read (it ends ERROR, named in the log).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import attrs

from ._capacity import Capacity, Slot
from ._context import Context
from ._jobrun import Decision, JobRun
from ._ledger import LedgerError, Outcome
from ._logging import job_extra
from ._lost import LostServices
from ._models import Job, JobStatus
from ._policy import poll_delay
from ._pools import Pools
from ._runs import Runs
from ._services import ServiceRun
from .events import JobClaimed, JobFailed, PollFailed
from .exceptions import JobNotFoundError, ResponseTooLargeError, TopChefError, is_transient

__all__ = ["Polling"]

_log = logging.getLogger("topchef_worker")

#: Most jobs one poll claims: what one ``GET /services/<id>/queue`` names.
_BATCH = 10
#: Tries of a claim before it is given up and the job put back (a few seconds).
_CLAIM_ATTEMPTS = 6


class Polling:
    """Polls every service when it is due and a slot is free."""

    def __init__(
        self,
        ctx: Context,
        services: list[ServiceRun],
        capacity: Capacity,
        pools: Pools,
        runs: Runs,
        on_idle: Callable[[], None],
    ) -> None:
        self._ctx = ctx
        self._services = services
        self._capacity = capacity
        self._pools = pools
        self._runs = runs
        self._on_idle = on_idle
        self._waiting: dict[str, ServiceRun] = {}  # due, but no slot was free
        self.claiming: set[str] = set()  # jobs whose claim is being sent
        self.lost: LostServices | None = None  # told of a 404 for the service
        retry = ctx.settings.retry
        self._claim_policy = attrs.evolve(
            retry, attempts=_CLAIM_ATTEMPTS if retry.attempts is None else retry.attempts
        )
        self._running = True
        for svc in services:
            svc.poll_timer.action = lambda svc=svc: self._due(svc)  # type: ignore[misc]

    def serve(self, svc: ServiceRun) -> None:
        """Poll *svc* from now on (lock held)."""
        if self._running:
            self._ctx.scheduler.rearm(svc.poll_timer, 0.0)

    def pause(self, svc: ServiceRun) -> None:
        """Poll *svc* no more (lock held); a poll in flight claims nothing more."""
        self._ctx.scheduler.cancel(svc.poll_timer)
        self._waiting.pop(svc.id, None)
        svc.waiting_for_slot = False

    def end(self) -> None:
        """Poll no more."""
        with self._ctx.cond:
            self._running = False
            self._waiting.clear()
            for svc in self._services:
                self._ctx.scheduler.cancel(svc.poll_timer)

    @property
    def in_flight(self) -> int:
        with self._ctx.cond:
            return sum(1 for svc in self._services if svc.poll_in_flight)

    def idle(self) -> bool:
        """Every queue was found empty (or is served by another worker), and
        nothing is in flight."""
        with self._ctx.cond:
            return all(
                (svc.idle or (svc.lease is not None and svc.lease.waits()))
                and not svc.poll_in_flight
                for svc in self._services
            )

    def slot_freed(self, service_id: str) -> None:
        """A slot was given back (lock held): services waiting for one poll now."""
        if not self._running or not self._waiting:
            return
        for svc in list(self._waiting.values()):
            if self._capacity.has_room(svc.id):
                del self._waiting[svc.id]
                svc.waiting_for_slot = False
                self._ctx.scheduler.arm(svc.poll_timer)

    # -- the poll task ----------------------------------------------------------------

    def _due(self, svc: ServiceRun) -> None:
        """The poll timer fell due (scheduler thread, lock held)."""
        ctx = self._ctx
        if not self._running or ctx.stopping.is_set() or svc.poll_in_flight:
            return
        if self._pools[svc.spec.pool].unusable is not None:
            return  # the pool cannot run jobs: claim nothing (said once, loudly)
        if not svc.serving:
            return  # a standby: serve() polls again
        if svc.lease is not None and not svc.lease.claimable(ctx.clock()):
            # Not checked in lately: another worker may take over soon.
            ctx.scheduler.rearm(svc.poll_timer, ctx.settings.poll_interval)
            return
        # A busy queue (the last poll claimed a job): as many slots as the service
        # has room for, up to what one /queue answer names.  Otherwise one, for the
        # cheaper jobs/next, and so that idle services and those waiting for a slot
        # are never starved by one that takes them all.
        busy = svc.busy and not self._waiting
        wanted = min(self._capacity.room(svc.id), _BATCH) if busy else 1
        held: list[Slot | None] = []
        for _ in range(max(1, wanted)):
            slot = self._capacity.reserve(svc.id)
            if slot is None:
                break
            held.append(slot)
        if not held:
            svc.waiting_for_slot = True
            self._waiting[svc.id] = svc
            return
        svc.poll_in_flight = True
        # `held`: the slots, until each passes to a claimed job; [None] once the
        # task's own bookkeeping ran.
        ctx.launcher.launch(
            ctx.io_pool,
            f"poll of service {svc.id}",
            lambda: self._poll(svc, held),
            cleanup=lambda: self._after(svc, held),
        )

    def _poll(self, svc: ServiceRun, held: list[Slot | None]) -> None:
        """Read the head of the queue, claim as many jobs as slots are held, start
        them, and schedule the next poll."""
        ctx = self._ctx
        found: list[Job] = []
        claimed = 0
        failure: TopChefError | None = None
        first = False
        try:
            found = self._read(svc, len(held))
            for job in found:
                if ctx.stopping.is_set() or not self._may_claim(svc):
                    break
                claimed += self._take(svc, job, held)
        except ResponseTooLargeError as error:
            self._oversized(svc, error)
        except TopChefError as error:
            failure = error
        gone = failure is not None and self.lost is not None and self.lost.report(svc, failure)
        with ctx.cond:
            svc.poll_in_flight = False
            ctx.counts["polls"] += 1
            if failure is None:
                ctx.health.answered(f"polls of service {svc.id}")
                svc.poll_failures = 0
                svc.last_poll = ctx.clock()
            svc.busy = claimed > 0
            if claimed:
                svc.empty_polls = 0
                svc.idle = False
                # There may be more: poll again at once, or as soon as a slot is free.
                if self._capacity.has_room(svc.id):
                    ctx.scheduler.rearm(svc.poll_timer, 0.0)
                else:
                    svc.waiting_for_slot = True
                    self._waiting[svc.id] = svc
            elif failure is not None:
                svc.idle = False
                svc.poll_failures += 1
                first = not gone and (svc.poll_failures == 1 or not is_transient(failure))
                ctx.counts["poll_errors"] += 1
                if is_transient(failure):
                    ctx.health.failed(f"polls of service {svc.id}", failure, svc.id)
                ctx.emit(PollFailed(time=time.time(), service_id=svc.id, error=str(failure)))
                delay = ctx.settings.retry.wait(svc.poll_failures, failure, ctx.rand())
                ctx.scheduler.rearm(svc.poll_timer, delay)
            else:
                svc.empty_polls += 1
                svc.idle = not found
                if not found:
                    ctx.counts["empty_polls"] += 1
                delay = poll_delay(
                    svc.empty_polls,
                    minimum=ctx.settings.min_poll_interval,
                    maximum=ctx.settings.idle_poll_interval(len(self._services)),
                    jitter=ctx.settings.jitter,
                    rand=ctx.rand,
                )
                ctx.scheduler.rearm(svc.poll_timer, delay)
            for slot in held:  # slots no job was claimed with
                if slot is not None:
                    slot.release()
            held[:] = [None]  # bookkeeping done: the cleanup must not redo it
        if failure is not None:
            _log.log(
                logging.WARNING if first else logging.DEBUG,
                "poll of service %s failed: %s",
                svc.id,
                failure,
                extra={"service_id": svc.id},
            )
        if not claimed and svc.idle and self.idle() and not self._runs.in_flight:
            self._on_idle()

    def _read(self, svc: ServiceRun, slots: int) -> list[Job]:
        """The jobs at the head of the queue, oldest first, at most *slots* of them.

        One free slot: ``jobs/next``, the cheapest answer.  More: ``/queue``, which
        costs the server as much (it loads the service's whole history either way)
        and names up to ten jobs, so that a busy queue takes a fraction of a poll a
        job.  A job this worker holds, or settled after the read was sent, is left.
        """
        if svc.lease is None:
            return self._read_shared(svc, slots)
        client, runs = self._ctx.client, self._runs
        asked_at = self._ctx.clock()
        if slots == 1:
            job = client.next_job(svc.id)
            if job is None:
                return []
            if not runs.stale(job.id, asked_at):
                return [job]
            head = self._first_not_held(svc)
            return [] if head is None else [head]
        jobs = [job for job in client.queue(svc.id) if not runs.stale(job.id, asked_at)]
        return jobs[:slots]

    def _read_shared(self, svc: ServiceRun, slots: int) -> list[Job]:
        """A random pick of the head of the queue: other workers read the same head
        at the same time, and taking the oldest would claim the same jobs."""
        asked_at = self._ctx.clock()
        jobs = [
            job for job in self._ctx.client.queue(svc.id) if not self._runs.stale(job.id, asked_at)
        ]
        return sorted(jobs, key=lambda _: self._ctx.rand())[:slots]

    def _take(self, svc: ServiceRun, job: Job, held: list[Slot | None]) -> int:
        """Claim *job* with one of the *held* slots and start it; 1 if claimed."""
        ctx = self._ctx
        seen_at = ctx.clock()
        if svc.lease is None and not self._still_queued(job):
            claimed = unconfirmed = None  # another worker claimed it since the read
        else:
            claimed, unconfirmed = self._claim(svc, job)
        if claimed is not None and claimed.results is not None and not self._may_claim(svc):
            self._restore(svc, claimed)
            claimed = None
        with ctx.cond:
            slot = held.pop()
            assert slot is not None
            taken = claimed or unconfirmed
            if taken is None:
                slot.release()
                return 0
            run = JobRun(job=taken, service=svc, slot=slot)
            self._runs.add(run)
            if claimed is not None:
                ctx.counts["claimed"] += 1
                ctx.emit(
                    JobClaimed(
                        time=time.time(),
                        job_id=job.id,
                        service_id=svc.id,
                        claim_latency=ctx.clock() - seen_at,
                    )
                )
        if claimed is None:
            self._runs.decide(
                run, Decision.requeue("its claim could not be confirmed", started=False)
            )
            return 1
        try:
            self._runs.start(run)
        except BaseException as error:
            self._runs.decide(run, Decision.failure(error))  # it never stays WORKING
            raise
        return 1

    def _still_queued(self, job: Job) -> bool:
        """Whether *job* is still REGISTERED, read just before a shared service's
        claim: the PATCH succeeds for every worker, so this read is the only chance
        to see that another worker claimed it since the queue was read."""
        try:
            return self._ctx.client.job(job.id).status is JobStatus.REGISTERED
        except JobNotFoundError:
            return False

    def _after(self, svc: ServiceRun, held: list[Slot | None]) -> None:
        """Whatever happened, give back an unused slot and keep the service polled."""
        with self._ctx.cond:
            if held == [None]:
                return  # the task's bookkeeping ran (a next poll may be in flight)
            svc.poll_in_flight = False
            for slot in held:
                if slot is not None:
                    slot.release()
            held[:] = [None]
            if (
                self._running
                and svc.serving
                and svc.poll_timer.due is None
                and not svc.waiting_for_slot
            ):
                self._ctx.scheduler.arm(svc.poll_timer, self._ctx.settings.poll_interval)

    def _first_not_held(self, svc: ServiceRun) -> Job | None:
        """The oldest queued job this worker does not hold, when the head of the
        queue is one it holds (someone put it back to REGISTERED while it runs here)
        or has just settled (the poll was answered before that landed)."""
        asked_at = self._ctx.clock()
        for job in self._ctx.client.queue(svc.id):
            if not self._runs.stale(job.id, asked_at):
                return job
        return None

    def _claim(self, svc: ServiceRun, job: Job) -> tuple[Job | None, Job | None]:
        """PATCH *job* to WORKING: (claimed, None), or (None, job) when the claim may
        have been applied but was not confirmed (it must be put back), or
        (None, None) when it surely was not."""
        ctx = self._ctx
        extra = job_extra(job.id, svc.id)
        if ctx.journal is not None:
            try:
                ctx.journal.claimed(job.id, svc.id)  # before: a crash may follow
            except LedgerError as error:
                _log.error("not claiming job %s: %s", job.id, error, extra=extra)
                raise _NotClaimedError(str(error)) from error
        with ctx.cond:
            self.claiming.add(job.id)
        try:
            # Bounded, so that an outage does not hold an I/O thread per service: a
            # claim not confirmed in time is put back like any other outcome.
            confirmed = self._claim_policy.call(
                lambda: self._send_claim(svc, job),
                stop=ctx.stopping,
                on_retry=self._on_retry(job.id, svc.id),
                rand=ctx.rand,
            )
        except (JobNotFoundError, _LeaseLapsedError):
            self._journal_done(job.id)
            return None, None
        except TopChefError as error:
            status = getattr(error, "status_code", None)
            if is_transient(error) or (isinstance(status, int) and 200 <= status < 300):
                # No answer, or one the server sent after applying it: the claim may
                # have been applied, so the job is put back (and stays journaled).
                _log.warning(
                    "could not confirm the claim of job %s (%s); putting it back",
                    job.id,
                    error,
                    extra=extra,
                )
                return None, attrs.evolve(job, service_id=svc.id)
            self._journal_done(job.id)
            _log.error("could not claim job %s: %s", job.id, error, extra=extra)
            return None, None
        finally:
            with ctx.cond:
                self.claiming.discard(job.id)
        ctx.health.answered("claims")
        return attrs.evolve(confirmed, service_id=svc.id), None

    def _restore(self, svc: ServiceRun, job: Job) -> None:
        """The lease lapsed while the claim of *job* was on its way (this worker was
        paused), and the job has results: another worker finished it meanwhile.
        Put it back as it was, COMPLETED with its results, rather than run it again."""
        _log.warning(
            "job %s was finished by another worker while this one's claim was on its "
            "way (its lease lapsed meanwhile); putting it back COMPLETED",
            job.id,
            extra=job_extra(job.id, svc.id),
        )
        self._runs.delivery.redeliver(
            Outcome(
                job_id=job.id,
                service_id=svc.id,
                status=JobStatus.COMPLETED,
                results=job.results,
            ),
            reason="finished by another worker while this one was paused",
            in_outbox=False,
        )

    def _may_claim(self, svc: ServiceRun) -> bool:
        """Whether *svc* may be claimed from now: this worker serves it, and (for an
        exclusive service) has checked in lately.  Read again before each claim: a
        worker paused mid-poll (a VM, SIGSTOP) must not claim from a queue it read
        before another worker took over."""
        lease = svc.lease
        return svc.serving and (lease is None or lease.claimable(self._ctx.clock()))

    def _send_claim(self, svc: ServiceRun, job: Job) -> Job:
        if not self._may_claim(svc):
            raise _LeaseLapsedError(f"not claiming job {job.id}: the lease of {svc.id} lapsed")
        return self._ctx.client.update_job(job.id, status=JobStatus.WORKING)

    def _journal_done(self, job_id: str) -> None:
        if self._ctx.journal is not None:
            try:
                self._ctx.journal.done(job_id)
            except LedgerError as error:
                _log.error("%s", error)

    def _on_retry(
        self, job_id: str, service_id: str
    ) -> Callable[[BaseException, int, float], None]:
        def note(error: BaseException, attempt: int, delay: float) -> None:
            if isinstance(error, TopChefError) and is_transient(error):
                self._ctx.health.failed("claims", error)
            _log.log(
                logging.WARNING if attempt == 1 else logging.DEBUG,
                "claiming job %s failed (attempt %d), retrying in %.2g s: %s",
                job_id,
                attempt,
                delay,
                error,
                extra=job_extra(job_id, service_id),
            )

        return note

    def _oversized(self, svc: ServiceRun, error: ResponseTooLargeError) -> None:
        """End the job at the head of the queue that is too large to read."""
        ctx = self._ctx
        client = ctx.client
        for summary in client.service(svc.id).jobs:
            if summary.status is not JobStatus.REGISTERED or self._runs.holds(summary.id):
                continue
            try:
                client.job(summary.id)
            except ResponseTooLargeError:
                pass
            else:
                return  # readable: the poll will take it
            try:
                client.update_job(summary.id, status=JobStatus.ERROR)
            except ResponseTooLargeError as answer:
                if answer.status_code != 200:
                    raise
            with ctx.cond:
                ctx.counts["failed"] += 1
                ctx.emit(
                    JobFailed(
                        time=time.time(),
                        job_id=summary.id,
                        service_id=svc.id,
                        duration=0.0,
                        error=str(error),
                    )
                )
            _log.error(
                "job %s of service %s is too large to read (over max_response_bytes=%d); "
                "ended ERROR so that the jobs after it run",
                summary.id,
                svc.id,
                client.max_response_bytes,
                extra=job_extra(summary.id, svc.id),
            )
            return


class _NotClaimedError(TopChefError):
    """The journal could not record a claim, so the job was not claimed."""


class _LeaseLapsedError(TopChefError):
    """The service's lease lapsed (or was lost) before the claim was sent."""
