"""Module-level handlers, importable by name so that a process pool can run them."""

from __future__ import annotations

import os
import time
from typing import Any


def square(parameters: dict[str, Any]) -> dict[str, Any]:
    """Square x, and say which process did it."""
    return {"y": parameters["x"] ** 2, "pid": os.getpid()}


def square_or_crash(parameters: dict[str, Any]) -> dict[str, Any]:
    """Square x, or kill the pool's worker process when asked to."""
    if parameters.get("crash"):
        os._exit(1)
    return {"y": parameters["x"] ** 2, "pid": os.getpid()}


def nap_or_crash(parameters: dict[str, Any]) -> dict[str, Any]:
    """Work for ``seconds``, or kill this pool process after ``crash`` seconds."""
    if "crash" in parameters:
        time.sleep(parameters["crash"])
        os._exit(1)
    time.sleep(parameters.get("seconds", 0.0))
    return {"pid": os.getpid()}


class TwoPartError(Exception):
    """An exception that pickles but cannot be unpickled: its ``__init__`` takes two
    arguments and gives its base one, so rebuilding it from ``args`` fails."""

    def __init__(self, part: str, other: str) -> None:
        super().__init__(f"{part} and {other}")


def raise_unpicklable(parameters: dict[str, Any]) -> dict[str, Any]:
    """Fail with an exception that cannot travel back from a pool process."""
    if parameters.get("fail"):
        raise TwoPartError("the lamp", "the grating")
    time.sleep(parameters.get("seconds", 0.0))
    return {"pid": os.getpid()}


def die_once(parameters: dict[str, Any]) -> dict[str, Any]:
    """Kill this process the first time (marked by creating ``marker``), then
    succeed: a cluster that reruns the call elsewhere completes the job."""
    try:
        with open(parameters["marker"], "x"):
            pass
    except FileExistsError:
        return {"pid": os.getpid()}
    os._exit(1)
