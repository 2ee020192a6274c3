"""A stop under way: one deadline, tightened by later calls, and its own thread.

``stop()`` runs the stop sequence (see :mod:`topchef_worker._runtime`) on a thread
of its own and waits for it, bounded.  That keeps three promises at once:

* a second ``stop()`` with a shorter timeout, a second signal, or a Ctrl-C that
  interrupts the wait only move the deadline closer; the sequence itself is never
  interrupted halfway, so no job is left WORKING for good;
* ``stop()`` called from a handler or a listener starts the stop and returns, since
  the stop would otherwise wait for the very call it is made from;
* when the interpreter is exiting and no new thread may start, the sequence runs on
  the calling thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ._settings import STOP_MARGIN

__all__ = ["Shutdown"]

_log = logging.getLogger("topchef_worker")


class Shutdown:
    """The deadline and the thread of one worker's stop.

    Args:
        cond: The worker's condition (notified when the deadline moves).
        clock: Monotonic seconds, the same clock as the deadline's.
    """

    def __init__(self, cond: threading.Condition, clock: Callable[[], float]) -> None:
        self._cond = cond
        self._clock = clock
        self.deadline: float | None = None
        self.cancel = False
        self.threads: list[threading.Thread] = []  # one, unless a launch was interrupted
        self.began = False  # the sequence began (it runs once)

    def tighten(self, limit: float | None, cancel: bool) -> None:
        """Make the deadline *limit* seconds from now, unless it is sooner already."""
        with self._cond:
            if limit is not None:
                deadline = self._clock() + limit
                if self.deadline is None or deadline < self.deadline:
                    self.deadline = deadline
            self.cancel = self.cancel or cancel
            self._cond.notify_all()

    def hurry(self) -> None:
        """Make the deadline now."""
        self.tighten(0.0, False)

    def launch(self, sequence: Callable[[], None]) -> None:
        """Run *sequence* on a thread of its own (here, if no thread can start).

        A Ctrl-C can interrupt a launch anywhere, and the caller then launches
        again; the sequence runs once whatever happened, so a second thread that
        finds it begun simply ends.
        """

        def once() -> None:
            with self._cond:
                if self.began:
                    return
                self.began = True
            sequence()

        with self._cond:
            if self.began:
                return
        thread = threading.Thread(target=once, name="topchef-stop")
        self.threads.append(thread)
        try:
            thread.start()
        except RuntimeError:  # the interpreter is exiting: no new threads
            self.threads.remove(thread)
            once()

    def wait(self, stopped: Callable[[], bool], hurried: Callable[[], bool]) -> None:
        """Wait until *stopped*, at most until the deadline plus ``STOP_MARGIN``;
        *hurried* (a second signal) or Ctrl-C hurries the stop, and a Ctrl-C is
        raised again once the wait is over."""
        interrupted: BaseException | None = None
        while True:
            try:
                with self._cond:
                    while not stopped():
                        if hurried():
                            self.hurry()
                        remaining = self._remaining()
                        if remaining is not None and remaining <= 0:
                            _log.error("stop() gives up waiting: the stop sequence is stuck")
                            break
                        self._cond.wait(0.25 if remaining is None else min(remaining, 0.25))
                break
            except KeyboardInterrupt as error:
                interrupted = error
                self.hurry()
        self.join()
        if interrupted is not None:
            raise interrupted

    @property
    def under_way(self) -> bool:
        """The sequence began, or a thread that will begin it runs."""
        return self.began or any(thread.is_alive() for thread in self.threads)

    def join(self) -> None:
        """Wait for the stop threads, at most until the deadline plus ``STOP_MARGIN``."""
        for thread in list(self.threads):
            if thread is not threading.current_thread() and thread.ident is not None:
                remaining = self._remaining()
                thread.join(STOP_MARGIN if remaining is None else max(0.0, remaining))

    def remaining(self) -> float | None:
        """Seconds left of the bound (None: no deadline)."""
        return self._remaining()

    def _remaining(self) -> float | None:
        with self._cond:
            if self.deadline is None:
                return None
            return self.deadline + STOP_MARGIN - self._clock()
