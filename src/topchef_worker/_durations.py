"""Durations at the boundary: seconds or a timedelta in, float seconds out."""

from __future__ import annotations

from datetime import timedelta

__all__ = ["to_seconds"]


def to_seconds(value: float | timedelta, name: str) -> float:
    """Return *value* as positive float seconds, naming *name* when it is not.

    Raises TypeError for something that is not a duration and ValueError for a
    duration that is not positive.
    """
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or a timedelta, got {value!r}")
    if not seconds > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return float(seconds)
