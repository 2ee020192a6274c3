"""The worker: handlers registered with a decorator, run as futures on a job pool.

:class:`Worker` is the facade users hold.  It keeps the settings, the handlers and
the listeners, and starts and stops the parts that do the work, each in a module of
its own:

* ``_scheduler``: one thread that keeps every due time in a heap and decides;
* ``_heartbeat`` and ``_poll``: the check-in and poll-and-claim tasks it launches on
  two thread pools (heartbeats have their own, so nothing delays them);
* ``_tasks``: the launcher every background task goes through;
* ``_capacity``: slots, reserved before a poll and released once;
* ``_pools``, ``_jobrun`` and ``_runs``: the job pool, and a claimed job's life on it;
* ``_delivery``: outcomes sent, retried while the worker runs, kept when it cannot;
* ``_ledger`` and ``_recovery``: the journal and the outbox, and what a start does
  with what a crashed run left;
* ``_health``: the state, DEGRADED or not, and the health report;
* ``_lifecycle``, ``_startup``, ``_runtime``, ``_shutdown`` and ``_runner``: the
  worker's own life: start, the stop sequence, ``run()``.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

import attrs
import requests

from ._arguments import redact
from ._client import DEFAULT_TIMEOUT, TimeoutLike, TopChefClient
from ._execution import check_picklable
from ._handlers import ErrorResults, HandlerSpec, add_handler
from ._health import HealthMonitor
from ._lifecycle import Lifecycle
from ._listeners import Listener, Listeners
from ._models import Service
from ._pools import pool_sources, unpicklable
from ._retry import RetryPolicy
from ._runner import Runner
from ._runtime import stats_without_runtime
from ._settings import STOP_MARGIN, Settings
from ._stats import Health, WorkerState, WorkerStats
from .exceptions import ConfigurationError

__all__ = ["Worker"]

_log = logging.getLogger("topchef_worker")
_F = TypeVar("_F", bound=Callable[..., Any])


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
            shut down when it stops and replaced if they break; a pool passed in is
            left to its owner, and if it breaks or is shut down the worker claims
            nothing more and says it is not alive.
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
        retry: How failed requests are retried; by default
            :meth:`RetryPolicy.forever`: heartbeats, polls and deliveries never give
            up while the worker runs, and stopping it cuts any wait short.
        outbox: A file (JSON lines) where outcomes not delivered are kept as soon as
            a delivery fails, to be delivered when the server is back, or on the
            next start.
        journal: A file (JSON lines) recording claimed jobs until they are settled;
            after a crash the next start returns those still WORKING to the queue (or
            ends them ERROR, per handler ``on_orphan``).
        max_overrun: How many handler calls may still run after their job timed out
            before the worker stops claiming (default ``max_jobs``): threads cannot
            be killed, and this keeps them from piling up.
        pools: More job pools, by name, for handlers that choose one with
            ``@worker.handler(..., pool=NAME)``: an Executor (its owner shuts it
            down) or a function that makes one (the worker does, and makes it anew
            if it breaks).  Say, a process pool for CPU-bound handlers next to the
            default thread pool.  ``async def`` handlers run on the worker's own
            event loop, pool ``"asyncio"``.
        exclusive: Serve each service only while no other worker does (the
            default): a second worker started on a service waits as a standby
            (``WorkerState.STANDBY``) and takes over when the first stops or dies.
            TopChef cannot stop two workers from claiming the same job, so with
            ``False`` (for idempotent handlers only) workers share a service and
            some jobs run more than once.  See ``docs/scaling.md``.
        lease_settle: Seconds a worker waits between writing its claim to a
            service's lease and reading it back, to learn whether another worker
            starting at the same moment wrote later (and won).  Every worker of a
            service must use the same value; 0.1 s is plenty on one machine.
        clock: Monotonic seconds, for scheduling.
        rand: Returns floats in [0, 1), for jitter.
    """

    #: Seconds that ``stop(timeout)`` may take beyond its timeout.
    STOP_MARGIN = STOP_MARGIN

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
        retry: RetryPolicy | None = None,
        outbox: str | os.PathLike[str] | None = None,
        journal: str | os.PathLike[str] | None = None,
        max_overrun: int | None = None,
        exclusive: bool = True,
        lease_settle: float | timedelta = 1.0,
        pools: Mapping[str, Executor | Callable[[], Executor]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] | None = None,
    ) -> None:
        if client is not None and (url is not None or session is not None):
            raise ConfigurationError("give either client or url/session, not both")
        self.settings = Settings(
            url=url,
            max_jobs=max_jobs,
            heartbeat_interval=heartbeat_interval,
            poll_interval=poll_interval,
            min_poll_interval=min_poll_interval,
            idle_poll_rate=idle_poll_rate,
            jitter=jitter,
            request_timeout=request_timeout,
            retry=retry or RetryPolicy.forever(),
            max_overrun=max_overrun,
            outbox=outbox,
            journal=journal,
            exclusive=exclusive,
            lease_settle=lease_settle,
        )
        self._pools = pool_sources(job_pool, pools)
        self._session = session
        self._given_client = client
        self._clock = clock
        self._rand = rand or random.Random().random
        self._handlers: list[HandlerSpec] = []
        self._listeners = Listeners()
        self._cond = threading.Condition(threading.RLock())
        self._counts: Counter[str] = Counter()
        self._health = HealthMonitor(self._cond, self._listeners.emit)
        self._runner: Runner | None = None
        self._life = Lifecycle(
            cond=self._cond,
            clock=clock,
            rand=self._rand,
            counts=self._counts,
            health=self._health,
            listeners=self._listeners,
            wake=self._wake_runner,
        )

    def __repr__(self) -> str:
        return f"<Worker {redact(self.url or '(no URL yet)')} {self.state.value}>"

    @property
    def url(self) -> str | None:
        """The server's URL (None until known), from the code, ``configure`` or a client."""
        return self.settings.url if self._given_client is None else self._given_client.base_url

    @property
    def max_jobs(self) -> int:
        return self.settings.max_jobs

    def configure(
        self,
        *,
        url: str | None = None,
        max_jobs: int | None = None,
        outbox: str | os.PathLike[str] | None = None,
        journal: str | os.PathLike[str] | None = None,
    ) -> None:
        """Override settings before the worker starts (the command line uses this)."""
        with self._cond:
            if self.state is not WorkerState.NEW:
                raise ConfigurationError("configure a worker before it starts")
            if url is not None and self._given_client is not None:
                raise ConfigurationError("this worker was given a client; its URL is fixed")
            changes: dict[str, Any] = {
                "url": url,
                "max_jobs": max_jobs,
                "outbox": outbox,
                "journal": journal,
            }
            self.settings = attrs.evolve(
                self.settings, **{key: value for key, value in changes.items() if value is not None}
            )

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
        exclusive: bool | None = None,
        pool: str | None = None,
        retry: RetryPolicy | None = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        on_crash: str = "error",
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
                must not run twice).  It applies too when this worker takes over a
                service from one that stopped checking in.
            exclusive: Overrides the worker's ``exclusive`` for this service.
            pool: The name of the job pool to run on (see ``Worker(pools=...)``):
                ``"default"`` (``job_pool``) for functions, ``"asyncio"`` (the
                worker's event loop) for ``async def`` handlers, which are awaited
                there: many at once on one thread, and cancelled for real at their
                ``timeout`` or by ``stop(cancel=True)``.
            retry: Run the handler again, after this policy's waits, when it raised
                one of ``retry_on`` (say an instrument that was busy), before the job
                ends ERROR.  The job keeps its slot between attempts, and its
                ``timeout`` counts from the first.  By default, no retries.
            retry_on: The exception class (or tuple of them) worth another attempt.
            on_crash: What becomes of a job whose handler's process died (its
                process pool broke while the job ran alone in it): ``"error"``
                ends it ERROR with :class:`JobCrashedError`, ``"requeue"`` puts it
                back.  The other jobs in flight in the broken pool run again.
        """
        if callable(service_id):
            raise ConfigurationError(
                "use @worker.handler(service_id) or @worker.handler(name=..., ...), "
                "not a bare @worker.handler"
            )

        options: dict[str, Any] = {
            "service_id": service_id,
            "name": name,
            "description": description,
            "job_registration_schema": job_registration_schema,
            "job_result_schema": job_result_schema,
            "service_timeout": service_timeout,
            "concurrency": concurrency,
            "timeout": timeout,
            "error_results": error_results,
            "on_orphan": on_orphan,
            "exclusive": exclusive,
            "pool": pool,
            "retry": retry,
            "retry_on": retry_on,
            "on_crash": on_crash,
        }

        def register(fn: _F) -> _F:
            spec = HandlerSpec.build(fn, **options, pools=self._pools.keys())
            given = self._pools.get(spec.pool)
            if isinstance(given, ProcessPoolExecutor):
                problem = check_picklable(fn)
                if problem is not None:
                    raise ConfigurationError(unpicklable(fn, spec.pool, problem))
            with self._cond:
                if self.state is not WorkerState.NEW:
                    raise ConfigurationError(
                        f"register handlers before the worker starts; it is {self.state.value}"
                    )
                add_handler(self._handlers, spec)
            return fn

        return register

    # -- listeners --------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call *listener* with every :class:`~topchef_worker.events.Event` from now on.

        Listeners run one at a time, in order, on a thread of the worker's own, so a
        slow listener never delays heartbeats or jobs; one that raises is logged and
        kept.
        """
        self._listeners.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling *listener*."""
        self._listeners.remove(listener)

    # -- starting ---------------------------------------------------------------------

    @property
    def state(self) -> WorkerState:
        """Where the worker is in its life."""
        return self._health.state

    def start(self) -> None:
        """Start the worker, and return at once.

        Configuration errors (no URL, a malformed one, no handlers, a ledger file
        that cannot be opened) raise :class:`ConfigurationError` here.  The server is
        then reached in the background: the state is STARTING until every service
        is found (see :meth:`wait_ready`), and a WARNING repeats while the server does
        not answer.  Installs no signal handlers.
        """
        settings = self._life.start(
            self.settings,
            self._handlers,
            client=self._given_client,
            session=self._session,
            pools=dict(self._pools),
        )
        if settings is not None:
            self.settings = settings

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the worker runs (True), or *timeout* seconds pass (False).

        Raises the error that kept the worker from starting, such as a
        :class:`ConfigurationError` naming a service the server does not know.
        False, too, if the worker was stopped before it was ready.
        """
        return self._life.wait_ready(timeout)

    def stop(self, timeout: float | timedelta | None = None, cancel: bool = False) -> None:
        """Stop the worker: it returns within *timeout* plus a few seconds.

        Claiming stops first.  Running jobs may finish for up to *timeout* seconds
        (None: as long as they take), their outcomes delivered; with ``cancel=True``
        jobs not yet started go back to the queue at once.  At the timeout, jobs not
        finished go back to REGISTERED (a call that still runs cannot be killed; its
        result is discarded), and within ``STOP_MARGIN`` (5 s) more every outcome is
        delivered, kept in the outbox, or named in an ERROR log line.  Heartbeats
        stop last.  Safe to call more than once and from any thread; a later call
        with a shorter timeout hurries a stop under way.  Called from a handler or a
        listener, it starts the stop and returns at once.
        """
        runner = self._runner
        self._life.stop(
            _seconds(timeout), cancel, hurried=lambda: runner is not None and runner.hurry
        )

    # -- run() ------------------------------------------------------------------------

    def run(
        self, *, until_idle: bool = False, stop_timeout: float | timedelta | None = None
    ) -> None:
        """Start the worker and block until it is told to stop, then stop it.

        On the main thread, SIGINT and SIGTERM stop the worker gracefully (running
        jobs finish, for up to *stop_timeout*); a second signal stops it at once, still
        putting unstarted and interrupted jobs back to REGISTERED.  With
        ``until_idle=True`` it also returns once every service's queue was found empty
        (or is served by another worker) with nothing in flight: for batch runs and
        tests.  Raises the error that kept the worker from starting, if one did.  In
        a program that configured no logging, INFO records go to stderr meanwhile.
        """
        runner = Runner(
            start=self.start,
            stop=lambda limit: self.stop(limit),
            keep_going=lambda: self.state not in (WorkerState.STOPPING, WorkerState.STOPPED),
            idle=lambda: self._life.runtime is not None and self._life.runtime.idle(),
        )
        self._runner = runner
        try:
            runner.run(until_idle=until_idle, stop_timeout=_seconds(stop_timeout))
        finally:
            self._runner = None
        if self._life.failure is not None:
            raise self._life.failure

    def _wake_runner(self) -> None:
        runner = self._runner
        if runner is not None:
            runner.wake()

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- observation ------------------------------------------------------------------

    def stats(self) -> WorkerStats:
        """A snapshot of the worker's counters and its jobs in flight."""
        with self._cond:
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
                self._cond.wait(min(remaining, 0.5))

    def _snapshot(self) -> WorkerStats:
        if self._life.runtime is not None:
            return self._life.runtime.stats(self.state)
        return stats_without_runtime(self._counts, self.state)

    def health(self) -> Health:
        """Whether the worker is alive, ready for jobs, and healthy (see
        :class:`Health`)."""
        with self._cond:
            runtime, state = self._life.runtime, self.state
            problems = (
                [] if self._life.failure is None else [f"could not start: {self._life.failure}"]
            )
            if runtime is None:
                return self._health.report(
                    alive=state is WorkerState.STARTING, in_flight=0, services=[], problems=problems
                )
            return runtime.health(self._clock(), problems)

    @property
    def services(self) -> list[Service]:
        """The services the worker runs, once found (empty before)."""
        with self._cond:
            runtime = self._life.runtime
            return [svc.service for svc in runtime.services] if runtime else []


def _seconds(timeout: float | timedelta | None) -> float | None:
    if timeout is None:
        return None
    limit = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
    if limit < 0:
        raise ConfigurationError(f"stop timeout must not be negative, got {timeout!r}")
    return limit
