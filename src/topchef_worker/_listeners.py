"""Listeners: events handed to user callbacks on a thread of their own.

Events are emitted with the worker's lock held, so emitting only queues them; one
``topchef-events`` thread calls the listeners in order.  A slow listener delays other
listeners, never heartbeats or jobs; one that raises is logged and kept.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ._tasks import marked
from .events import Event
from .exceptions import ConfigurationError

__all__ = ["Listener", "Listeners"]

_log = logging.getLogger("topchef_worker")

Listener = Callable[[Event], object]


class Listeners:
    """The registered listeners and the thread that calls them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: tuple[Listener, ...] = ()
        self._pool: ThreadPoolExecutor | None = None

    def add(self, listener: Listener) -> None:
        """Call *listener* with every event from now on."""
        if not callable(listener):
            raise ConfigurationError(f"a listener must be callable, got {listener!r:.80}")
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def remove(self, listener: Listener) -> None:
        """Stop calling *listener*."""
        with self._lock:
            self._listeners = tuple(known for known in self._listeners if known != listener)

    def open(self) -> None:
        """Start the events thread."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, "topchef-events")

    def close(self, timeout: float | None = None) -> None:
        """Deliver the events queued so far (for up to *timeout*), then end the thread."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        if timeout is None:
            pool.shutdown(wait=True)
        else:
            # Wait for the queue to drain, bounded; a listener that hangs is left.
            joiner = threading.Thread(target=pool.shutdown, name="topchef-events-join")
            joiner.daemon = True
            joiner.start()
            joiner.join(timeout)
            if joiner.is_alive():
                _log.warning("a listener is still running after the worker stopped")

    def emit(self, event: Event) -> None:
        """Queue *event* for the listeners (cheap; safe with any lock held)."""
        pool, listeners = self._pool, self._listeners
        if pool is None or not listeners:
            return
        with contextlib.suppress(RuntimeError):  # shut down: nobody listens any more
            pool.submit(_dispatch, listeners, event)


def _dispatch(listeners: tuple[Listener, ...], event: Event) -> None:
    with marked():
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                _log.exception("listener %r failed on %s; it stays registered", listener, event)
