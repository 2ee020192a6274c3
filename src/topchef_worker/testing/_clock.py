"""A clock that moves only when a test says so."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

__all__ = ["ManualClock"]


class ManualClock:
    """A thread-safe wall clock for :class:`TopChefServer` that tests advance by hand.

    The server reads it for check-ins, ``has_timed_out`` and submission dates, so a
    test can let a service time out without waiting.

    Args:
        start: The initial time; an aware UTC datetime (naive values are taken as
            UTC).  Defaults to the current time.
    """

    def __init__(self, start: datetime | None = None) -> None:
        now = start or datetime.now(UTC)
        self._now = now if now.tzinfo else now.replace(tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, by: float | timedelta) -> datetime:
        """Move the clock forward by seconds or a timedelta and return the new time."""
        step = by if isinstance(by, timedelta) else timedelta(seconds=by)
        if step < timedelta(0):
            raise ValueError(f"a clock only moves forward; got {by!r}")
        with self._lock:
            self._now += step
            return self._now
