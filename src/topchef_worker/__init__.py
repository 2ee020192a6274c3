"""Run TopChef job-processing services in Python.

The public API is re-exported here; everything else lives in private modules.
Errors are in :mod:`topchef_worker.exceptions`, the events a worker's listeners
receive in :mod:`topchef_worker.events`, the in-process test server in
:mod:`topchef_worker.testing`, and the command line in :mod:`topchef_worker.cli`.
"""

from __future__ import annotations

import logging

from ._client import DEFAULT_TIMEOUT, TopChefClient
from ._lease import ServiceRole
from ._models import ErrorEntry, Job, JobStatus, JobSummary, Service, ServiceSummary
from ._retry import RetryPolicy
from ._stats import Health, ServiceHealth, WorkerState, WorkerStats
from ._worker import Worker
from .exceptions import TopChefError, is_transient

__all__ = [
    "DEFAULT_TIMEOUT",
    "ErrorEntry",
    "Health",
    "Job",
    "JobStatus",
    "JobSummary",
    "RetryPolicy",
    "Service",
    "ServiceHealth",
    "ServiceRole",
    "ServiceSummary",
    "TopChefClient",
    "TopChefError",
    "Worker",
    "WorkerState",
    "WorkerStats",
    "__version__",
    "is_transient",
]

# The library logs to "topchef_worker" and leaves configuring handlers to the
# application (the command line does it for `topchef-worker run`).
logging.getLogger("topchef_worker").addHandler(logging.NullHandler())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("topchef-worker")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


__version__ = _version()
