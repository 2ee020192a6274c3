"""A pool that broke: find the job that broke it, and run the others again.

When a child process of a :class:`~concurrent.futures.ProcessPoolExecutor` dies (a
crash in an extension, ``os._exit``, the kernel's OOM killer), the pool breaks and
every job in flight on it fails with ``BrokenProcessPool``: ``concurrent.futures``
cannot say whose process died.  Failing them all would punish the innocent, so the
worker makes a new pool (see :mod:`._pools`) and tries those jobs again one at a
time, each *alone* in the pool: a job that breaks the pool while it runs alone is
the one that did it, and ends ERROR with :class:`JobCrashedError` (or goes back to
the queue, for a handler registered with ``on_crash="requeue"``).  While suspects
are tried, the pool's new jobs wait their turn behind them, so that each suspect
runs alone; then jobs run side by side again.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Executor

from ._jobrun import JobRun

__all__ = ["Isolation"]


class Isolation:
    """Per pool name: the job being tried alone, and the jobs waiting their turn.

    Not thread-safe: the caller holds the worker's lock.
    """

    def __init__(self) -> None:
        self._queue: dict[str, deque[JobRun]] = {}
        self._alone: dict[str, JobRun] = {}  # per pool name: the job tried alone
        self._calls: dict[int, set[JobRun]] = {}  # calls in flight, per executor
        self._company: set[JobRun] = set()  # ran while another call ran on its executor

    def admit(self, pool: str, run: JobRun) -> bool:
        """Whether *run* may go to *pool* now; if not, it waits its turn."""
        if pool in self._alone or self._queue.get(pool):
            self._queue.setdefault(pool, deque()).append(run)
            return False
        return True

    def started(self, run: JobRun, executor: Executor) -> None:
        """*run*'s call went to *executor*."""
        calls = self._calls.setdefault(id(executor), set())
        if calls:
            self._company.add(run)
            self._company.update(calls)
        calls.add(run)

    def ended(self, run: JobRun, executor: Executor) -> None:
        """*run*'s call on *executor* ended."""
        calls = self._calls.get(id(executor))
        if calls is not None:
            calls.discard(run)
            if not calls:
                del self._calls[id(executor)]

    def broke(self, pool: str, run: JobRun) -> bool:
        """*run*'s call failed because its pool broke: True if it is to blame (no
        other call ran beside it, or it broke the pool three times), else it waits
        to be tried alone."""
        if run not in self._company or run.breaks >= 2:
            return True
        run.breaks += 1
        self._queue.setdefault(pool, deque()).append(run)
        return False

    def next(self, pool: str, run: JobRun) -> JobRun | None:
        """*run* ended: the next job to try alone on *pool*, if any waits its turn."""
        self._company.discard(run)
        if self._alone.get(pool) is run:
            del self._alone[pool]
        if pool in self._alone:
            return None
        queue = self._queue.get(pool)
        if not queue:
            self._queue.pop(pool, None)
            return None
        following = self._alone[pool] = queue.popleft()  # the pool's turn is its now
        return following

    def has_turn(self, pool: str, run: JobRun) -> bool:
        """Whether *run* is the job *pool* runs alone now."""
        return self._alone.get(pool) is run

    def drain(self) -> list[JobRun]:
        """Every job still waiting its turn (the worker stops)."""
        runs = [run for queue in self._queue.values() for run in queue]
        self._queue.clear()
        return runs
