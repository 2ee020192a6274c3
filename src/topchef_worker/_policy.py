"""The worker's decisions, as pure functions.

Nothing here does I/O or reads a clock, so each rule (how long to wait before the
next poll, when to beat, what to send for an outcome) is tested on its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from ._models import JobStatus
from .exceptions import HandlerError, InvalidResultsError

__all__ = [
    "Report",
    "default_error_results",
    "error_reports",
    "error_text",
    "heartbeat_delay",
    "poll_delay",
    "success_reports",
]

Rand = Callable[[], float]


def poll_delay(
    empty_polls: int, *, minimum: float, maximum: float, jitter: float, rand: Rand
) -> float:
    """Seconds to wait before polling a service again.

    0 after a poll that found a job (there may be more); after *empty_polls*
    consecutive empty (or failed) polls, ``minimum * 2**(n-1)`` capped at *maximum*,
    shortened by up to *jitter* (a fraction) so that many workers started together
    drift apart instead of polling in lockstep.
    """
    if empty_polls <= 0:
        return 0.0
    base = min(maximum, minimum * 2.0 ** min(empty_polls - 1, 64))
    return base * (1.0 - jitter * rand())


def heartbeat_delay(interval: float, *, jitter: float, rand: Rand) -> float:
    """Seconds until the next heartbeat: *interval*, up to *jitter* (a fraction) shorter.

    Jitter only ever shortens the period, so the timeout the interval was chosen for
    (``timeout / 3`` by default) is never approached.
    """
    return interval * (1.0 - jitter * rand())


@attrs.frozen
class Report:
    """One PATCH to send for a finished job: a status and, maybe, results."""

    status: JobStatus
    results: dict[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        """The JSON body of the PATCH."""
        body: dict[str, Any] = {"status": self.status.value}
        if self.results is not None:
            body["results"] = self.results
        return body


def _sendable(value: object, check: Callable[[Any], list[str]] | None) -> list[str]:
    """List why *value* cannot be sent as results; empty when it can."""
    if not isinstance(value, Mapping):
        return [f"the handler returned {type(value).__name__}, expected a dict (a JSON object)"]
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as error:
        return [f"the results are not JSON-serialisable: {type(error).__name__}: {error}"]
    if check is not None:
        return check(dict(value))
    return []


def success_reports(
    value: object,
    *,
    job_id: str,
    service_id: str,
    check: Callable[[Any], list[str]] | None,
) -> tuple[Report, ...] | InvalidResultsError:
    """What to send for a handler that returned *value*.

    A COMPLETED report when the value can be sent (a dict, JSON-serialisable, valid
    for the result schema when a local check is available); otherwise the
    :class:`InvalidResultsError` that explains why, for the ERROR path.
    """
    reasons = _sendable(value, check)
    if reasons:
        return InvalidResultsError(
            f"job {job_id}: results cannot be sent: {'; '.join(reasons)}",
            job_id=job_id,
            service_id=service_id,
            reasons=reasons,
        )
    assert isinstance(value, Mapping)
    return (Report(JobStatus.COMPLETED, dict(value)),)


def error_text(error: BaseException) -> str:
    """``str(error)``, or a stand-in when the exception's own ``__str__`` raises: a
    handler's odd exception must never keep its job from ending."""
    try:
        return str(error)
    except Exception as failure:
        return f"<str() of {type(error).__name__} raised {type(failure).__name__}>"


#: Longest exception message sent in default error results: a message is for a
#: person, and a results column is no place for a megabyte of it.
MESSAGE_LIMIT = 2000


def default_error_results(error: BaseException) -> dict[str, str]:
    """What a failed job reports without a handler's ``error_results``: the
    exception's type and message, ``{"error": "...", "error_type": "ValueError"}``.

    Sent only when the result schema accepts them (most do: an object whose other
    properties are optional); otherwise ERROR goes alone, as before.
    """
    type_name = error.type_name if isinstance(error, HandlerError) else type(error).__name__
    message = error_text(error) or type_name
    if len(message) > MESSAGE_LIMIT:
        message = message[: MESSAGE_LIMIT - 3] + "..."
    return {"error": message, "error_type": type_name}


def error_reports(
    error: BaseException,
    *,
    error_results: Callable[[BaseException], Mapping[str, Any] | None] | None,
    check: Callable[[Any], list[str]] | None,
) -> tuple[tuple[Report, ...], Sequence[str]]:
    """What to send for a job that failed with *error*, most informative first.

    ERROR has no message field, so a handler's ``error_results(error)`` (by default
    :func:`default_error_results`) may supply results to send with it; they are used
    only if they can be sent, and ERROR alone follows as the fallback the server
    cannot reject.  Also returns why a handler's own error results were not used,
    for the log (the default's are not the handler's doing, so they go unmentioned).
    """
    bare = Report(JobStatus.ERROR)
    if error_results is None:
        default = default_error_results(error)
        if _sendable(default, check):
            return (bare,), ()
        return (Report(JobStatus.ERROR, dict(default)), bare), ()
    try:
        value = error_results(error)
    except BaseException as failure:  # a broken callback (even SystemExit) must not lose the job
        return (bare,), [f"error_results raised {type(failure).__name__}: {error_text(failure)}"]
    if value is None:
        return (bare,), ()
    reasons = _sendable(value, check)
    if reasons:
        return (bare,), [f"error_results: {reason}" for reason in reasons]
    assert isinstance(value, Mapping)
    return (Report(JobStatus.ERROR, dict(value)), bare), ()
