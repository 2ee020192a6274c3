"""What crosses into the job pool.

Only plain data and a module-level function cross, so any
:class:`concurrent.futures.Executor` works, a :class:`ProcessPoolExecutor`
included, as long as the handler itself pickles (a module-level function does).
"""

from __future__ import annotations

from typing import Any, Callable

from ._models import Job

__all__ = ["call_handler"]


def call_handler(
    fn: Callable[..., Any], parameters: dict[str, Any], job: Job | None, pass_job: bool
) -> Any:
    """Call a handler the way it asked to be called."""
    if pass_job:
        return fn(parameters, job=job)
    return fn(parameters)
