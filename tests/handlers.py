"""Module-level handlers, importable by name so that a process pool can run them."""

from __future__ import annotations

import os
from typing import Any


def square(parameters: dict[str, Any]) -> dict[str, Any]:
    """Square x, and say which process did it."""
    return {"y": parameters["x"] ** 2, "pid": os.getpid()}


def square_or_crash(parameters: dict[str, Any]) -> dict[str, Any]:
    """Square x, or kill the pool's worker process when asked to."""
    if parameters.get("crash"):
        os._exit(1)
    return {"y": parameters["x"] ** 2, "pid": os.getpid()}
