"""The scheduler: one thread that decides *when*, and never waits on the network.

Everything a worker does later (a service's next heartbeat, its next poll, a job's
deadline, another try at delivering an outcome) is a :class:`Timer` with a due
time.  Timers sit in a heap, so a wake costs O(log n) whatever the number of
services.  When a timer falls due, the scheduler calls its action on its own thread;
actions only decide and hand the work to a pool through the task launcher
(:mod:`topchef_worker._tasks`), so a slow server never delays the next decision.

Re-arming a timer just records a new due time; the stale heap entry is skipped when
it surfaces (lazy deletion), which keeps every operation cheap.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable

__all__ = ["Scheduler", "Timer"]

_log = logging.getLogger("topchef_worker")

#: The longest the scheduler sleeps without being told anything, so that a clock
#: that is not the wall clock (tests inject one) is read again now and then.
_MAX_NAP = 1.0


class Timer:
    """Something to do at a time: armed with :meth:`Scheduler.arm`."""

    __slots__ = ("action", "due", "name")

    def __init__(self, name: str, action: Callable[[], None]) -> None:
        self.name = name
        self.action = action
        self.due: float | None = None

    def __repr__(self) -> str:
        return f"<Timer {self.name} due={self.due}>"


class Scheduler:
    """A thread that runs timers' actions when they fall due.

    Args:
        cond: The worker's condition; timers are armed and actions run with its
            lock held, so an action sees and changes the worker's state safely.
        clock: Monotonic seconds.
    """

    def __init__(self, cond: threading.Condition, clock: Callable[[], float]) -> None:
        self._cond = cond
        self._clock = clock
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._running = False
        self._thread: threading.Thread | None = None

    def arm(self, timer: Timer, delay: float = 0.0) -> None:
        """Run *timer* in *delay* seconds (earlier than it was due, or instead)."""
        with self._cond:
            due = self._clock() + max(0.0, delay)
            if timer.due is not None and timer.due <= due:
                return  # already due sooner
            timer.due = due
            heapq.heappush(self._heap, (due, next(self._order), timer))
            self._cond.notify_all()

    def rearm(self, timer: Timer, delay: float) -> None:
        """Run *timer* in *delay* seconds, replacing any earlier due time."""
        with self._cond:
            timer.due = None
            self.arm(timer, delay)

    def cancel(self, timer: Timer) -> None:
        """Forget *timer* until it is armed again."""
        with self._cond:
            timer.due = None

    def start(self) -> None:
        """Start the scheduler thread."""
        with self._cond:
            self._running = True
        # A daemon thread: an interpreter that exits without stop() is not kept
        # alive by it (stop() joins it in any case).
        self._thread = threading.Thread(target=self._loop, name="topchef-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """End the scheduler thread and wait up to *timeout* for it."""
        with self._cond:
            self._running = False
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Whether the scheduler thread runs."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _loop(self) -> None:
        with self._cond:
            while self._running:
                now = self._clock()
                while self._heap and self._heap[0][0] <= now:
                    due, _, timer = heapq.heappop(self._heap)
                    if timer.due != due:
                        continue  # re-armed or cancelled since
                    timer.due = None
                    try:
                        timer.action()
                    except Exception:
                        _log.exception("scheduler: %s failed; the scheduler goes on", timer.name)
                nap = _MAX_NAP
                if self._heap:
                    nap = min(nap, max(0.0, self._heap[0][0] - now))
                self._cond.wait(nap)
