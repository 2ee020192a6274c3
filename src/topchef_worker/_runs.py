"""Claimed jobs on the job pool: started, watched, timed out, settled.

:class:`Runs` keeps the jobs this worker holds, from the claim until their outcome
is settled.  It hands each one to the job pool as a future, decides its outcome when
the future ends (or its deadline passes, or ``stop()`` needs it back), passes the
decision to delivery, and gives the job's slot back once delivery settled it.
"""

from __future__ import annotations

import collections
import logging
import time
from concurrent.futures import BrokenExecutor, Future
from typing import Any

from ._attempts import next_attempt
from ._capacity import Capacity
from ._context import Context
from ._crashes import Isolation
from ._delivery import Delivery
from ._execution import call_handler
from ._jobrun import Decision, JobRun, Phase
from ._logging import job_extra
from ._policy import error_text
from ._pools import Pools, PoolUnavailableError
from ._scheduler import Timer
from .events import JobRetrying, JobStarted
from .exceptions import InvalidParametersError, JobCrashedError, JobTimeoutError

__all__ = ["Runs"]

_log = logging.getLogger("topchef_worker")

#: How many settled jobs' times are kept (a poll is far younger than the oldest).
_REMEMBER = 10_000


class Runs:
    """The jobs a worker holds, and what happens to each."""

    def __init__(self, ctx: Context, capacity: Capacity, pools: Pools) -> None:
        self._ctx = ctx
        self._capacity = capacity
        self._pools = pools
        self._isolation = Isolation()
        self._runs: dict[str, JobRun] = {}
        self._overruns: set[JobRun] = set()
        # When this worker last settled each recent job, so that a poll answered
        # before that settling landed is not taken for a job put back on purpose.
        self._settled_at: collections.OrderedDict[str, float] = collections.OrderedDict()
        self.delivery = Delivery(ctx, self._settled)

    # -- observation (lock held by the caller or taken here) --------------------------

    def holds(self, job_id: str) -> bool:
        """Whether this worker holds the job now."""
        with self._ctx.cond:
            return job_id in self._runs

    def stale(self, job_id: str, asked_at: float) -> bool:
        """Whether a queue read sent at *asked_at* may predate this worker settling
        the job: it holds the job, or settled it after the read was sent.  A job it
        settled before is in the queue because someone put it back: it runs again."""
        with self._ctx.cond:
            settled = self._settled_at.get(job_id)
            return job_id in self._runs or (settled is not None and settled >= asked_at)

    @property
    def in_flight(self) -> int:
        """Jobs held whose outcome is not settled yet."""
        with self._ctx.cond:
            return len(self._runs)

    @property
    def overrun(self) -> int:
        """Handler calls still running after their job's outcome was decided."""
        with self._ctx.cond:
            return len(self._overruns) + sum(1 for run in self._runs.values() if run.overrun)

    def per_service(self, service_id: str) -> int:
        with self._ctx.cond:
            return sum(1 for run in self._runs.values() if run.service.id == service_id)

    # -- a job's life -----------------------------------------------------------------

    def add(self, run: JobRun) -> None:
        """Hold a newly claimed job (lock held)."""
        self._runs[run.id] = run

    def start(self, run: JobRun) -> None:
        """Check a claimed job's parameters and hand it to the job pool."""
        ctx, job, svc = self._ctx, run.job, run.service
        if svc.check_parameters is not None:
            reasons = svc.check_parameters(job.parameters)
            if reasons:
                self.decide(
                    run,
                    Decision.failure(
                        InvalidParametersError(
                            f"job {job.id}: parameters fail the registration schema: "
                            f"{'; '.join(reasons)}",
                            job_id=job.id,
                            service_id=svc.id,
                            reasons=reasons,
                        )
                    ),
                )
                return
        if ctx.stopping.is_set():
            self.decide(run, Decision.requeue("the worker is stopping", started=False))
            return
        self._submit(run)

    def _submit(self, run: JobRun, *, alone: bool = False) -> None:
        """Hand one attempt at *run* to its job pool (*alone*: as the one job the
        pool runs, to learn whether it is the one that breaks it)."""
        ctx, job, svc = self._ctx, run.job, run.service
        with ctx.cond:
            if run.phase not in (Phase.CLAIMED, Phase.SUBMITTED):
                decided = True  # while it waited its turn
            else:
                decided = False
                if not alone and not self._isolation.admit(svc.spec.pool, run):
                    return  # it waits its turn behind the jobs tried alone
                first = run.started_at is None
                run.call_ended = False
                if first:
                    run.started_at = ctx.clock()
        if decided:
            self._kick(run)
            return
        try:
            future, pool = self._pools[svc.spec.pool].submit(
                call_handler,
                svc.spec.fn,
                job.parameters,
                job if svc.spec.pass_job else None,
                svc.spec.pass_job,
            )
        except PoolUnavailableError as error:
            with ctx.cond:
                run.call_ended = True
            _log.error(
                "could not start job %s: %s", job.id, error, extra=job_extra(run.id, run.service.id)
            )
            self.decide(
                run, Decision.requeue(f"the job pool refused it ({error})", started=not first)
            )
            self._kick(run)
            return
        with ctx.cond:
            run.future, run.pool = future, pool
            self._isolation.started(run, pool)
            if run.phase is Phase.CLAIMED:
                run.move(Phase.SUBMITTED)
            if first:
                ctx.emit(JobStarted(time=time.time(), job_id=job.id, service_id=svc.id))
                if svc.spec.timeout is not None:
                    run.deadline = Timer(f"deadline of job {job.id}", lambda: self._expire(run))
                    ctx.scheduler.arm(run.deadline, svc.spec.timeout)
        _log.debug(
            "job %s of service %s started (attempt %d)",
            job.id,
            svc.id,
            run.attempt,
            extra=job_extra(run.id, run.service.id),
        )
        future.add_done_callback(lambda done: self._ended(run, done))

    def _ended(self, run: JobRun, future: Future[Any]) -> None:
        """The handler's call ended (or its future was cancelled)."""
        ctx = self._ctx
        with ctx.cond:
            run.call_ended = True
            if run.pool is not None:
                self._isolation.ended(run, run.pool)
            if run.started_at is not None and run.phase is not Phase.SETTLED:
                run.duration = max(run.duration, ctx.clock() - run.started_at)
            if run.deadline is not None:
                ctx.scheduler.cancel(run.deadline)
            if run.phase is Phase.SETTLED:
                self._call_done(run)
                late = None if future.cancelled() else future.exception()
                if isinstance(late, BrokenExecutor) and run.pool is not None:
                    self._pools[run.service.spec.pool].broke(run.pool, late)
                _log.info(
                    "job %s finished after its outcome was decided; result discarded",
                    run.id,
                    extra=job_extra(run.id, run.service.id),
                )
                self._kick(run)
                return
        decision: Decision | None
        if future.cancelled():
            decision = Decision.requeue("its job pool cancelled it", started=run.attempt > 1)
        elif future.exception() is not None:
            error = future.exception()
            assert error is not None
            if isinstance(error, BrokenExecutor) and run.pool is not None:
                decision = self._broken(run, error)
                if decision is None:
                    return  # tried again, alone
            else:
                decision = self._after_failure(run, error)
                if decision is None:
                    return  # another attempt is scheduled
        else:
            decision = Decision.result(future.result())
        self.decide(run, decision)
        self._kick(run)

    def _broken(self, run: JobRun, error: BaseException) -> Decision | None:
        """*run*'s pool broke while it ran: to blame it, the decision; else None, and
        it is tried again, alone, in the pool that replaced the broken one."""
        ctx, svc = self._ctx, run.service
        assert run.pool is not None
        pools = self._pools[svc.spec.pool]
        pools.broke(run.pool, error)
        if pools.unusable is not None:
            return Decision.requeue(f"its job pool broke ({error})", started=True)
        with ctx.cond:
            if run.phase is not Phase.SUBMITTED:
                return Decision.failure(error)  # decided already: this one is ignored
            if not self._isolation.broke(svc.spec.pool, run):
                timeout = svc.spec.timeout
                if run.deadline is not None and timeout is not None:
                    elapsed = ctx.clock() - (run.started_at or ctx.clock())
                    ctx.scheduler.arm(run.deadline, max(0.0, timeout - elapsed))
                suspect = True
            else:
                suspect = False
        if suspect:
            _log.warning(
                "job %s: its job pool broke while it ran (%s); trying it again, alone",
                run.id,
                error,
                extra=job_extra(run.id, svc.id),
            )
            self._kick(run)
            return None
        crashed = JobCrashedError(
            f"job {run.id}: the process running its handler died ({error})",
            job_id=run.id,
            service_id=svc.id,
        )
        _log.error("%s", crashed, extra=job_extra(run.id, svc.id))
        if svc.spec.on_crash == "requeue":
            return Decision.requeue(str(crashed), started=True)
        return Decision.failure(crashed)

    def _kick(self, run: JobRun) -> None:
        """*run*'s call ended: start the next job waiting its turn in its pool."""
        pool = run.service.spec.pool
        with self._ctx.cond:
            following = self._isolation.next(pool, run)
        if following is not None:
            self._ctx.launcher.launch(
                self._ctx.io_pool,
                f"job {following.id}, alone in its pool",
                lambda: self._submit(following, alone=True),
            )

    def _after_failure(self, run: JobRun, error: BaseException) -> Decision | None:
        """The decision after the handler raised *error*: None when another attempt
        is scheduled (its retry policy allows one), a requeue when it would be but
        the worker is stopping, else the failure."""
        ctx, svc = self._ctx, run.service
        with ctx.cond:
            if run.phase is not Phase.SUBMITTED:
                return Decision.failure(error)  # decided already: ignored
            elapsed = ctx.clock() - (run.started_at or ctx.clock())
            delay = next_attempt(svc.spec, run.attempt, error, elapsed, ctx.rand())
            if delay is None:
                return Decision.failure(error)
            if ctx.stopping.is_set():
                return Decision.requeue(
                    "the worker stopped before it could be tried again", started=True
                )
            run.attempt += 1
            ctx.counts["retries"] += 1
            timeout = svc.spec.timeout
            if run.deadline is not None and timeout is not None:
                # The call's end cancelled it; the timeout counts from the first attempt.
                ctx.scheduler.arm(run.deadline, max(0.0, timeout - elapsed))
            run.retry_timer = Timer(f"attempt {run.attempt} at job {run.id}", lambda: None)
            run.retry_timer.action = lambda: self._retry_due(run)
            ctx.scheduler.arm(run.retry_timer, delay)
            ctx.emit(
                JobRetrying(
                    time=time.time(),
                    job_id=run.id,
                    service_id=svc.id,
                    attempt=run.attempt,
                    delay=delay,
                    error=f"{type(error).__name__}: {error_text(error)}",
                )
            )
        _log.warning(
            "job %s: attempt %d failed (%s: %s); attempt %d in %.2g s",
            run.id,
            run.attempt - 1,
            type(error).__name__,
            error_text(error),
            run.attempt,
            delay,
            extra=job_extra(run.id, svc.id),
        )
        return None

    def _retry_due(self, run: JobRun) -> None:
        """The next attempt is due (scheduler thread, lock held)."""
        run.retry_timer = None
        if run.phase is not Phase.SUBMITTED:
            return  # decided meanwhile: its deadline, or a stop
        # A job tried alone in a pool that broke keeps the pool's turn.
        alone = self._isolation.has_turn(run.service.spec.pool, run)
        self._ctx.launcher.launch(
            self._ctx.io_pool,
            f"attempt {run.attempt} at job {run.id}",
            lambda: (
                self._submit(run, alone=alone)
                if not self._ctx.stopping.is_set()
                else self._between(run)
            ),
        )

    def _between(self, run: JobRun) -> None:
        self.decide(run, Decision.requeue("the worker stopped between two attempts", started=True))
        self._kick(run)

    def _expire(self, run: JobRun) -> None:
        """A job's deadline passed (scheduler thread, lock held)."""
        if run.phase is not Phase.SUBMITTED:
            return
        seconds = run.service.spec.timeout or 0.0
        if run.started_at is not None:
            run.duration = self._ctx.clock() - run.started_at
        # Decided first: cancelling a future that has not started calls its done
        # callback at once, which would otherwise decide a requeue.
        self.decide(
            run,
            Decision.failure(
                JobTimeoutError(
                    f"job {run.id} did not finish within its timeout of {seconds:g} s",
                    job_id=run.id,
                    service_id=run.service.id,
                    seconds=seconds,
                )
            ),
        )
        if run.future is not None and not run.future.cancel():
            self._interrupt(run)  # a coroutine (or a Dask task) can be stopped
        self._kick(run)

    def _interrupt(self, run: JobRun) -> None:
        """Stop *run*'s running call, if its pool can (an event loop, a cluster)."""
        interrupt = getattr(run.pool, "interrupt", None)
        if callable(interrupt) and run.future is not None:
            interrupt(run.future)

    def decide(self, run: JobRun, decision: Decision) -> None:
        """Decide *run*'s outcome, if nothing did first, and deliver it."""
        with self._ctx.cond:
            if not run.decide(decision):
                return
        self.delivery.deliver(run)

    def _settled(self, run: JobRun) -> None:
        """Delivery settled *run* (lock held): give its slot back."""
        run.move(Phase.SETTLED)
        if self._runs.get(run.id) is run:
            del self._runs[run.id]
        self._settled_at[run.id] = self._ctx.clock()
        self._settled_at.move_to_end(run.id)
        while len(self._settled_at) > _REMEMBER:
            self._settled_at.popitem(last=False)
        if run.call_ended:
            run.slot.release()
        else:
            run.slot.release_global(overrun=True)
            self._overruns.add(run)
            self._overloaded()

    def _call_done(self, run: JobRun) -> None:
        run.slot.release()
        self._overruns.discard(run)
        self._overloaded()

    def _overloaded(self) -> None:
        overloaded = self._capacity.overloaded
        self._ctx.health.condition(
            "overrun",
            f"{self._capacity.overruns} handler calls still run after their timeout; "
            "claiming nothing until they end"
            if overloaded
            else None,
        )

    # -- stopping ---------------------------------------------------------------------

    def requeue_unstarted(self) -> None:
        """Take back the jobs the pool has not started, and requeue them."""
        with self._ctx.cond:
            queued = [
                run
                for run in self._runs.values()
                if run.phase is Phase.SUBMITTED and run.future is not None and run.future.cancel()
            ]

        for run in queued:
            self.decide(
                run,
                Decision.requeue(
                    "it had not started when the worker stopped", started=run.attempt > 1
                ),
            )
        self.requeue_waiting()
        with self._ctx.cond:
            stoppable = [
                run
                for run in self._runs.values()
                if run.phase is Phase.SUBMITTED
                and run.future is not None
                and not run.future.done()
                and getattr(run.pool, "interrupts_at_stop", False)
            ]
        for run in stoppable:  # running coroutines: put back, then cancelled
            self.decide(
                run, Decision.requeue("it was cancelled when the worker stopped", started=True)
            )
            self._interrupt(run)
        with self._ctx.cond:
            turns = self._isolation.drain()
        for run in turns:
            self.decide(
                run,
                Decision.requeue(
                    "it was waiting its turn when the worker stopped", started=run.breaks > 0
                ),
            )

    def requeue_waiting(self) -> None:
        """Put back the jobs waiting between two attempts: a stop will not wait for
        an attempt it would not start."""
        with self._ctx.cond:
            waiting = [
                run
                for run in self._runs.values()
                if run.phase is Phase.SUBMITTED and run.retry_timer is not None
            ]
            for run in waiting:
                timer, run.retry_timer = run.retry_timer, None
                if timer is not None:
                    self._ctx.scheduler.cancel(timer)
        for run in waiting:
            self._between(run)

    def interrupt_running(self) -> None:
        """Requeue every job whose outcome is not decided (stop's timeout expired)."""
        with self._ctx.cond:
            running = [
                run for run in self._runs.values() if run.phase in (Phase.CLAIMED, Phase.SUBMITTED)
            ]
        for run in running:
            self.decide(
                run,
                Decision.requeue(
                    "it was still running when the worker's stop timeout expired", started=True
                ),
            )
            if getattr(run.pool, "interrupts_at_stop", False):
                self._interrupt(run)
