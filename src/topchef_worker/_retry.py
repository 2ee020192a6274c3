"""When and how long to wait before trying a failed request again.

:class:`RetryPolicy` is an immutable value: it can be shared by every thread, and its
decisions (:meth:`RetryPolicy.wait`, :meth:`RetryPolicy.retries`) are pure functions
that tests call directly.  :meth:`RetryPolicy.call` runs a function under the policy
with tenacity, sleeping on an event when one is given, so that stopping a worker cuts
any wait short.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import tenacity

from .exceptions import is_transient

__all__ = ["RetryPolicy"]

_T = TypeVar("_T")


def _non_negative(instance: object, attribute: Any, value: float | None) -> None:
    if value is not None and not value >= 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value!r}")


def _positive(instance: object, attribute: Any, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _fraction(instance: object, attribute: Any, value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{attribute.name} must be a fraction in [0, 1), got {value!r}")


def _base(instance: object, attribute: Any, value: float) -> None:
    if not value >= 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value!r}")


def _attempts(instance: object, attribute: Any, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{attribute.name} must be an int >= 1 or None, got {value!r}")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How a failed request is retried: which errors, how often, how long to wait.

    Only transient errors are retried (no answer, 5xx, 429; see
    :func:`~topchef_worker.is_transient`); other 4xx and malformed answers are
    reported at once.  The n-th retry waits ``initial * exp_base**(n-1)`` seconds,
    capped at ``maximum`` and shortened by a random fraction of up to ``jitter``, so
    that many workers do not retry in lockstep against a recovering server.  A
    ``Retry-After`` from the server lengthens the wait, up to ``max_retry_after``.

    Attributes:
        initial: Seconds before the first retry.
        maximum: The longest single wait.
        exp_base: Growth factor between waits.
        jitter: Fraction by which each wait is randomly shortened.
        attempts: Most attempts in all (the first included); None for no limit.
        deadline: Seconds after the first attempt's start from which no attempt
            starts: a wait that would end there or later is not taken, and the last
            error is raised instead.  None for no limit.
        max_retry_after: The longest wait a server's ``Retry-After`` can ask for.
    """

    initial: float = attrs.field(default=0.1, validator=_positive)
    maximum: float = attrs.field(default=10.0, validator=_positive)
    exp_base: float = attrs.field(default=2.0, validator=_base)
    jitter: float = attrs.field(default=0.5, validator=_fraction)
    attempts: int | None = attrs.field(default=5, validator=_attempts)
    deadline: float | None = attrs.field(default=30.0, validator=_non_negative)
    max_retry_after: float = attrs.field(default=60.0, validator=_non_negative)

    @classmethod
    def forever(cls, **changes: Any) -> RetryPolicy:
        """A policy that never gives up, for a worker's own loops.

        Waits grow from 0.2 s to 30 s; only stopping the worker ends the retries.
        """
        settings: dict[str, Any] = {
            "initial": 0.2,
            "maximum": 30.0,
            "attempts": None,
            "deadline": None,
        }
        settings.update(changes)
        return cls(**settings)

    def wait(self, attempt: int, error: BaseException | None = None, rand: float = 0.0) -> float:
        """Seconds to wait after failed attempt number *attempt* (1-based).

        *rand* in [0, 1) draws the jitter; *error*'s ``retry_after``, if any, is a
        lower bound (capped at ``max_retry_after``).
        """
        exponent = min(max(attempt, 1) - 1, 256)
        try:
            base = min(self.maximum, self.initial * self.exp_base**exponent)
        except OverflowError:
            base = self.maximum
        delay = base * (1.0 - self.jitter * rand)
        retry_after = getattr(error, "retry_after", None)
        if isinstance(retry_after, (int, float)) and retry_after > 0:
            delay = max(delay, min(float(retry_after), self.max_retry_after))
        return delay

    def retries(
        self,
        error: BaseException,
        attempt: int,
        elapsed: float,
        wait: float | None = None,
    ) -> bool:
        """Whether to try again after *error* ended attempt *attempt* (1-based),
        *elapsed* seconds after the first attempt started.

        The next attempt would start *wait* seconds from now; it is made only if that
        is before the deadline.  By default *wait* is :meth:`wait` without jitter, the
        longest the policy would wait, so a yes holds whatever the jitter draws.
        """
        if not is_transient(error):
            return False
        if wait is None:
            wait = self.wait(attempt, error)
        return self._may_start(attempt, elapsed + wait)

    def _may_start(self, attempts_made: int, start: float) -> bool:
        """Whether another attempt may follow *attempts_made*, starting *start*
        seconds after the first: the limits alone, whatever the error."""
        if self.attempts is not None and attempts_made >= self.attempts:
            return False
        # An attempt that would start at the deadline or later is not made: stopping
        # at the last failure is better than waiting only to give up.
        return self.deadline is None or start < self.deadline

    def call(
        self,
        fn: Callable[[], _T],
        *,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] | None = None,
        retry_if: Callable[[BaseException], bool] = is_transient,
        on_retry: Callable[[BaseException, int, float], None] | None = None,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> _T:
        """Call *fn* until it returns, or raise its last error.

        Args:
            stop: Setting this event ends the retries: the current wait is cut short
                and the last error is raised.
            sleep: How to wait; by default on *stop* (or ``time.sleep`` without one).
            retry_if: Which errors are worth another attempt, on top of the policy's
                limits (the client narrows it for requests that are not idempotent).
            on_retry: Called with the error, the attempt number and the wait before
                each wait, for logging.
            rand: Draws the jitter, in [0, 1).
            clock: Seconds on a monotonic scale, for the deadline.
        """
        started = clock()
        if sleep is None:
            sleep = tenacity.nap.sleep_using_event(stop) if stop is not None else time.sleep

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome is not None else None
            return self.wait(state.attempt_number, error, rand())

        def before_sleep(state: tenacity.RetryCallState) -> None:
            if on_retry is not None and state.outcome is not None:
                error = state.outcome.exception()
                assert error is not None
                delay = state.next_action.sleep if state.next_action is not None else 0.0
                on_retry(error, state.attempt_number, delay)

        def stops(state: tenacity.RetryCallState) -> bool:
            # tenacity (>= 8.3) computes the wait before it asks whether to stop, so the
            # deadline can be checked against when the next attempt would start.  The
            # policy's own clock is used rather than tenacity's, which cannot be injected.
            if stop is not None and stop.is_set():
                return True
            start = clock() - started + state.upcoming_sleep
            return not self._may_start(state.attempt_number, start)

        def should_retry(error: BaseException) -> bool:
            return retry_if(error) and not (stop is not None and stop.is_set())

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(should_retry),
            stop=stops,
            wait=wait,
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(fn)
