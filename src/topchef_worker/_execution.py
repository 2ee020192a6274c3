"""What crosses into the job pool.

Only plain data and a module-level function cross, so any
:class:`concurrent.futures.Executor` works, a :class:`ProcessPoolExecutor`
included, as long as the handler itself pickles (a module-level function does).
"""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Callable
from typing import Any

from ._models import Job
from ._tasks import marked
from .exceptions import HandlerError

__all__ = ["call_handler", "check_picklable"]


def call_handler(
    fn: Callable[..., Any], parameters: dict[str, Any], job: Job | None, pass_job: bool
) -> Any:
    """Call a handler the way it asked to be called (marked as the worker's code, so
    that ``stop()`` called from the handler does not wait for itself).

    In a pool's child process, an exception that would not survive the trip back
    (a class whose ``__init__`` takes other arguments than it gives its base, say)
    is replaced by a :class:`HandlerError` with its type name and message: the pool
    would otherwise break, failing every job in flight.
    """
    with marked():
        try:
            if pass_job:
                return fn(parameters, job=job)
            return fn(parameters)
        except Exception as error:
            if multiprocessing.parent_process() is None or _travels(error):
                raise
            raise HandlerError(
                f"{type(error).__name__}: {error}", type_name=type(error).__name__
            ) from None


def _travels(error: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # any failure means it cannot travel
        return False
    return True


def check_picklable(fn: Callable[..., Any]) -> str | None:
    """Why *fn* cannot be sent to a process pool (None: it can)."""
    try:
        pickle.dumps(fn)
    except Exception as error:  # pickle raises many kinds
        return f"{type(error).__name__}: {error}"
    return None
