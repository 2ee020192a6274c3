"""The task launcher: the one way a background task runs.

Every heartbeat, poll, delivery and requeue goes through :meth:`Launcher.launch`,
which wraps it the way ``concurrent.futures``' own work items are wrapped: whatever
the task raises (``BaseException`` included) is logged with its traceback and
counted, and the task's bookkeeping (give back a slot, clear an in-flight flag,
wake the scheduler) always runs, in ``finally``.  A task that fails can therefore
never leak a slot, stop a service from being polled again, or vanish unlogged.

The launcher also counts the tasks in flight, so that ``stop()`` can wait for them
with a deadline, and knows which threads run its tasks, so that ``stop()`` called
from one of them (or from a handler) does not wait for itself.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor

__all__ = ["Launcher", "inside_worker", "marked"]

_log = logging.getLogger("topchef_worker")
_local = threading.local()


def inside_worker() -> bool:
    """Whether the current thread runs a worker's task, handler or listener."""
    return bool(getattr(_local, "depth", 0))


class marked:  # noqa: N801 - used like a function, as a context manager
    """Mark the current thread as running a worker's code while inside the block."""

    def __enter__(self) -> None:
        _local.depth = getattr(_local, "depth", 0) + 1

    def __exit__(self, *exc_info: object) -> None:
        _local.depth -= 1


def _skipped() -> None:
    """What a task refused by its pool does: nothing (its cleanup still runs)."""


class Launcher:
    """Runs tasks on pools, logging and counting whatever they raise.

    Args:
        cond: The worker's condition, notified when the number of tasks in flight
            changes.
        counts: The worker's counters; ``task_errors`` counts failed tasks.
    """

    def __init__(
        self,
        cond: threading.Condition,
        counts: Counter[str],
        on_refused: Callable[[], object] = lambda: None,
    ) -> None:
        self._cond = cond
        self._counts = counts
        self._on_refused = on_refused
        self.in_flight = 0

    def launch(
        self,
        pool: Executor,
        what: str,
        task: Callable[[], object],
        *,
        cleanup: Callable[[], object] | None = None,
        critical: bool = False,
    ) -> None:
        """Run *task* on *pool*; *cleanup* runs after it whatever happens.

        When the pool refuses new work (it is shut down, or the interpreter is
        exiting and ``concurrent.futures`` refuses every pool), the worker is told
        to stop claiming (``on_refused``); a *critical* task (an outcome must still
        be delivered, or a job put back) then runs on a thread of its own, and any
        other is skipped, its cleanup run.
        """
        with self._cond:
            self.in_flight += 1

        def run() -> None:
            with marked():
                try:
                    task()
                except BaseException:
                    with self._cond:
                        self._counts["task_errors"] += 1
                    _log.exception("background task failed: %s", what)
                finally:
                    try:
                        if cleanup is not None:
                            cleanup()
                    except BaseException:
                        _log.exception("the bookkeeping after %s failed", what)
                    finally:
                        with self._cond:
                            self.in_flight -= 1
                            self._cond.notify_all()

        try:
            pool.submit(run)
        except RuntimeError:
            self._on_refused()
            if not critical:
                task = _skipped
                run()
                return
            late = threading.Thread(target=run, name="topchef-late", daemon=True)
            try:
                late.start()
            except RuntimeError:  # no new threads either: here, then
                run()

    def wait_idle(self, timeout: float | None, clock: Callable[[], float]) -> bool:
        """Wait until no task is in flight, for at most *timeout* seconds."""
        deadline = None if timeout is None else clock() + timeout
        with self._cond:
            while self.in_flight:
                remaining = None if deadline is None else deadline - clock()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.25 if remaining is None else min(remaining, 0.25))
            return True
