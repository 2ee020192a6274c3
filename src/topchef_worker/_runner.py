"""The blocking ``run()``: a worker as a program's main loop, stopped by signals.

On the main thread, SIGINT and SIGTERM stop the worker gracefully; a second signal
hurries the stop (jobs not finished go back to the queue at once).  A signal
handler runs between two bytecodes of the main thread, which may hold any lock at
that moment, so the handler here takes none: it sets plain flags and writes a byte
to a socket, and the loop does the rest (logging included).  The loop waits on that
socket with :mod:`selectors` (epoll where there is one), which, unlike
``select()``, works with file descriptors above 1,024; ``signal.set_wakeup_fd``
makes a signal delivered to any thread wake it.  A program whose main loop this is
and that configured no logging sees the worker's INFO records on stderr.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from ._logging import main_loop_logging

__all__ = ["Runner"]

_log = logging.getLogger("topchef_worker")


class Runner:
    """Runs one worker until a signal, ``stop()``, or (optionally) idleness.

    Args:
        start: Starts the worker.
        stop: Stops it: ``stop(timeout)``.
        keep_going: Whether the worker still runs (not stopped or failed).
        idle: Whether every queue is empty and nothing is in flight.
    """

    def __init__(
        self,
        *,
        start: Callable[[], None],
        stop: Callable[[float | None], None],
        keep_going: Callable[[], bool],
        idle: Callable[[], bool],
    ) -> None:
        self._start = start
        self._stop = stop
        self._keep_going = keep_going
        self._idle = idle
        self.signals = 0  # set by the handler; read by the loop and stop()
        self._sender: socket.socket | None = None

    @property
    def hurry(self) -> bool:
        """A second signal asked to stop at once."""
        return self.signals > 1

    def wake(self) -> None:
        """Wake the loop (from any thread, or a signal handler)."""
        sender = self._sender
        if sender is not None:
            with contextlib.suppress(OSError):
                sender.send(b"x")

    def run(self, *, until_idle: bool, stop_timeout: float | None) -> None:
        with main_loop_logging():
            self._run(until_idle=until_idle, stop_timeout=stop_timeout)

    def _run(self, *, until_idle: bool, stop_timeout: float | None) -> None:
        receiver, sender = socket.socketpair()
        receiver.setblocking(False)
        sender.setblocking(False)
        self._sender = sender
        selector = selectors.DefaultSelector()
        selector.register(receiver, selectors.EVENT_READ)
        previous: dict[int, Any] = {}
        wakeup_fd = -1
        try:
            if threading.current_thread() is threading.main_thread():
                for signum in (signal.SIGINT, signal.SIGTERM):
                    previous[signum] = signal.signal(signum, self._on_signal)
                wakeup_fd = signal.set_wakeup_fd(sender.fileno(), warn_on_full_buffer=False)
            self._start()
            logged = 0
            while self._keep_going():
                if self.signals > logged:
                    logged = self._log_signals(logged)
                if self.signals or (until_idle and self._idle()):
                    break
                selector.select(timeout=1.0)
                with contextlib.suppress(BlockingIOError):
                    receiver.recv(4096)
        finally:
            try:
                self._stop(0.0 if self.hurry else stop_timeout)
            finally:
                if previous:
                    signal.set_wakeup_fd(wakeup_fd)
                for number, handler in previous.items():
                    signal.signal(number, handler)
                self._sender = None
                selector.close()
                sender.close()
                receiver.close()

    def _log_signals(self, logged: int) -> int:
        if logged == 0:
            _log.info("signal received: stopping gracefully (a second one stops at once)")
        if self.signals > 1:
            _log.warning("second signal: stopping at once")
        return self.signals

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # No lock, no logging: the main thread may hold any lock right now.
        self.signals += 1
        self.wake()
