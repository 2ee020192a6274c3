"""What the parts of a running worker share: one lock, the settings, the I/O.

The scheduler, the heartbeat and poll tasks, the job runs and delivery are separate
classes, each owning its own concept; they meet here.  There is one lock (a
re-entrant condition) for all of the worker's state: the parts call each other with
it held, so there is no lock order to get wrong.  No request is sent with it held:
what talks to the server runs as a task on a pool (see :mod:`._tasks`).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import attrs

from ._client import TopChefClient
from ._health import HealthMonitor
from ._ledger import Journal, Outbox
from ._scheduler import Scheduler
from ._settings import Settings
from ._tasks import Launcher
from .events import Event
from .exceptions import LedgerError

__all__ = ["Context"]

_log = logging.getLogger("topchef_worker")


@attrs.define(eq=False)
class Context:
    """The shared state and services of one started worker.

    Attributes:
        cond: The worker's one lock, as a condition that is notified on change.
        client: For every request while the worker runs.
        hurry_client: The same server and session with short timeouts, for the
            requests sent once ``stop()``'s timeout has expired.
        stopping: Set when ``stop()`` begins: nothing new is claimed.
        hurry: Set when ``stop()``'s timeout expires: nothing is waited for.
    """

    cond: threading.Condition
    settings: Settings
    client: TopChefClient
    hurry_client: TopChefClient
    clock: Callable[[], float]
    rand: Callable[[], float]
    counts: Counter[str]
    emit: Callable[[Event], None]
    scheduler: Scheduler
    launcher: Launcher
    health: HealthMonitor
    heartbeat_pool: ThreadPoolExecutor
    io_pool: ThreadPoolExecutor
    journal: Journal | None = None
    outbox: Outbox | None = None
    stopping: threading.Event = attrs.field(factory=threading.Event)
    hurry: threading.Event = attrs.field(factory=threading.Event)

    @property
    def requests(self) -> TopChefClient:
        """The client to use now: the hurried one once stop's timeout expired."""
        return self.hurry_client if self.hurry.is_set() else self.client

    def close(self, *, wait: bool = False) -> None:
        """Shut the I/O pools down (waiting for their threads, if *wait*) and close
        the ledger files (idempotent)."""
        for pool in (self.io_pool, self.heartbeat_pool):
            pool.shutdown(wait=wait, cancel_futures=True)
        for ledger in (self.journal, self.outbox):
            if ledger is not None:
                try:
                    ledger.close()
                except LedgerError as error:
                    _log.error("%s", error)
