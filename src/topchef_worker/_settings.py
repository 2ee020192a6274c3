"""A worker's settings: one frozen value, checked once, at the boundary.

``Worker(...)`` builds a :class:`Settings` and ``Worker.configure(...)`` makes a new
one with :func:`attrs.evolve`, so every check lives in one validator and runs for
both; a running worker reads a value that can never change under it.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs

from ._client import DEFAULT_TIMEOUT, TimeoutLike
from ._durations import to_seconds
from ._retry import RetryPolicy
from .exceptions import ConfigurationError

__all__ = ["STOP_MARGIN", "Settings"]

#: Seconds that ``stop(timeout)`` may take beyond its timeout: the time to put jobs
#: still running back in the queue (or in the outbox) once the timeout expired.
#: Each request sent then gets at most this long, whatever ``request_timeout`` says.
STOP_MARGIN = 5.0


def _seconds(value: float | timedelta, name: str) -> float:
    try:
        return to_seconds(value, name)
    except (TypeError, ValueError) as error:
        raise ConfigurationError(str(error)) from None


def _heartbeat_interval(value: float | timedelta | None) -> float | None:
    return None if value is None else _seconds(value, "heartbeat_interval")


def _poll_interval(value: float | timedelta) -> float:
    return _seconds(value, "poll_interval")


def _min_poll_interval(value: float | timedelta) -> float:
    return _seconds(value, "min_poll_interval")


def _lease_settle(value: float | timedelta) -> float:
    seconds = _seconds(value, "lease_settle")
    if seconds <= 0:
        raise ConfigurationError(f"lease_settle must be positive, got {value!r}")
    return seconds


def _path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


def _count(minimum: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and attribute.name == "max_overrun":
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigurationError(f"{attribute.name} must be an int >= {minimum}, got {value!r}")

    return check


def _fraction(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigurationError(f"{attribute.name} must be a fraction in [0, 1), got {value!r}")


def _positive(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(f"{attribute.name} must be positive, got {value!r}")


def _flag(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{attribute.name} must be True or False, got {value!r:.60}")


def _url(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(f"url must be a string, got {value!r:.80}")


def _retry(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, RetryPolicy):
        raise ConfigurationError(f"retry must be a RetryPolicy, got {value!r:.80}")


@attrs.frozen(kw_only=True)
class Settings:
    """Everything a worker is configured with, except its handlers and injected I/O.

    See :class:`~topchef_worker.Worker` for what each setting means.
    """

    url: str | None = attrs.field(default=None, validator=_url)
    max_jobs: int = attrs.field(default=4, validator=_count(1))
    heartbeat_interval: float | None = attrs.field(default=None, converter=_heartbeat_interval)
    poll_interval: float = attrs.field(default=1.0, converter=_poll_interval)
    min_poll_interval: float = attrs.field(default=0.01, converter=_min_poll_interval)
    idle_poll_rate: float = attrs.field(default=20.0, validator=_positive)
    jitter: float = attrs.field(default=0.1, validator=_fraction)
    request_timeout: TimeoutLike = DEFAULT_TIMEOUT
    retry: RetryPolicy = attrs.field(factory=RetryPolicy.forever, validator=_retry)
    max_overrun: int | None = attrs.field(default=None, validator=_count(0))
    outbox: Path | None = attrs.field(default=None, converter=_path)
    journal: Path | None = attrs.field(default=None, converter=_path)
    exclusive: bool = attrs.field(default=True, validator=_flag)
    lease_settle: float = attrs.field(default=1.0, converter=_lease_settle)

    def __attrs_post_init__(self) -> None:
        if self.min_poll_interval > self.poll_interval:
            raise ConfigurationError(
                f"min_poll_interval ({self.min_poll_interval:g} s) must not exceed "
                f"poll_interval ({self.poll_interval:g} s)"
            )

    @property
    def overrun_limit(self) -> int:
        """How many timed-out calls may still run before claiming stops."""
        return self.max_jobs if self.max_overrun is None else self.max_overrun

    def idle_poll_interval(self, services: int) -> float:
        """The longest wait between polls of an empty queue.

        ``poll_interval``, stretched when there are so many services that polling
        each that often would send more than ``idle_poll_rate`` polls a second: the
        server handles one request at a time, and idle polls should not crowd out
        everyone's heartbeats.
        """
        return max(self.poll_interval, services / self.idle_poll_rate)

    def stop_timeout(self) -> tuple[float, float]:
        """Connect and read timeouts for the requests sent after a stop timeout."""
        connect, read = _pair(self.request_timeout)
        return (min(connect, STOP_MARGIN / 2), min(read, STOP_MARGIN / 2))


def _pair(timeout: TimeoutLike) -> tuple[float, float]:
    if isinstance(timeout, tuple):
        return float(timeout[0]), float(timeout[1])
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
    return seconds, seconds
