"""What crosses into the job pool.

Only plain data and a module-level function cross, so any
:class:`concurrent.futures.Executor` works, a :class:`ProcessPoolExecutor`
included, as long as the handler itself pickles (a module-level function does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._models import Job
from ._tasks import marked

__all__ = ["call_handler"]


def call_handler(
    fn: Callable[..., Any], parameters: dict[str, Any], job: Job | None, pass_job: bool
) -> Any:
    """Call a handler the way it asked to be called (marked as the worker's code, so
    that ``stop()`` called from the handler does not wait for itself)."""
    with marked():
        if pass_job:
            return fn(parameters, job=job)
        return fn(parameters)
