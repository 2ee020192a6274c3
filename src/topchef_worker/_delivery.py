"""Delivery: a decided outcome sent to the server, until it lands or is given up.

An outcome is a list of reports, most informative first: COMPLETED with results;
or ERROR with the handler's ``error_results``, then ERROR alone, the fallback the
server cannot reject; or REGISTERED, to put a job back in the queue.  Each try is
one short task on the I/O pool, never a retry loop holding a thread:

* a transient failure (no answer, 5xx) makes the outcome *owed*: it is written to
  the outbox at once, when there is one, and the scheduler tries it again after the
  retry policy's wait, for as long as the worker runs;
* a refusal that repeating cannot cure (400 for the results, 413 from a proxy,
  401/403, a redirect, HTML with a 200) moves on to the next report, so a job whose
  results cannot be delivered still ends ERROR instead of staying WORKING;
* 500 for every try of the same results while the server answers everything else
  (a result schema the server cannot apply does that) is such a refusal too, after
  a few tries.

When ``stop()``'s timeout has expired, owed outcomes get one last, quick try; what is
still owed then stays in the outbox, or is named in an ERROR log line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs

from ._announce import announce_delivered, announce_lost
from ._context import Context
from ._jobrun import JobRun, Kind
from ._ledger import LedgerError, Outcome
from ._logging import job_extra
from ._models import JobStatus
from ._policy import Report, error_reports, error_text, success_reports
from ._scheduler import Timer
from ._schemas import server_reasons
from .exceptions import (
    InvalidResultsError,
    JobError,
    JobNotFoundError,
    RejectedError,
    ResponseTooLargeError,
    ServerError,
    TopChefError,
    is_transient,
)

__all__ = ["Delivery", "describe"]

_log = logging.getLogger("topchef_worker")

#: Tries of the same results answered 5xx in a row, while the server answers other
#: requests, before the results are taken to be what the server cannot handle (at
#: the random 10 % of 5xx of a soak test, a chance of one in 10^8).
_SERVER_REFUSALS = 8


@attrs.define(eq=False)
class _Pending:
    """One outcome on its way to the server."""

    job_id: str
    service_id: str
    reports: list[Report]
    timer: Timer
    run: JobRun | None = None  # None for an outcome left by an earlier run
    error: BaseException | None = None  # why the job failed, if it did
    failures: int = 0  # transient failures of the current report in a row
    refusals: int = 0  # ... of which 5xx answers in a row
    answers_then: int = 0  # the server's answers count at the first of them
    owed: bool = False  # kept in the outbox
    check_first: bool = False  # send only if the job is still WORKING
    reason: str = ""  # why a job is put back to REGISTERED
    done: bool = False
    tasks: int = 0  # tasks under way for it

    @property
    def extra(self) -> dict[str, str]:
        return job_extra(self.job_id, self.service_id)

    @property
    def outcome(self) -> Outcome:
        report = self.reports[0]
        return Outcome(
            job_id=self.job_id,
            service_id=self.service_id,
            status=report.status,
            results=report.results,
        )


def describe(error: BaseException) -> str:
    """An error in one line: TopChef's errors say enough, others get their type."""
    if isinstance(error, TopChefError):
        return error_text(error)
    return f"{type(error).__name__}: {error_text(error)}"


class Delivery:
    """Sends decided outcomes and keeps those not delivered yet.

    Args:
        ctx: The worker's shared parts.
        on_settled: Called (lock held) with a run once its outcome is settled.
    """

    def __init__(self, ctx: Context, on_settled: Callable[[JobRun], None]) -> None:
        self._ctx = ctx
        self._on_settled = on_settled
        self._pending: dict[str, _Pending] = {}

    @property
    def owed(self) -> int:
        """Outcomes that failed to deliver at least once and are not delivered yet."""
        with self._ctx.cond:
            return sum(1 for pending in self._pending.values() if pending.owed)

    @property
    def busy(self) -> bool:
        """Whether any outcome is still on its way."""
        with self._ctx.cond:
            return bool(self._pending)

    # -- starting ---------------------------------------------------------------------

    def deliver(self, run: JobRun) -> None:
        """Deliver a decided run's outcome, on the I/O pool."""
        decision = run.decision
        assert decision is not None
        pending = self._track(run.id, run.service.id, [], run=run)
        self._launch(pending, lambda: self._plan(pending))

    def redeliver(self, outcome: Outcome, *, reason: str, in_outbox: bool) -> None:
        """Deliver an outcome an earlier run left (in the outbox, or a claim in the
        journal), if the job is still WORKING: someone else may have settled it."""
        report = Report(outcome.status, outcome.results)
        pending = self._track(outcome.job_id, outcome.service_id, [report])
        pending.owed = in_outbox
        pending.check_first = True
        pending.reason = reason
        self._launch(pending, lambda: self._attempt(pending))

    def _track(
        self, job_id: str, service_id: str, reports: list[Report], run: JobRun | None = None
    ) -> _Pending:
        pending = _Pending(
            job_id=job_id,
            service_id=service_id,
            reports=reports,
            run=run,
            timer=Timer(f"deliver job {job_id}", lambda: None),
        )
        pending.timer.action = lambda: self._launch(pending, lambda: self._attempt(pending))
        with self._ctx.cond:
            self._pending[job_id] = pending
        return pending

    def _launch(self, pending: _Pending, task: Callable[[], None]) -> None:
        with self._ctx.cond:
            pending.tasks += 1

        def cleanup() -> None:
            # Whatever went wrong in the task, the outcome must go on: if nothing
            # else is under way for it, fall back to the next report or give up.
            with self._ctx.cond:
                pending.tasks -= 1
                stranded = (
                    not pending.done
                    and pending.tasks == 0
                    and pending.timer.due is None
                    and not self._ctx.hurry.is_set()
                )
            if not stranded:
                return
            bare = Report(JobStatus.ERROR)
            if pending.reports and pending.reports[0] == bare:
                self._give_up(pending, "an unexpected error while delivering it")
            else:
                # The last resort the server cannot reject: ERROR alone.
                pending.reports = [bare]
                self._launch(pending, lambda: self._attempt(pending))

        self._ctx.launcher.launch(
            self._ctx.io_pool,
            f"delivering job {pending.job_id}",
            task,
            cleanup=cleanup,
            critical=True,
        )

    def _plan(self, pending: _Pending) -> None:
        """Turn the run's decision into reports, then send the first."""
        run = pending.run
        assert run is not None
        decision = run.decision
        assert decision is not None
        svc = run.service
        if decision.kind is Kind.REQUEUE:
            pending.reports = [Report(JobStatus.REGISTERED)]
        elif decision.kind is Kind.RESULT:
            plan = success_reports(
                decision.value, job_id=run.id, service_id=svc.id, check=svc.check_results
            )
            if isinstance(plan, InvalidResultsError):
                self._fail(pending, plan)
            else:
                pending.reports = list(plan)
        else:
            assert decision.error is not None
            self._fail(pending, decision.error)
        self._attempt(pending)

    def _fail(self, pending: _Pending, error: BaseException) -> None:
        """Plan the ERROR reports for a failed job, and log why it failed."""
        pending.error = error
        svc = pending.run.service if pending.run is not None else None
        _log.error(
            "job %s of service %s failed: %s",
            pending.job_id,
            pending.service_id,
            describe(error),
            extra=pending.extra,
            exc_info=None if isinstance(error, TopChefError) else error,
        )
        reports, notes = error_reports(
            error,
            error_results=svc.spec.error_results if svc is not None else None,
            check=svc.check_results if svc is not None else None,
        )
        for note in notes:
            _log.warning("job %s: %s", pending.job_id, note, extra=pending.extra)
        pending.reports = list(reports)

    # -- one try ----------------------------------------------------------------------

    def _attempt(self, pending: _Pending) -> None:
        with self._ctx.cond:
            if pending.done:
                return
        report = pending.reports[0]
        if pending.check_first and not self._still_working(pending):
            return
        try:
            self._ctx.requests.update_job(
                pending.job_id, status=report.status, results=report.results
            )
        except ResponseTooLargeError as error:
            if error.status_code != 200:
                self._refused(pending, error)
                return
            # Applied: only the answer (the job, with its parameters) was too big.
        except TopChefError as error:
            self._refused(pending, error)
            return
        self._delivered(pending, report)

    def _still_working(self, pending: _Pending) -> bool:
        """Whether the job is still WORKING; if not, drop the outcome (False)."""
        try:
            job = self._ctx.requests.job(pending.job_id)
        except JobNotFoundError:
            status = "gone"
        except TopChefError as error:
            self._refused(pending, error)
            return False
        else:
            if job.status is JobStatus.WORKING:
                pending.check_first = False
                return True
            status = job.status.value
        if self._close(pending):
            self._forget(pending)
            with self._ctx.cond:
                self._settled(pending)
            _log.info(
                "job %s is %s already; the outcome an earlier run left for it is dropped",
                pending.job_id,
                status,
                extra=pending.extra,
            )
        return False

    def _forget(self, pending: _Pending, *, journal: bool = True) -> None:
        """Remove a settled outcome from the outbox and (if *journal*) the journal;
        a job given up on stays journaled, for the next start to settle."""
        ctx = self._ctx
        try:
            if journal and ctx.journal is not None:
                ctx.journal.done(pending.job_id)
            if ctx.outbox is not None and pending.owed:
                ctx.outbox.discard(pending.job_id)
        except LedgerError as error:
            _log.error(
                "job %s: %s",
                pending.job_id,
                error,
                extra=pending.extra,
            )

    def _refused(self, pending: _Pending, error: TopChefError) -> None:
        report = pending.reports[0]
        extra = pending.extra
        if is_transient(error) and not self._server_cannot(pending, error):
            self._retry_later(pending, error)
            return
        if isinstance(error, JobNotFoundError):
            self._give_up(pending, "the job no longer exists on the server")
            return
        if report.status is JobStatus.COMPLETED:
            reasons = (
                server_reasons(error.errors, "rejected")
                if isinstance(error, RejectedError)
                else [describe(error)]
            )
            failure: JobError = InvalidResultsError(
                f"job {pending.job_id}: the server rejected the results: {'; '.join(reasons)}",
                job_id=pending.job_id,
                service_id=pending.service_id,
                reasons=reasons,
            )
            self._fail(pending, failure)
            pending.failures = pending.refusals = 0
            self._attempt(pending)
            return
        _log.warning(
            "job %s: the server refused %s: %s", pending.job_id, _name(report), error, extra=extra
        )
        pending.reports.pop(0)
        self._next_or_give_up(pending, f"the server refused every outcome (last: {error})")

    def _server_cannot(self, pending: _Pending, error: TopChefError) -> bool:
        """Whether 5xx answers to these results mean the server cannot take them."""
        with self._ctx.cond:
            return (
                isinstance(error, ServerError)
                and pending.reports[0].results is not None
                and pending.refusals + 1 >= _SERVER_REFUSALS
                and self._ctx.health.answers > pending.answers_then
            )

    def _next_or_give_up(self, pending: _Pending, why: str) -> None:
        pending.failures = pending.refusals = 0
        if pending.reports:
            self._attempt(pending)
        else:
            self._give_up(pending, why)

    def _retry_later(self, pending: _Pending, error: TopChefError) -> None:
        ctx = self._ctx
        extra = pending.extra
        with ctx.cond:
            if pending.done:
                return  # abandoned by stop() meanwhile, and kept
            if pending.refusals == 0:
                pending.answers_then = ctx.health.answers
            pending.refusals = pending.refusals + 1 if isinstance(error, ServerError) else 0
            pending.failures += 1
            first = not pending.owed
            ctx.health.failed("delivery", error)
        if first:
            _log.warning(
                "job %s: delivering %s failed (%s); retrying while the worker runs",
                pending.job_id,
                _name(pending.reports[0]),
                error,
                extra=extra,
            )
            self._keep(pending)
            with ctx.cond:  # owed (in the stats) once it is in the outbox, not before
                pending.owed = True
                ctx.cond.notify_all()
        if ctx.hurry.is_set():
            return  # stop() gives up on what is still owed
        delay = ctx.settings.retry.wait(pending.failures, error, ctx.rand())
        ctx.scheduler.rearm(pending.timer, delay)

    def _keep(self, pending: _Pending, outcome: Outcome | None = None) -> None:
        """Write an owed outcome to the outbox, so a crash cannot lose it."""
        outbox = self._ctx.outbox
        if outbox is None:
            return
        try:
            outbox.put(outcome or pending.outcome)
        except LedgerError as error:
            _log.error(
                "job %s: could not keep its outcome in the outbox: %s",
                pending.job_id,
                error,
                extra=pending.extra,
            )

    # -- ends -------------------------------------------------------------------------

    def _delivered(self, pending: _Pending, report: Report) -> None:
        ctx = self._ctx
        if not self._close(pending):
            return
        ctx.health.answered("delivery")
        self._forget(pending)
        run = pending.run
        with ctx.cond:
            announce_delivered(
                ctx,
                pending.job_id,
                pending.service_id,
                report.status,
                duration=run.duration if run is not None else 0.0,
                error=describe(pending.error) if pending.error else "failed",
                reason=_reason(pending),
            )
            self._settled(pending)

    def _give_up(self, pending: _Pending, why: str) -> None:
        """End an outcome that cannot be delivered: say so, and free its slot."""
        ctx = self._ctx
        if not self._close(pending):
            return
        self._forget(pending, journal=False)
        pending.owed = False
        run = pending.run
        with ctx.cond:
            announce_lost(
                ctx,
                pending.job_id,
                pending.service_id,
                duration=run.duration if run is not None else 0.0,
                why=why,
            )
            self._settled(pending)

    def _close(self, pending: _Pending) -> bool:
        """Mark *pending* done; False if something else ended it first."""
        with self._ctx.cond:
            if pending.done:
                return False
            pending.done = True
            self._ctx.scheduler.cancel(pending.timer)
            return True

    def _settled(self, pending: _Pending) -> None:
        if self._pending.get(pending.job_id) is pending:
            del self._pending[pending.job_id]
        if pending.run is not None:
            self._on_settled(pending.run)
        self._ctx.cond.notify_all()

    # -- stopping ---------------------------------------------------------------------

    def hurry(self) -> None:
        """Try every owed outcome once more, now (``stop()``'s timeout expired)."""
        with self._ctx.cond:
            waiting = [p for p in self._pending.values() if not p.done and p.timer.due is not None]
            for pending in waiting:
                self._ctx.scheduler.cancel(pending.timer)
        for pending in waiting:
            self._launch(pending, lambda pending=pending: self._attempt(pending))  # type: ignore[misc]

    def abandon(self) -> list[Outcome]:
        """End every outcome still on its way; return them (for the outbox)."""
        with self._ctx.cond:
            left = [p for p in self._pending.values() if not p.done]
            for pending in left:
                if not pending.reports:
                    pending.reports = [_unplanned(pending.run)]
                pending.done = True
                self._ctx.scheduler.cancel(pending.timer)
                self._ctx.counts["undelivered"] += 1
                self._settled(pending)
            self._pending.clear()
            outcomes = [pending.outcome for pending in left]
            unkept = [pending for pending in left if not pending.owed]
            for pending in unkept:
                pending.owed = True
        for pending, outcome in zip(left, outcomes, strict=True):
            if pending in unkept:
                self._keep(pending, outcome)
        return outcomes


def _reason(pending: _Pending) -> str:
    run = pending.run
    if run is not None and run.decision is not None:
        return run.decision.reason
    return pending.reason


def _unplanned(run: JobRun | None) -> Report:
    """The report for a decision whose delivery never got to plan it."""
    decision = run.decision if run is not None else None
    if decision is None or decision.kind is Kind.REQUEUE:
        return Report(JobStatus.REGISTERED)
    if decision.kind is Kind.RESULT and isinstance(decision.value, dict):
        return Report(JobStatus.COMPLETED, decision.value)
    return Report(JobStatus.ERROR)


def _name(report: Report) -> str:
    with_results = " with results" if report.results is not None else ""
    return f"{report.status.value}{with_results}"
