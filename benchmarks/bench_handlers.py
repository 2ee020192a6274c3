"""Handlers for the benchmarks, importable by name so process pools can run them."""

from __future__ import annotations

import threading
from typing import Any


def noop(parameters: dict[str, Any]) -> dict[str, Any]:
    """Do nothing: measures the framework alone."""
    return {}


def sleep_50ms(parameters: dict[str, Any]) -> dict[str, Any]:
    """Wait 50 ms without using the CPU, like a job waiting on an instrument."""
    threading.Event().wait(0.05)
    return {}


def burn(parameters: dict[str, Any]) -> dict[str, Any]:
    """About 30 ms of pure-Python arithmetic: a CPU-bound job that holds the GIL."""
    total = 0
    for i in range(parameters.get("n", 300_000)):
        total += i * i % 7
    return {"total": total}
