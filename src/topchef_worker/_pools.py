"""The job pool: the executor handlers run on, and what to do when it breaks.

A worker runs handlers on any :class:`concurrent.futures.Executor`.  It may make the
pool itself (a thread pool by default, or with a function the user gave), or use a
pool instance the user passed in and owns.  A pool can stop working: a process pool
breaks when a child dies (:class:`~concurrent.futures.BrokenExecutor`), and a pool
passed in may be shut down by its owner.  A pool the worker can make again is
replaced; one it cannot is reported once, loudly, and the worker stops claiming
jobs and says it is not alive (a restart is the cure), instead of claiming and
requeueing the same job in a hot loop.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import (
    BrokenExecutor,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
)
from typing import Any

from ._eventloop import LoopExecutor
from ._execution import check_picklable
from ._health import HealthMonitor
from .exceptions import ConfigurationError

__all__ = [
    "DEFAULT",
    "EVENT_LOOP",
    "JobPool",
    "PoolSource",
    "PoolUnavailableError",
    "Pools",
    "unpicklable",
]

#: The pool of handlers that name none: ``job_pool``, a thread pool by default.
DEFAULT = "default"
#: The worker's event loop, where coroutine handlers run.
EVENT_LOOP = "asyncio"

#: What a pool is made from: an executor its owner passed in, a function that makes
#: one, or None for the worker's own default.
PoolSource = Executor | Callable[[], Executor] | None

_log = logging.getLogger("topchef_worker")


class PoolUnavailableError(Exception):
    """The job pool refused a job (say why in the message)."""


class JobPool:
    """Holds the current job pool, replaces it when it breaks.

    Args:
        given: A pool instance passed in; its owner shuts it down.
        factory: A function making a pool (the user's, or the default).
        retire: Called with a broken pool the worker made, to shut it down off
            the thread that noticed (which may be the broken pool's own).
    """

    def __init__(
        self,
        *,
        given: Executor | None,
        factory: Callable[[], Executor],
        cond: threading.Condition,
        counts: Counter[str],
        health: HealthMonitor,
        retire: Callable[[Executor], None],
    ) -> None:
        self._given = given
        self._factory = factory
        self._cond = cond
        self._counts = counts
        self._health = health
        self._retire = retire
        self._pool: Executor | None = None
        self.unusable: str | None = None  # why no job can run, for good

    def open(self) -> None:
        """Make (or take) the pool."""
        self._pool = self._given if self._given is not None else self._factory()

    @property
    def current(self) -> Executor | None:
        """The executor jobs go to now."""
        return self._pool

    def submit(self, fn: Callable[..., Any], *args: Any) -> tuple[Future[Any], Executor]:
        """Submit a call; raise :class:`PoolUnavailableError` if the pool refuses it."""
        with self._cond:
            pool = self._pool
            if pool is None or self.unusable is not None:
                raise PoolUnavailableError(self.unusable or "the job pool is closed")
        try:
            return pool.submit(fn, *args), pool
        except BrokenExecutor as error:
            self.broke(pool, error)
            raise PoolUnavailableError(f"the job pool is broken ({error})") from error
        except RuntimeError as error:  # shut down
            if pool is self._given:
                self._cannot_run(f"the job pool given to the worker was shut down ({error})")
            raise PoolUnavailableError(f"the job pool refused the job ({error})") from error

    def broke(self, pool: Executor, error: BaseException) -> None:
        """A job found *pool* broken: replace it, or stop running jobs."""
        with self._cond:
            if pool is not self._pool:
                return  # already replaced, for another of its jobs
            if pool is self._given:
                self._cannot_run(f"the job pool given to the worker is broken ({error})")
                return
            try:
                self._pool = self._factory()
            except Exception as failure:
                _log.exception("could not make a new job pool")
                self._cannot_run(f"the job pool broke and could not be replaced ({failure})")
                return
            self._counts["pool_rebuilds"] += 1
        _log.error("the job pool broke (%s); its jobs end ERROR; a new pool takes over", error)
        self._retire(pool)

    def _cannot_run(self, reason: str) -> None:
        with self._cond:
            if self.unusable is not None:
                return
            self.unusable = reason
            self._health.condition("pool", f"{reason}: this worker cannot run jobs")
        _log.error(
            "%s: this worker cannot run jobs and claims none; restart it with a working pool "
            "(or give Worker(job_pool=...) a function that makes one)",
            reason,
        )

    def close(self, *, wait: bool) -> None:
        """Shut down a pool the worker made (a pool passed in is its owner's)."""
        with self._cond:
            pool, self._pool = self._pool, None
        if pool is not None and pool is not self._given:
            pool.shutdown(wait=wait, cancel_futures=True)


def default_pool(size: int) -> Callable[[], Executor]:
    """A thread pool of *size* threads, made anew when asked."""
    return lambda: ThreadPoolExecutor(size, "topchef-job")


class Pools:
    """The worker's named job pools: each handler runs on one.

    ``default`` is ``job_pool`` (a thread pool of ``max_jobs + max_overrun`` threads
    unless given), ``asyncio`` the worker's event loop for coroutine handlers, and
    any other name a pool from ``Worker(pools=...)``.  Only the pools some handler
    uses are made.

    Args:
        sources: Per name, what the pool is made from.
        used: The names some handler uses.
        default_size: Threads of the default pool the worker makes.
    """

    def __init__(
        self,
        sources: dict[str, PoolSource],
        used: set[str],
        *,
        default_size: int,
        cond: threading.Condition,
        counts: Counter[str],
        health: HealthMonitor,
        retire: Callable[[Executor], None],
    ) -> None:
        made: dict[str, Callable[[], Executor]] = {
            DEFAULT: default_pool(default_size),
            EVENT_LOOP: LoopExecutor,
        }
        self._pools: dict[str, JobPool] = {}
        for name in sorted(used):
            source = sources.get(name)
            given = source if isinstance(source, Executor) else None
            factory = source if callable(source) and given is None else made.get(name)
            self._pools[name] = JobPool(
                given=given,
                factory=factory or _cannot_make(name),
                cond=cond,
                counts=counts,
                health=health,
                retire=retire,
            )

    def __getitem__(self, name: str) -> JobPool:
        return self._pools[name]

    def open(self, handlers: Iterable[tuple[str, Callable[..., Any]]]) -> None:
        """Make (or take) every pool, and check that the *handlers* (pool name and
        function) bound for a process pool pickle: a function that does not would
        fail every one of its jobs.  Raises :class:`ConfigurationError` naming the
        function, with every pool closed again."""
        try:
            for pool in self._pools.values():
                pool.open()
        except BaseException:
            self.close(wait=False)  # the pools made so far
            raise
        for name, fn in handlers:
            if not isinstance(self._pools[name].current, ProcessPoolExecutor):
                continue
            problem = check_picklable(fn)
            if problem is not None:
                self.close(wait=False)
                raise ConfigurationError(unpicklable(fn, name, problem))

    def describe(self) -> str:
        """The pools by name and kind, for the start line: ``default (ThreadPoolExecutor)``."""
        return ", ".join(
            f"{name} ({type(pool.current).__name__})" for name, pool in self._pools.items()
        )

    @property
    def unusable(self) -> str | None:
        """Why some pool cannot run jobs, for good (None: every pool can)."""
        return next((pool.unusable for pool in self._pools.values() if pool.unusable), None)

    def close(self, *, wait: bool) -> None:
        for pool in self._pools.values():
            pool.close(wait=wait)


def pool_sources(
    job_pool: PoolSource, pools: Mapping[str, Executor | Callable[[], Executor]] | None
) -> dict[str, PoolSource]:
    """The worker's pools by name, from ``Worker(job_pool=..., pools=...)``, checked."""
    sources: dict[str, PoolSource] = {DEFAULT: None, EVENT_LOOP: None}
    if not (isinstance(job_pool, Executor) or job_pool is None or callable(job_pool)):
        raise ConfigurationError(
            f"job_pool must be an Executor or a function making one, got {job_pool!r}"
        )
    sources[DEFAULT] = job_pool
    for name, source in (pools or {}).items():
        if name in sources or not isinstance(name, str) or not name:
            raise ConfigurationError(
                f"pool names must be strings other than {DEFAULT!r} and {EVENT_LOOP!r} "
                f"(give the default pool as job_pool=), got {name!r}"
            )
        if not isinstance(source, Executor) and not callable(source):
            raise ConfigurationError(
                f"pool {name!r} must be an Executor or a function making one, got {source!r:.80}"
            )
        sources[name] = source
    return sources


def unpicklable(fn: Callable[..., Any], pool: str, problem: str) -> str:
    """The message for a handler that cannot be sent to process pool *pool*."""
    name = getattr(fn, "__qualname__", repr(fn))
    return (
        f"handler {name} cannot run on pool {pool!r}, a process pool: it does not pickle "
        f"({problem}); define it at the top level of a module (a lambda, a closure or a "
        "function defined inside another cannot be sent to another process)"
    )


def _cannot_make(name: str) -> Callable[[], Executor]:
    def make() -> Executor:
        raise RuntimeError(f"pool {name!r} was given as an executor; the worker cannot make one")

    return make
