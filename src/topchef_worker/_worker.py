"""The worker: handlers registered with a decorator, run as futures on a job pool.

One scheduler thread decides, and pools do the waiting:

* the **scheduler** thread keeps a due time for every service's next heartbeat and
  next poll and sleeps on a condition until the earliest one, or until something
  changes (a job finished, a poll came back, stop was asked);
* the **heartbeat pool** sends check-ins.  It is separate from everything else so that
  a heartbeat is never queued behind slow polls, reports or a full job pool;
* the **I/O pool** polls, claims, and reports outcomes;
* the **job pool** (any :class:`concurrent.futures.Executor`) runs handlers.  Each
  claimed job becomes a :class:`~concurrent.futures.Future` there.

Capacity is counted in slots: a poll takes a slot (of ``max_jobs`` and of the
handler's ``concurrency``) before it is sent, the slot passes to the job it claims,
and is given back when the job's outcome is delivered, so the worker never claims a
job it cannot start at once, and never has more jobs WORKING on the server than
slots.  The server does not claim on GET, so a poll is ``jobs/next`` followed by a
PATCH to WORKING, both finished before the service is polled again.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import random
import select
import signal
import socket
import threading
import time
from collections.abc import Mapping
from concurrent.futures import BrokenExecutor, Executor, Future, ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from types import FrameType
from typing import Any, Callable, TypeVar

import attrs
import requests

from . import _schemas
from ._client import DEFAULT_TIMEOUT, TimeoutLike, TopChefClient
from ._execution import call_handler
from ._handlers import ErrorResults, HandlerSpec, ServiceSpec, positive_seconds
from ._models import Job, JobStatus, Service
from ._outbox import Journal, Outbox, Outcome
from ._policy import Report, error_reports, heartbeat_delay, poll_delay, success_reports
from ._retry import RetryPolicy
from ._session import make_session
from ._stats import Health, ServiceHealth, WorkerState, WorkerStats
from .events import (
    Event,
    HeartbeatFailed,
    JobClaimed,
    JobCompleted,
    JobFailed,
    JobRequeued,
    JobStarted,
    PollFailed,
    StateChanged,
)
from .exceptions import (
    ConfigurationError,
    InvalidParametersError,
    InvalidResultsError,
    JobNotFoundError,
    JobTimeoutError,
    RejectedError,
    TopChefError,
    is_transient,
)

__all__ = ["Worker"]

_log = logging.getLogger("topchef_worker")
_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")

#: Most threads the heartbeat and I/O pools get, whatever the number of services:
#: the server handles one request at a time, so more threads only add contention.
_HEARTBEAT_THREADS = 4
_IO_THREADS = 16
#: How often a claim or a requeue is tried before the worker gives up on it.
#: Putting a job back to REGISTERED when the worker stops: a few quick tries.
_REQUEUE_POLICY = RetryPolicy(initial=0.1, maximum=1.0, attempts=4, deadline=5.0)
#: States in which the worker runs jobs.
_ACTIVE = (WorkerState.RUNNING, WorkerState.DEGRADED)


def _job_extra(job_id: str, service_id: str) -> dict[str, str]:
    return {"job_id": job_id, "service_id": service_id}


@attrs.define(eq=False)
class _ServiceRun:
    """The mutable scheduling state of one registered service."""

    spec: HandlerSpec
    service: Service
    interval: float
    check_parameters: _schemas.Check | None
    check_results: _schemas.Check | None
    next_heartbeat: float = 0.0
    heartbeat_in_flight: bool = False
    last_heartbeat: datetime | None = None
    last_beat: float | None = None  # clock time of the last successful check-in
    last_poll: float | None = None  # clock time of the last successful poll
    next_poll: float = 0.0
    poll_in_flight: bool = False
    empty_polls: int = 0
    poll_failures: int = 0
    heartbeat_failures: int = 0
    active: int = 0  # slots held by this service's claimed jobs
    idle: bool = False  # the last poll found the queue empty

    @property
    def id(self) -> str:
        return self.service.id

    def has_room(self) -> bool:
        limit = self.spec.concurrency
        return limit is None or self.active < limit


@attrs.define(eq=False)
class _JobRun:
    """A claimed job, from its claim until its outcome is delivered and it ended."""

    job: Job
    service: _ServiceRun
    future: Future[Any] | None = None
    deadline: float | None = None
    settled: bool = False  # its outcome (report or requeue) is decided
    delivered: bool = False  # ... and sent, or given up on
    done: bool = False  # no handler call is running for it (any more)
    timed_out: bool = False  # ended at its deadline; the call may still run
    service_released: bool = False  # its per-service concurrency slot is given back
    pool: Executor | None = None  # the pool it was submitted to
    started_at: float | None = None
    duration: float = 0.0  # seconds from start to the handler's return


class Worker:
    """Run handler functions for TopChef services.

    Register handlers with :meth:`handler`, then :meth:`run` the worker (blocking;
    SIGINT and SIGTERM stop it gracefully) or :meth:`start` it inside an application
    and :meth:`stop` it later (``with worker: ...`` does both).

    Args:
        url: The TopChef server's base URL.  Left out, ``TOPCHEF_URL`` supplies it at
            start; starting without either is a :class:`ConfigurationError`.
        max_jobs: Most jobs in flight at once, over all services.
        job_pool: The executor that runs handlers, or a function that makes one.  By
            default a :class:`ThreadPoolExecutor` of ``max_jobs + max_overrun``
            threads.  Pools the worker makes (by default, or with the function) are
            shut down when it stops and rebuilt if they break; a pool passed in is
            left to its owner.  A :class:`ProcessPoolExecutor` works for handlers
            that pickle.
        heartbeat_interval: Seconds between check-ins; by default a third of each
            service's timeout, read when the worker starts.
        poll_interval: Longest wait between polls of an idle service.  An empty queue
            is polled again after ``min_poll_interval``, doubling up to this.
        min_poll_interval: The first wait after a poll that found nothing.
        idle_poll_rate: Most polls a second, over all services, once their queues
            have been empty for a while: with many services, each idle one is polled
            less often than ``poll_interval`` (200 services: every 10 s).
        jitter: Fraction by which waits are randomly shortened, so that workers
            started together drift apart.
        request_timeout: Connect and read timeouts for every request.
        session: The :class:`requests.Session` to use; by default one is made with a
            connection pool big enough for the worker's threads.
        client: A ready :class:`TopChefClient`, instead of ``url`` and ``session``.
        remember_jobs: How many recently started job ids are remembered so that none
            runs twice in this worker.
        retry: How failed requests are retried; by default
            :meth:`RetryPolicy.forever`: heartbeats, polls and reports never give up
            while the worker runs, and stopping it cuts any wait short.
        outbox: A file (JSON lines) where outcomes still undelivered when
            :meth:`stop` gives up are kept, to be delivered first on the next start.
        journal: A file (JSON lines) recording claimed jobs until they are settled;
            after a crash the next start returns those still WORKING to the queue (or
            ends them ERROR, per handler ``on_orphan``).
        max_overrun: How many handler calls may still run after their job timed out
            before the worker stops claiming (default ``max_jobs``): threads cannot
            be killed, and this keeps them from piling up.
        clock: Monotonic seconds, for scheduling.
        rand: Returns floats in [0, 1), for jitter.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        max_jobs: int = 4,
        job_pool: Executor | Callable[[], Executor] | None = None,
        heartbeat_interval: float | timedelta | None = None,
        poll_interval: float | timedelta = 1.0,
        min_poll_interval: float | timedelta = 0.01,
        idle_poll_rate: float = 20.0,
        jitter: float = 0.1,
        request_timeout: TimeoutLike = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
        client: TopChefClient | None = None,
        remember_jobs: int = 10_000,
        retry: RetryPolicy | None = None,
        outbox: str | os.PathLike[str] | None = None,
        journal: str | os.PathLike[str] | None = None,
        max_overrun: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] | None = None,
    ) -> None:
        if isinstance(max_jobs, bool) or not isinstance(max_jobs, int) or max_jobs < 1:
            raise ConfigurationError(f"max_jobs must be an int >= 1, got {max_jobs!r}")
        if not 0 <= jitter < 1:
            raise ConfigurationError(f"jitter must be a fraction in [0, 1), got {jitter!r}")
        if not isinstance(remember_jobs, int) or remember_jobs < 1:
            raise ConfigurationError(f"remember_jobs must be an int >= 1, got {remember_jobs!r}")
        if client is not None and (url is not None or session is not None):
            raise ConfigurationError("give either client or url/session, not both")
        if max_overrun is not None and (
            isinstance(max_overrun, bool) or not isinstance(max_overrun, int) or max_overrun < 0
        ):
            raise ConfigurationError(f"max_overrun must be an int >= 0, got {max_overrun!r}")
        self.url = url
        self.max_jobs = max_jobs
        self.heartbeat_interval = positive_seconds(heartbeat_interval, "heartbeat_interval")
        self.poll_interval = positive_seconds(poll_interval, "poll_interval")
        self.min_poll_interval = positive_seconds(min_poll_interval, "min_poll_interval")
        assert self.poll_interval is not None
        assert self.min_poll_interval is not None
        if self.min_poll_interval > self.poll_interval:
            raise ConfigurationError(
                f"min_poll_interval ({self.min_poll_interval:g} s) must not exceed "
                f"poll_interval ({self.poll_interval:g} s)"
            )
        self.jitter = jitter
        if isinstance(idle_poll_rate, bool) or not (
            isinstance(idle_poll_rate, (int, float)) and idle_poll_rate > 0
        ):
            raise ConfigurationError(f"idle_poll_rate must be positive, got {idle_poll_rate!r}")
        self.idle_poll_rate = float(idle_poll_rate)
        self.request_timeout = request_timeout
        self._session = session
        self._given_client = client
        self._pool_factory: Callable[[], Executor] | None = None
        self._given_pool: Executor | None = None
        if isinstance(job_pool, Executor):
            self._given_pool = job_pool
        elif job_pool is not None:
            if not callable(job_pool):
                raise ConfigurationError(
                    f"job_pool must be an Executor or a function making one, got {job_pool!r}"
                )
            self._pool_factory = job_pool
        self.retry = retry or RetryPolicy.forever()
        self._overrun_given = max_overrun is not None
        self.max_overrun = max_jobs if max_overrun is None else max_overrun
        self._outbox = None if outbox is None else Outbox(outbox)
        self._journal = None if journal is None else Journal(journal)
        self._owed: dict[str, Outcome] = {}  # outcomes not delivered (for the outbox)
        self._leaked: set[_JobRun] = set()
        self._stopping = threading.Event()
        self._failures = 0  # consecutive transient failures talking to the server
        self._listeners: tuple[Callable[[Event], object], ...] = ()
        self._events: ThreadPoolExecutor | None = None
        self._pool_broken = False  # a job pool given to the worker broke
        self._remember = remember_jobs
        self._clock = clock
        self._rand = rand or random.Random().random
        self._sleep: Callable[[float], None] = time.sleep

        self._handlers: list[HandlerSpec] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._state = WorkerState.NEW
        self._client: TopChefClient | None = None
        self._made_session: requests.Session | None = None
        self._services: list[_ServiceRun] = []
        self._runs: dict[str, _JobRun] = {}
        self._ran: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._polls_in_flight = 0
        self._rotation = 0
        self._polling = False
        self._beating = False
        self._counts: collections.Counter[str] = collections.Counter()
        self._abandon = threading.Event()
        self._thread: threading.Thread | None = None
        self._heartbeat_pool: ThreadPoolExecutor | None = None
        self._io_pool: ThreadPoolExecutor | None = None
        self._job_pool: Executor | None = None
        # run(): how the blocking caller is woken, and why.
        self._until_idle = False
        self._exit_requested = False
        self._hurry = False
        self._signals = 0
        self._wakeup: socket.socket | None = None

    def __repr__(self) -> str:
        return f"<Worker {self.url or '(no URL yet)'} {self._state.value}>"

    def configure(
        self,
        *,
        url: str | None = None,
        max_jobs: int | None = None,
        outbox: str | os.PathLike[str] | None = None,
        journal: str | os.PathLike[str] | None = None,
    ) -> None:
        """Override settings before the worker starts (the command line uses this)."""
        with self._lock:
            if self._state is not WorkerState.NEW:
                raise ConfigurationError("configure a worker before it starts")
        if max_jobs is not None:
            if isinstance(max_jobs, bool) or not isinstance(max_jobs, int) or max_jobs < 1:
                raise ConfigurationError(f"max_jobs must be an int >= 1, got {max_jobs!r}")
            self.max_jobs = max_jobs
            if not self._overrun_given:
                self.max_overrun = max_jobs
        if url is not None:
            if self._given_client is not None:
                raise ConfigurationError("this worker was given a client; its URL is fixed")
            self.url = url
        if outbox is not None:
            self._outbox = Outbox(outbox)
        if journal is not None:
            self._journal = Journal(journal)

    # -- registration -----------------------------------------------------------------

    def handler(
        self,
        service_id: str | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        job_registration_schema: Mapping[str, Any] | None = None,
        job_result_schema: Mapping[str, Any] | None = None,
        service_timeout: float | timedelta | None = None,
        concurrency: int | None = None,
        timeout: float | timedelta | None = None,
        error_results: ErrorResults | None = None,
        on_orphan: str = "requeue",
    ) -> Callable[[_F], _F]:
        """Register the decorated function as the handler of one service.

        Name an existing service by id, or describe one (``name``, ``description`` and
        both schemas, optionally ``service_timeout`` in whole seconds): at start the
        worker uses a service with that name and those schemas, or creates it.

        The function is called as ``fn(parameters)``, or ``fn(parameters, job=job)``
        when it has a parameter named ``job``, and returns a dict: the job's results.
        It is returned unchanged, so it stays an ordinary, testable function.

        Args:
            concurrency: Most jobs of this service in flight at once (say 1 for an
                instrument that does one measurement at a time).
            timeout: Seconds a job may run; past it the job ends ERROR with a
                :class:`JobTimeoutError` and its slot is free.  A thread cannot be
                killed, so a call still running is counted as an overrun (see
                ``max_overrun``) and its result discarded; in a process pool the
                process likewise computes on until the call returns.
            error_results: Called with the exception when a job fails; a dict it
                returns is sent as results with ERROR (TopChef has no error message
                field), if the result schema accepts it.
            on_orphan: What a start with a ``journal`` does with a job an earlier,
                crashed run claimed and left WORKING: ``"requeue"`` puts it back to
                REGISTERED (it runs again), ``"error"`` ends it ERROR (for jobs that
                must not run twice).
        """

        def register(fn: _F) -> _F:
            spec = HandlerSpec.build(
                fn,
                service_id=service_id,
                name=name,
                description=description,
                job_registration_schema=job_registration_schema,
                job_result_schema=job_result_schema,
                service_timeout=service_timeout,
                concurrency=concurrency,
                timeout=timeout,
                error_results=error_results,
                on_orphan=on_orphan,
            )
            with self._lock:
                if self._state is not WorkerState.NEW:
                    raise ConfigurationError(
                        f"register handlers before the worker starts; it is {self._state.value}"
                    )
                for other in self._handlers:
                    if _same_service(other, spec):
                        raise ConfigurationError(
                            f"service {spec.label} already has a handler "
                            f"({getattr(other.fn, '__qualname__', other.fn)}); one per service"
                        )
                self._handlers.append(spec)
            return fn

        if callable(service_id):
            raise ConfigurationError(
                "use @worker.handler(service_id) or @worker.handler(name=..., ...), "
                "not a bare @worker.handler"
            )
        return register

    # -- lifecycle --------------------------------------------------------------------

    @property
    def state(self) -> WorkerState:
        """Where the worker is in its life."""
        return self._state

    def start(self) -> None:
        """Connect, resolve every service, and start heartbeating and polling.

        Returns at once; installs no signal handlers.  Raises
        :class:`ConfigurationError` for a missing URL or a bad registration, and the
        client's errors if the server cannot be reached.
        """
        with self._lock:
            if self._state is WorkerState.STARTING or self._state in _ACTIVE:
                return
            if self._state is not WorkerState.NEW:
                raise ConfigurationError("a stopped worker cannot be started again")
            if not self._handlers:
                raise ConfigurationError("no handlers registered: nothing to run")
            self._events = ThreadPoolExecutor(1, "topchef-events")
            self._set_state(WorkerState.STARTING)
        try:
            self._start()
        except BaseException:
            self._teardown(wait=True)
            with self._lock:
                self._set_state(WorkerState.NEW)
                self._services = []
            self._close_events()
            raise

    def _start(self) -> None:
        client = self._given_client
        if client is None:
            url = self.url or os.environ.get("TOPCHEF_URL")
            if not url:
                raise ConfigurationError(
                    "no TopChef URL: pass Worker(url), use --url, or set TOPCHEF_URL"
                )
            self.url = url
            heartbeat_threads, io_threads = self._pool_sizes()
            session = self._session
            if session is None:
                session = self._made_session = make_session(url, heartbeat_threads + io_threads)
            try:
                # No retries in the client: the worker retries with its own policy.
                client = TopChefClient(
                    url, session=session, timeout=self.request_timeout, retry=None
                )
            except ValueError as error:
                raise ConfigurationError(str(error)) from None
        else:
            self.url = client.base_url
        self._client = client

        # Find-or-create is safe to repeat (a service created by a lost answer is
        # found the next time), so each resolution is retried as a whole.
        services = [
            self._at_start(functools.partial(self._resolve, spec)) for spec in self._handlers
        ]
        seen: dict[str, HandlerSpec] = {}
        for spec, service in zip(self._handlers, services):
            if service.id in seen:
                raise ConfigurationError(
                    f"service {service.id} has two handlers "
                    f"({_qualname(seen[service.id].fn)} and {_qualname(spec.fn)}); one per service"
                )
            seen[service.id] = spec

        now = self._clock()
        runs = []
        for spec, service in zip(self._handlers, services):
            interval = self.heartbeat_interval or service.timeout / 3.0
            if interval >= service.timeout:
                _log.warning(
                    "heartbeat interval %.3g s is not below service %s's timeout of %d s: "
                    "it will appear timed out",
                    interval,
                    service.id,
                    service.timeout,
                )
            runs.append(
                _ServiceRun(
                    spec=spec,
                    service=service,
                    interval=interval,
                    check_parameters=_schemas.checker(service.job_registration_schema),
                    check_results=_schemas.checker(service.job_result_schema),
                    next_heartbeat=now,
                    next_poll=now,
                )
            )
        self._recover(runs)
        heartbeat_threads, io_threads = self._pool_sizes()
        self._heartbeat_pool = ThreadPoolExecutor(heartbeat_threads, "topchef-heartbeat")
        self._io_pool = ThreadPoolExecutor(io_threads, "topchef-io")
        self._job_pool = self._given_pool or self._make_pool()
        with self._lock:
            self._services = runs
            self._polling = self._beating = True
            self._set_state(WorkerState.RUNNING)
        self._thread = threading.Thread(target=self._schedule, name="topchef-scheduler")
        self._thread.start()
        _log.info(
            "worker started on %s: %d service(s), max_jobs=%d",
            self.url,
            len(runs),
            self.max_jobs,
        )

    def _recover(self, services: list[_ServiceRun]) -> None:
        """Settle what an earlier run left: deliver its outbox first, then return the
        jobs its journal says it claimed and never settled."""
        client = self._client
        assert client is not None
        pending = self._journal.open() if self._journal is not None else {}
        still_owed = []
        for outcome in self._outbox.load() if self._outbox is not None else []:
            try:
                _REQUEUE_POLICY.call(
                    functools.partial(
                        client.update_job,
                        outcome.job_id,
                        status=outcome.status,
                        results=outcome.results,
                    ),
                    sleep=self._sleep,
                )
            except TopChefError as error:
                if is_transient(error):
                    still_owed.append(outcome)
                    continue
                _log.error(
                    "outbox: job %s %s could not be delivered and is dropped: %s",
                    outcome.job_id,
                    outcome.status.value,
                    error,
                    extra=_job_extra(outcome.job_id, outcome.service_id),
                )
            else:
                _log.info(
                    "outbox: delivered job %s %s",
                    outcome.job_id,
                    outcome.status.value,
                    extra=_job_extra(outcome.job_id, outcome.service_id),
                )
            if self._journal is not None:
                self._journal.done(outcome.job_id)
            pending.pop(outcome.job_id, None)
        with self._lock:
            self._owed = {outcome.job_id: outcome for outcome in still_owed}
        if self._outbox is not None:
            self._outbox.save(still_owed)
        policies = {svc.id: svc.spec.on_orphan for svc in services}
        for job_id, service_id in pending.items():
            if job_id in self._owed:
                continue
            self._settle_orphan(job_id, service_id, policies.get(service_id, "requeue"))

    def _settle_orphan(self, job_id: str, service_id: str, policy: str) -> None:
        """Return (or end) a job a crashed run claimed, if it is still WORKING."""
        client = self._client
        assert client is not None
        assert self._journal is not None
        extra = _job_extra(job_id, service_id)
        try:
            job = client.job(job_id)
            if job.status is JobStatus.WORKING:
                status = JobStatus.REGISTERED if policy == "requeue" else JobStatus.ERROR
                _REQUEUE_POLICY.call(
                    lambda: client.update_job(job_id, status=status), sleep=self._sleep
                )
                _log.warning(
                    "job %s was claimed by an earlier run that did not finish it; now %s",
                    job_id,
                    status.value,
                    extra=extra,
                )
                with self._lock:
                    self._counts["orphans"] += 1
        except JobNotFoundError:
            pass
        except TopChefError as error:
            _log.error("journal: could not settle job %s: %s", job_id, error, extra=extra)
            return  # stays in the journal for the next start
        self._journal.done(job_id)

    def _make_pool(self) -> Executor:
        if self._pool_factory is not None:
            return self._pool_factory()
        # Room for the calls that overran their timeout, so that they never keep a
        # newly claimed job from starting at once.
        return ThreadPoolExecutor(self.max_jobs + self.max_overrun, "topchef-job")

    def _pool_sizes(self) -> tuple[int, int]:
        services = max(1, len(self._handlers))
        return (
            min(services, _HEARTBEAT_THREADS),
            min(services + self.max_jobs, _IO_THREADS),
        )

    def _at_start(self, fn: Callable[[], _T]) -> _T:
        """Call *fn* under the worker's retry policy while starting.

        A server that is down when the worker starts is waited for (a service
        manager may start the worker first); a signal or stop() ends the wait.
        """

        def worth_retrying(error: BaseException) -> bool:
            return is_transient(error) and not (self._exit_requested or self._stopping.is_set())

        def note(error: BaseException, attempt: int, delay: float) -> None:
            _log.log(
                logging.WARNING if attempt == 1 else logging.DEBUG,
                "starting: the server does not answer (%s); retrying in %.2g s",
                error,
                delay,
            )

        return self.retry.call(
            fn, sleep=self._nap, retry_if=worth_retrying, on_retry=note, rand=self._rand
        )

    def _nap(self, seconds: float) -> None:
        """Sleep, but wake for stop() or a signal (which can only set a flag)."""
        deadline = time.monotonic() + seconds
        while not (self._exit_requested or self._stopping.is_set()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._stopping.wait(min(remaining, 0.1))

    def _resolve(self, spec: HandlerSpec) -> Service:
        """Find the service a handler is for, creating it if described and missing."""
        client = self._client
        assert client is not None
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
                    candidate = client.update_service(candidate.id, timeout=wanted.timeout)
                _log.info("using service %r (%s)", wanted.name, candidate.id)
                return candidate
        _schemas.check_schema(
            wanted.job_registration_schema, f"job_registration_schema of {wanted.name!r}"
        )
        _schemas.check_schema(wanted.job_result_schema, f"job_result_schema of {wanted.name!r}")
        created = client.create_service(
            name=wanted.name,
            description=wanted.description,
            job_registration_schema=wanted.job_registration_schema,
            job_result_schema=wanted.job_result_schema,
            timeout=wanted.timeout,
        )
        _log.info("created service %r (%s)", wanted.name, created.id)
        return created

    def stop(self, timeout: float | timedelta | None = None, cancel: bool = False) -> None:
        """Stop the worker, and return when every thread it started has ended.

        Polling stops first.  Running jobs may finish for up to *timeout* seconds
        (None: as long as they take), their outcomes delivered; with ``cancel=True``
        jobs not yet started are not waited for.  Then jobs not started are
        cancelled and put back to REGISTERED, jobs still running are put back to
        REGISTERED too (their results will be discarded; their threads cannot be
        killed), and heartbeats stop last.  Safe to call more than once, and from
        any thread.
        """
        limit = None
        if timeout is not None:
            limit = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
            if limit < 0:
                raise ConfigurationError(f"stop timeout must not be negative, got {timeout!r}")
        with self._cond:
            if self._state is WorkerState.NEW:
                self._state = WorkerState.STOPPED  # never started: nobody to tell
                return
            if self._state is WorkerState.STOPPING:
                self._cond.wait_for(self._stopped)
                return
            if self._state is WorkerState.STOPPED:
                return
            self._set_state(WorkerState.STOPPING)
            self._polling = False
            self._stopping.set()
            self._cond.notify_all()
        self._poke()
        _log.info("worker stopping")
        deadline = None if limit is None else self._clock() + limit

        # Polls already sent finish (a job they claim now is put back unstarted).
        self._wait_until(lambda: self._polls_in_flight == 0, None)
        if cancel:
            self._requeue_unstarted()
        drained = self._wait_until(lambda: not self._undelivered(), deadline)
        if not drained:
            self._requeue_unstarted()
            self._interrupt_running()
            self._abandon.set()
            self._wait_until(lambda: not self._undelivered(), None)
        with self._cond:
            self._beating = False
            self._cond.notify_all()
        self._teardown(wait=drained)
        self._keep_owed()
        with self._cond:
            self._set_state(WorkerState.STOPPED)
        self._close_events()
        self._poke()
        counts = self.stats()
        _log.info(
            "worker stopped: %d completed, %d failed, %d requeued",
            counts.completed,
            counts.failed,
            counts.requeued,
        )

    def _keep_owed(self) -> None:
        """Write undelivered outcomes to the outbox, or say loudly which they are."""
        with self._lock:
            owed = list(self._owed.values())
        if self._outbox is not None:
            self._outbox.save(owed)
            if owed:
                _log.warning(
                    "%d undelivered outcome(s) kept in %s, for the next start: %s",
                    len(owed),
                    self._outbox.path,
                    _list_outcomes(owed),
                )
        elif owed:
            _log.error(
                "%d outcome(s) could NOT be delivered and are lost (no outbox); these jobs "
                "stay WORKING on the server: %s",
                len(owed),
                _list_outcomes(owed),
            )

    def _set_state(self, state: WorkerState) -> None:
        """Move to *state* and tell listeners; called with the lock held."""
        old, self._state = self._state, state
        self._cond.notify_all()
        if old is not state:
            self._emit(StateChanged(time=time.time(), old=old, new=state))

    # -- listeners --------------------------------------------------------------------

    def add_listener(self, listener: Callable[[Event], object]) -> None:
        """Call *listener* with every :class:`~topchef_worker.events.Event` from now on.

        Listeners run one at a time, in order, on a thread of the worker's own, so a
        slow listener never delays heartbeats or jobs; one that raises is logged and
        kept.
        """
        if not callable(listener):
            raise ConfigurationError(f"a listener must be callable, got {listener!r:.80}")
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Callable[[Event], object]) -> None:
        """Stop calling *listener*."""
        with self._lock:
            self._listeners = tuple(known for known in self._listeners if known != listener)

    def _emit(self, event: Event) -> None:
        pool = self._events
        if pool is None or not self._listeners:
            return
        with contextlib.suppress(RuntimeError):  # shut down: nobody listens any more
            pool.submit(self._dispatch, self._listeners, event)

    def _dispatch(self, listeners: tuple[Callable[[Event], object], ...], event: Event) -> None:
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                _log.exception("listener %r failed on %s; it stays registered", listener, event)

    def _close_events(self) -> None:
        pool, self._events = self._events, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _stopped(self) -> bool:
        return self._state is WorkerState.STOPPED

    def _teardown(self, *, wait: bool) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        for pool in (self._io_pool, self._heartbeat_pool):
            if pool is not None:
                pool.shutdown(wait=True)
        if self._job_pool is not None and self._given_pool is None:
            self._job_pool.shutdown(wait=wait, cancel_futures=True)
        if self._journal is not None:
            self._journal.close()
        if self._made_session is not None:
            self._made_session.close()
            self._made_session = None

    def run(
        self, *, until_idle: bool = False, stop_timeout: float | timedelta | None = None
    ) -> None:
        """Start the worker and block until it is told to stop, then stop it.

        On the main thread, SIGINT and SIGTERM stop the worker gracefully (running
        jobs finish, for up to *stop_timeout*); a second signal stops it at once, still
        putting unstarted and interrupted jobs back to REGISTERED.  With
        ``until_idle=True`` it also returns once every service's queue was found empty
        with nothing in flight: for batch runs and tests.
        """
        self._until_idle = until_idle
        receiver, self._wakeup = socket.socketpair()
        receiver.setblocking(False)
        self._wakeup.setblocking(False)
        previous: dict[int, Any] = {}
        wakeup_fd = -1
        try:
            if threading.current_thread() is threading.main_thread():
                for signum in (signal.SIGINT, signal.SIGTERM):
                    previous[signum] = signal.signal(signum, self._on_signal)
                # A signal may be delivered to any thread, and then select() on the
                # main thread is not interrupted; the wakeup fd makes the C-level
                # handler write to the socket select() waits on, whichever thread
                # received it, so the Python handler runs at once.
                wakeup_fd = signal.set_wakeup_fd(self._wakeup.fileno(), warn_on_full_buffer=False)
            self.start()
            while not self._exit_requested and self._state in _ACTIVE:
                select.select([receiver], [], [])
                with contextlib.suppress(BlockingIOError):
                    receiver.recv(4096)
        finally:
            try:
                self.stop(timeout=0 if self._hurry else stop_timeout)
            finally:
                if previous:
                    signal.set_wakeup_fd(wakeup_fd)
                for number, handler in previous.items():
                    signal.signal(number, handler)
                wakeup, self._wakeup = self._wakeup, None
                if wakeup is not None:
                    wakeup.close()
                receiver.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Runs on the main thread between bytecodes, possibly while it holds a lock:
        # so it only sets flags and writes to a socket, and takes no lock.
        self._signals += 1
        if self._signals > 1:
            self._hurry = True
            _log.warning("second signal: stopping at once")
        else:
            _log.info("signal %d: stopping gracefully", signum)
        self._exit_requested = True
        self._poke()

    def _poke(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            with contextlib.suppress(OSError):
                wakeup.send(b"x")

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- observation ------------------------------------------------------------------

    def stats(self) -> WorkerStats:
        """A snapshot of the worker's counters and its jobs in flight."""
        with self._lock:
            return self._snapshot()

    def wait_for(
        self, predicate: Callable[[WorkerStats], bool], timeout: float = 10.0
    ) -> WorkerStats:
        """Block until *predicate* holds for the worker's stats, and return them.

        Checked now and whenever the worker's state changes, so a caller (a test, a
        health check) waits exactly as long as needed::

            worker.wait_for(lambda stats: stats.completed >= 10)

        Raises :class:`TimeoutError` if it does not hold within *timeout* seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                snapshot = self._snapshot()
                if predicate(snapshot):
                    return snapshot
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"worker stats did not satisfy the condition: {snapshot}")
                self._cond.wait(remaining)

    def _snapshot(self) -> WorkerStats:
        """The stats, with the lock held."""
        counts = self._counts
        return WorkerStats(
            state=self._state,
            claimed=counts["claimed"],
            completed=counts["completed"],
            failed=counts["failed"],
            requeued=counts["requeued"],
            in_flight=sum(1 for run in self._runs.values() if not run.delivered),
            polls=counts["polls"],
            empty_polls=counts["empty_polls"],
            poll_errors=counts["poll_errors"],
            heartbeats_sent=counts["heartbeats_sent"],
            heartbeats_failed=counts["heartbeats_failed"],
            last_heartbeat={svc.id: svc.last_heartbeat for svc in self._services},
            overrun=len(self._leaked)
            + sum(1 for run in self._runs.values() if run.delivered and not run.done),
            undelivered=len(self._owed),
            pool_rebuilds=counts["pool_rebuilds"],
        )

    def health(self) -> Health:
        """Whether the worker is really working: heartbeating, polling, not degraded.

        A service is healthy when its last check-in is younger than its timeout, and
        (when it has a free slot) its last successful poll younger than a few poll
        intervals; while every slot is busy, polls pause on purpose.
        """
        with self._lock:
            now = self._clock()
            free = self.max_jobs - len(self._runs)
            services = []
            reasons = []
            for svc in self._services:
                heartbeat_age = None if svc.last_beat is None else now - svc.last_beat
                poll_age = None if svc.last_poll is None else now - svc.last_poll
                polling_expected = free > 0 and svc.has_room()
                poll_limit = max(3 * (self.poll_interval or 1.0), 10.0)
                beating = heartbeat_age is not None and heartbeat_age < svc.service.timeout
                polling = not polling_expected or (poll_age is not None and poll_age < poll_limit)
                if not beating:
                    reasons.append(f"service {svc.id}: no check-in within its timeout")
                if not polling:
                    reasons.append(f"service {svc.id}: no successful poll for {poll_limit:g} s")
                services.append(
                    ServiceHealth(
                        service_id=svc.id,
                        name=svc.service.name,
                        timeout=svc.service.timeout,
                        last_heartbeat_age=heartbeat_age,
                        last_poll_age=poll_age,
                        in_flight=svc.active,
                        healthy=beating and polling,
                    )
                )
            if self._state is not WorkerState.RUNNING:
                reasons.insert(0, f"worker is {self._state.value}")
            return Health(
                state=self._state,
                healthy=not reasons,
                ready=self._state in _ACTIVE,
                in_flight=sum(1 for run in self._runs.values() if not run.delivered),
                services=tuple(services),
                reasons=tuple(reasons),
            )

    @property
    def services(self) -> list[Service]:
        """The services the worker runs, as resolved at start (empty before)."""
        with self._lock:
            return [svc.service for svc in self._services]

    # -- the scheduler ----------------------------------------------------------------

    def _schedule(self) -> None:
        with self._cond:
            while self._beating:
                now = self._clock()
                due = now + 3600.0
                for svc in self._services:
                    if svc.heartbeat_in_flight:
                        continue
                    if svc.next_heartbeat <= now:
                        svc.heartbeat_in_flight = True
                        self._submit(self._heartbeat_pool, self._heartbeat, svc)
                    else:
                        due = min(due, svc.next_heartbeat)
                if self._polling:
                    due = min(due, self._start_polls(now))
                due = min(due, self._expire(now))
                if self._until_idle and self._idle():
                    self._exit_requested = True
                    self._poke()
                self._cond.wait(max(0.0, due - now))

    def _start_polls(self, now: float) -> float:
        """Send every poll that is due and has a free slot; return the next due time."""
        due = now + 3600.0
        if self._pool_broken or (self._leaked and len(self._leaked) >= self.max_overrun):
            return due  # claiming stops until the overruns end (or for good)
        count = len(self._services)
        start, self._rotation = self._rotation, (self._rotation + 1) % max(1, count)
        for offset in range(count):
            if len(self._runs) + self._polls_in_flight >= self.max_jobs:
                break  # no free slot: a finishing job wakes the scheduler
            svc = self._services[(start + offset) % count]
            if svc.poll_in_flight or not svc.has_room():
                continue
            if svc.next_poll > now:
                due = min(due, svc.next_poll)
                continue
            svc.poll_in_flight = True
            self._polls_in_flight += 1
            self._submit(self._io_pool, self._poll, svc)
        return due

    def _expire(self, now: float) -> float:
        """End jobs past their deadline; return the next deadline."""
        due = now + 3600.0
        for run in list(self._runs.values()):
            if run.deadline is None or run.settled:
                continue
            if run.deadline > now:
                due = min(due, run.deadline)
                continue
            run.settled = run.timed_out = True
            assert run.future is not None
            if run.future.cancel():
                run.done = True
            seconds = run.service.spec.timeout or 0.0
            error = JobTimeoutError(
                f"job {run.job.id} did not finish within its timeout of {seconds:g} s",
                job_id=run.job.id,
                service_id=run.service.id,
                seconds=seconds,
            )
            self._submit(self._io_pool, self._report, run, None, error)
        return due

    def _idle(self) -> bool:
        return (
            self._state in _ACTIVE
            and not self._runs
            and self._polls_in_flight == 0
            and all(svc.idle for svc in self._services)
        )

    def _submit(self, pool: Executor | None, fn: Callable[..., Any], *args: Any) -> None:
        assert pool is not None
        try:
            pool.submit(fn, *args)
        except RuntimeError:
            # Only when the interpreter is exiting without stop() having been called
            # (concurrent.futures refuses new work then): stop scheduling, so that
            # the process can exit.
            if self._beating:
                _log.error("the interpreter is exiting before the worker was stopped")
            self._beating = self._polling = False

    def _wait_until(self, predicate: Callable[[], bool], deadline: float | None) -> bool:
        """Wait until *predicate* holds (True) or *deadline* passes or hurry (False)."""
        with self._cond:
            while not predicate():
                if self._hurry:
                    return False
                remaining = None if deadline is None else deadline - self._clock()
                if remaining is not None and remaining <= 0:
                    return False
                # Short slices: a second signal only sets a flag, it cannot notify.
                self._cond.wait(0.25 if remaining is None else min(remaining, 0.25))
            return True

    def _undelivered(self) -> bool:
        return any(not run.delivered for run in self._runs.values())

    # -- heartbeats -------------------------------------------------------------------

    def _heartbeat(self, svc: _ServiceRun) -> None:
        sent_at = self._clock()
        client = self._client
        assert client is not None
        try:
            client.check_in(svc.id)
        except TopChefError as error:
            with self._cond:
                svc.heartbeat_in_flight = False
                svc.heartbeat_failures += 1
                self._counts["heartbeats_failed"] += 1
                # Retried with backoff, but never later than the regular period: the
                # service times out after svc.service.timeout.
                delay = self.retry.wait(svc.heartbeat_failures, error, self._rand())
                svc.next_heartbeat = self._clock() + min(delay, svc.interval)
                first = svc.heartbeat_failures == 1
                self._failed(error)
                self._emit(HeartbeatFailed(time=time.time(), service_id=svc.id, error=str(error)))
            _log.log(
                logging.WARNING if first else logging.DEBUG,
                "heartbeat for service %s failed: %s",
                svc.id,
                error,
                extra={"service_id": svc.id},
            )
            return
        with self._cond:
            self._answered()
            svc.heartbeat_failures = 0
            svc.heartbeat_in_flight = False
            svc.last_beat = sent_at
            svc.last_heartbeat = datetime.now(timezone.utc)
            self._counts["heartbeats_sent"] += 1
            # Scheduled from when this one was sent, so a slow server does not
            # stretch the period.
            svc.next_heartbeat = sent_at + heartbeat_delay(
                svc.interval, jitter=self.jitter, rand=self._rand
            )
            self._cond.notify_all()

    # -- polling and claiming ---------------------------------------------------------

    def _poll(self, svc: _ServiceRun) -> None:
        client = self._client
        assert client is not None
        found: Job | None = None
        claimed: Job | None = None
        failure: TopChefError | None = None
        try:
            found = client.next_job(svc.id)
            seen_at = self._clock()
            if found is not None and self._has_run(found.id):
                found = self._first_not_run(svc)
            if found is not None and self._polling:
                claimed = self._claim(found)
        except TopChefError as error:
            failure = error
        run = None
        first_failure = False
        with self._cond:
            self._polls_in_flight -= 1
            svc.poll_in_flight = False
            self._counts["polls"] += 1
            if failure is None:
                self._answered()
                svc.poll_failures = 0
                svc.last_poll = self._clock()
            if claimed is not None:
                svc.empty_polls = 0
                svc.idle = False
                svc.next_poll = self._clock()  # there may be more: poll again at once
                run = _JobRun(job=claimed, service=svc)
                self._runs[claimed.id] = run
                # Remembered from the claim on, so that no later poll takes it again
                # while it runs or after it ended.
                self._ran[claimed.id] = None
                while len(self._ran) > self._remember:
                    self._ran.popitem(last=False)
                svc.active += 1
                self._counts["claimed"] += 1
                self._emit(
                    JobClaimed(
                        time=time.time(),
                        job_id=claimed.id,
                        service_id=svc.id,
                        claim_latency=self._clock() - seen_at,
                    )
                )
            elif failure is not None:
                svc.idle = False
                svc.poll_failures += 1
                first_failure = svc.poll_failures == 1 or not is_transient(failure)
                self._counts["poll_errors"] += 1
                self._failed(failure)
                self._emit(PollFailed(time=time.time(), service_id=svc.id, error=str(failure)))
                delay = self.retry.wait(svc.poll_failures, failure, self._rand())
                svc.next_poll = self._clock() + delay
            else:
                svc.empty_polls += 1
                svc.idle = found is None
                if found is None:
                    self._counts["empty_polls"] += 1
                svc.next_poll = self._clock() + poll_delay(
                    svc.empty_polls,
                    minimum=self.min_poll_interval or 0.0,
                    maximum=self._idle_poll_interval(),
                    jitter=self.jitter,
                    rand=self._rand,
                )
            self._cond.notify_all()
        if failure is not None:
            _log.log(
                logging.WARNING if first_failure else logging.DEBUG,
                "poll of service %s failed: %s",
                svc.id,
                failure,
                extra={"service_id": svc.id},
            )
        if run is not None:
            self._launch(run)

    def _idle_poll_interval(self) -> float:
        """The longest wait between polls of an empty queue.

        ``poll_interval``, stretched when there are so many services that polling
        each that often would send more than ``idle_poll_rate`` polls a second: the
        server handles one request at a time, and idle polls should not crowd out
        everyone's heartbeats.
        """
        return max(self.poll_interval or 0.0, len(self._services) / self.idle_poll_rate)

    def _has_run(self, job_id: str) -> bool:
        """True for a job this worker ran recently or holds now (even unstarted)."""
        with self._lock:
            return job_id in self._ran or job_id in self._runs

    def _first_not_run(self, svc: _ServiceRun) -> Job | None:
        """The oldest queued job this worker has not run, when the head of the queue
        is one it has (someone put it back to REGISTERED)."""
        assert self._client is not None
        for job in self._client.queue(svc.id):
            if not self._has_run(job.id):
                return job
        _log.warning(
            "every queued job of service %s already ran in this worker; not running any twice",
            svc.id,
            extra={"service_id": svc.id},
        )
        return None

    def _claim(self, job: Job) -> Job | None:
        """PATCH the job to WORKING; None if the claim cannot be confirmed.

        Transient failures are retried until the worker stops (a PATCH to WORKING is
        safe to repeat); a job whose claim is not confirmed is not run.
        """
        client = self._client
        assert client is not None
        assert job.service_id is not None
        extra = _job_extra(job.id, job.service_id)
        if self._journal is not None:
            self._journal.claimed(job.id, job.service_id)  # before: a crash may follow
        try:
            claimed = self.retry.call(
                lambda: client.update_job(job.id, status=JobStatus.WORKING),
                stop=self._stopping,
                on_retry=self._on_retry("claiming", job.id, job.service_id),
                rand=self._rand,
            )
        except TopChefError as error:
            if isinstance(error, JobNotFoundError) and self._journal is not None:
                self._journal.done(job.id)
            _log.error(
                "could not confirm the claim of job %s of service %s, so it will not run: %s%s",
                job.id,
                job.service_id,
                error,
                "; the journal will check it on the next start" if self._journal else "",
                extra=extra,
            )
            return None
        with self._lock:
            self._answered()
        return attrs.evolve(claimed, service_id=job.service_id)

    def _on_retry(
        self, what: str, job_id: str, service_id: str
    ) -> Callable[[BaseException, int, float], None]:
        """A callback for RetryPolicy.call that logs and tracks the server's health."""

        def note(error: BaseException, attempt: int, delay: float) -> None:
            with self._cond:
                if isinstance(error, TopChefError):
                    self._failed(error)
            _log.log(
                logging.WARNING if attempt == 1 else logging.DEBUG,
                "%s job %s failed (attempt %d), retrying in %.2g s: %s",
                what,
                job_id,
                attempt,
                delay,
                error,
                extra=_job_extra(job_id, service_id),
            )

        return note

    # -- health -----------------------------------------------------------------------

    def _failed(self, error: TopChefError) -> None:
        """Note a failed exchange with the server; called with the lock held."""
        if is_transient(error):
            self._failures += 1
            self._update_health()

    def _answered(self) -> None:
        """Note that the server answered; called with the lock held."""
        if self._failures:
            self._failures = 0
            self._update_health()

    def _update_health(self) -> None:
        """RUNNING or DEGRADED, from failures and overruns; called with the lock held."""
        if self._state not in _ACTIVE:
            return
        overloaded = bool(self._leaked) and len(self._leaked) >= self.max_overrun
        state = (
            WorkerState.DEGRADED
            if self._failures or overloaded or self._pool_broken
            else WorkerState.RUNNING
        )
        if state is self._state:
            return
        self._set_state(state)
        if state is WorkerState.RUNNING:
            _log.info("worker RUNNING again: the server answers and nothing overran")
        elif self._failures:
            _log.warning("worker DEGRADED: the server %s does not answer; retrying", self.url)
        elif overloaded:
            _log.warning(
                "worker DEGRADED: %d handler calls still run after their timeout; "
                "claiming nothing until they end",
                len(self._leaked),
            )
        else:
            _log.error("worker DEGRADED: its job pool is broken; claiming nothing")

    # -- running ----------------------------------------------------------------------

    def _launch(self, run: _JobRun) -> None:
        job, svc = run.job, run.service
        extra = _job_extra(job.id, svc.id)
        if svc.check_parameters is not None:
            reasons = svc.check_parameters(job.parameters)
            if reasons:
                error = InvalidParametersError(
                    f"job {job.id}: parameters fail the registration schema: {'; '.join(reasons)}",
                    job_id=job.id,
                    service_id=svc.id,
                    reasons=reasons,
                )
                with self._lock:
                    run.settled = run.done = True
                self._report(run, None, error)
                return
        if not self._polling:
            self._requeue(run, "the worker is stopping", started=False)
            return
        pool = self._job_pool
        assert pool is not None
        try:
            future = pool.submit(
                call_handler,
                svc.spec.fn,
                job.parameters,
                job if svc.spec.pass_job else None,
                svc.spec.pass_job,
            )
        except Exception as error:  # a shut-down or broken pool
            _log.error("could not start job %s: %s", job.id, error, extra=extra)
            if isinstance(error, BrokenExecutor):
                self._pool_broke(pool, error)
            self._requeue(run, f"the job pool refused it ({error})", started=False)
            return
        _log.debug("job %s of service %s started", job.id, svc.id, extra=extra)
        with self._cond:
            run.future = future
            run.pool = pool
            run.started_at = self._clock()
            self._emit(JobStarted(time=time.time(), job_id=job.id, service_id=svc.id))
            if svc.spec.timeout is not None:
                run.deadline = self._clock() + svc.spec.timeout
                self._cond.notify_all()
        future.add_done_callback(lambda done: self._on_done(run, done))

    def _on_done(self, run: _JobRun, future: Future[Any]) -> None:
        if future.cancelled():
            return  # whoever cancelled it settles it
        with self._cond:
            run.done = True
            if run.started_at is not None:
                run.duration = self._clock() - run.started_at
            if run.settled:
                # Timed out or interrupted: its outcome was already decided.
                _log.info(
                    "job %s finished after its outcome was decided; result discarded",
                    run.job.id,
                    extra=_job_extra(run.job.id, run.service.id),
                )
                self._release(run)
                return
            run.settled = True
        error = future.exception()
        value = None if error is not None else future.result()
        if isinstance(error, BrokenExecutor) and run.pool is not None:
            # Not here: this callback may run on the broken pool's own management
            # thread, which holds locks that shutting the pool down needs.
            self._submit(self._io_pool, self._pool_broke, run.pool, error)
        try:
            self._submit(self._io_pool, self._report, run, value, error)
        except RuntimeError:  # pragma: no cover - the I/O pool outlives every job
            self._report(run, value, error)

    def _pool_broke(self, pool: Executor, error: BaseException) -> None:
        """Replace a broken job pool the worker made; stop claiming if it cannot."""
        with self._cond:
            if pool is not self._job_pool:
                return  # already replaced, for another of its jobs
            if self._given_pool is not None:
                self._pool_broken = True
                self._update_health()
                return
            self._job_pool = self._make_pool()
            self._counts["pool_rebuilds"] += 1
        _log.error("the job pool broke (%s); its jobs end ERROR; a new pool takes over", error)
        pool.shutdown(wait=False, cancel_futures=True)

    def _report(self, run: _JobRun, value: Any, error: BaseException | None) -> None:
        """Deliver a finished job's outcome: COMPLETED with results, or ERROR."""
        job, svc = run.job, run.service
        extra = _job_extra(job.id, svc.id)
        delivered: Report | None = None
        owed: Report | None = None  # what was being sent when the worker gave up
        if error is None:
            plan = success_reports(value, job_id=job.id, service_id=svc.id, check=svc.check_results)
            if isinstance(plan, InvalidResultsError):
                error = plan
            else:
                sent = self._deliver(run, plan[0])
                if sent is None:
                    delivered = plan[0]
                elif is_transient(sent):
                    owed = plan[0]
                elif isinstance(sent, RejectedError):
                    reasons = [entry.detail for entry in sent.errors] or [str(sent)]
                    error = InvalidResultsError(
                        f"job {job.id}: the server rejected the results: {'; '.join(reasons)}",
                        job_id=job.id,
                        service_id=svc.id,
                        reasons=reasons,
                    )
        if error is not None and owed is None:
            _log.error(
                "job %s of service %s failed: %s",
                job.id,
                svc.id,
                _describe(error),
                extra=extra,
                exc_info=None if isinstance(error, TopChefError) else error,
            )
            reports, notes = error_reports(
                error, error_results=svc.spec.error_results, check=svc.check_results
            )
            for note in notes:
                _log.warning("job %s: %s", job.id, note, extra=extra)
            for report in reports:
                sent = self._deliver(run, report)
                if sent is None:
                    delivered = report
                    break
                if is_transient(sent):
                    owed = report
                    break
                if not isinstance(sent, RejectedError):
                    break
                _log.warning(
                    "job %s: the server rejected the error results: %s", job.id, sent, extra=extra
                )
        if delivered is not None and self._journal is not None:
            self._journal.done(job.id)
        with self._cond:
            if owed is not None:
                self._owed[job.id] = Outcome(
                    job_id=job.id, service_id=svc.id, status=owed.status, results=owed.results
                )
            now = time.time()
            if delivered is not None and delivered.status is JobStatus.COMPLETED:
                self._emit(
                    JobCompleted(time=now, job_id=job.id, service_id=svc.id, duration=run.duration)
                )
            elif delivered is not None or owed is not None:
                self._emit(
                    JobFailed(
                        time=now,
                        job_id=job.id,
                        service_id=svc.id,
                        duration=run.duration,
                        error=_describe(error) if error is not None else "not delivered",
                        delivered=delivered is not None,
                    )
                )
            if delivered is None:
                self._counts["undelivered"] += 1
            elif delivered.status is JobStatus.COMPLETED:
                self._counts["completed"] += 1
            else:
                self._counts["failed"] += 1
            run.delivered = True
            self._release(run)
            self._cond.notify_all()
        if delivered is not None:
            _log.info(
                "job %s of service %s: %s in %.3f s",
                job.id,
                svc.id,
                delivered.status.value,
                run.duration,
                extra={**extra, "status": delivered.status.value, "duration": run.duration},
            )
        elif owed is None:
            _log.error(
                "job %s of service %s: the server refused every outcome; it stays WORKING",
                job.id,
                svc.id,
                extra=extra,
            )

    def _deliver(self, run: _JobRun, report: Report) -> TopChefError | None:
        """PATCH one report, retrying transient failures until it lands or the worker
        gives up (``stop``'s timeout); None, or the error that ended the attempts."""
        client = self._client
        assert client is not None
        try:
            self.retry.call(
                lambda: client.update_job(run.job.id, status=report.status, results=report.results),
                stop=self._abandon,
                on_retry=self._on_retry("reporting", run.job.id, run.service.id),
                rand=self._rand,
            )
        except TopChefError as error:
            return error
        with self._lock:
            self._answered()
        return None

    def _release(self, run: _JobRun) -> None:
        """Give a run's slots back; called with the lock held.

        The slot of ``max_jobs`` is free once the outcome is delivered and no call
        runs, or the job timed out (its call, if still running, is counted as an
        overrun).  The handler's ``concurrency`` slot stays taken while the call
        runs: an instrument is busy until its handler returns.
        """
        if not run.delivered:
            return
        if (run.done or run.timed_out) and self._runs.get(run.job.id) is run:
            del self._runs[run.job.id]
            if not run.done:
                self._leaked.add(run)
                self._update_health()
        if run.done and not run.service_released:
            run.service_released = True
            run.service.active -= 1
            if run in self._leaked:
                self._leaked.discard(run)
                self._update_health()
        self._cond.notify_all()

    # -- stopping ---------------------------------------------------------------------

    def _requeue_unstarted(self) -> None:
        """Cancel jobs the pool has not started and put them back to REGISTERED."""
        with self._lock:
            pending = [
                run
                for run in self._runs.values()
                if not run.settled and run.future is not None and run.future.cancel()
            ]
            for run in pending:
                run.settled = run.done = True
        for run in pending:
            self._requeue(run, "it had not started when the worker stopped", started=False)

    def _interrupt_running(self) -> None:
        """Put jobs still running at the stop deadline back to REGISTERED."""
        with self._lock:
            running = [run for run in self._runs.values() if not run.settled]
            for run in running:
                run.settled = True
        for run in running:
            self._requeue(
                run, "it was still running when the worker's stop timeout expired", started=True
            )

    def _requeue(self, run: _JobRun, reason: str, *, started: bool) -> None:
        """PATCH a claimed job back to REGISTERED so another run can take it.

        A job that never *started* may be taken again by this worker, too.
        """
        assert self._client is not None
        job, svc = run.job, run.service
        extra = _job_extra(job.id, svc.id)
        with self._lock:
            run.settled = True
            if run.future is None:
                run.done = True
            if not started:
                self._ran.pop(job.id, None)
        client = self._client
        try:
            _REQUEUE_POLICY.call(
                lambda: client.update_job(job.id, status=JobStatus.REGISTERED),
                sleep=self._sleep,
                rand=self._rand,
            )
        except TopChefError as error:
            done = False
            _log.error(
                "could not put job %s back to REGISTERED (%s): %s",
                job.id,
                reason,
                error,
                extra=extra,
            )
        else:
            done = True
            _log.info("job %s put back to REGISTERED: %s", job.id, reason, extra=extra)
            if self._journal is not None:
                self._journal.done(job.id)
        with self._cond:
            if done:
                self._counts["requeued"] += 1
                self._emit(
                    JobRequeued(time=time.time(), job_id=job.id, service_id=svc.id, reason=reason)
                )
            else:
                self._counts["undelivered"] += 1
                self._owed[job.id] = Outcome(
                    job_id=job.id, service_id=svc.id, status=JobStatus.REGISTERED
                )
            run.delivered = True
            self._release(run)


def _list_outcomes(outcomes: list[Outcome]) -> str:
    return ", ".join(f"{outcome.job_id} {outcome.status.value}" for outcome in outcomes)


def _same_service(a: HandlerSpec, b: HandlerSpec) -> bool:
    if a.service_id is not None or b.service_id is not None:
        return a.service_id == b.service_id
    assert a.service is not None
    assert b.service is not None
    return _spec_key(a.service) == _spec_key(b.service)


def _spec_key(spec: ServiceSpec) -> tuple[str, str, str]:
    import json

    return (
        spec.name,
        json.dumps(spec.job_registration_schema, sort_keys=True),
        json.dumps(spec.job_result_schema, sort_keys=True),
    )


def _qualname(fn: object) -> str:
    return str(getattr(fn, "__qualname__", fn))


def _describe(error: BaseException) -> str:
    if isinstance(error, TopChefError):
        return str(error)
    return f"{type(error).__name__}: {error}"
