"""Handler retries: another attempt at a job whose handler raised a retryable error.

``@worker.handler(..., retry=RetryPolicy(...), retry_on=(InstrumentBusy,))`` runs the
handler again, after the policy's wait, when it raised one of ``retry_on``: an
instrument that was busy, a network share that blinked.  The job keeps its slot (and
stays WORKING) between attempts; its ``timeout`` counts from the first attempt.  The
decision is made here, in the worker, whatever pool ran the call, so that events and
stats count every attempt, and no pool thread sleeps through a wait.
"""

from __future__ import annotations

from ._handlers import HandlerSpec

__all__ = ["next_attempt"]


def next_attempt(
    spec: HandlerSpec, attempt: int, error: BaseException, elapsed: float, rand: float
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1`` of a call that raised *error*
    *elapsed* seconds after the first attempt started; None: no more attempts."""
    policy = spec.retry
    if policy is None or not isinstance(error, spec.retry_on):
        return None
    if policy.attempts is not None and attempt >= policy.attempts:
        return None
    delay = policy.wait(attempt, error, rand)
    if policy.deadline is not None and elapsed + delay > policy.deadline:
        return None
    return delay
