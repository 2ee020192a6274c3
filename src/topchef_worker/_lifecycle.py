"""A worker's own life: NEW, STARTING, RUNNING (or DEGRADED), STOPPING, STOPPED.

:class:`Lifecycle` starts a worker and stops it, and nothing else (a claimed job's
life is :mod:`topchef_worker._jobrun`'s):

* ``start()`` does at once what can fail without the server (see
  :func:`~topchef_worker._startup.open_context`), then reaches the server on a
  ``topchef-start`` thread: every service found, the parts wired into a
  :class:`~topchef_worker._runtime.Runtime`, what an earlier run left settled.  A
  configuration error found there (an unknown service) ends the start: STOPPED, the
  error kept for ``wait_ready()`` and ``run()`` to raise;
* ``stop()`` tightens one deadline and runs the stop sequence on a thread of its own
  (see :mod:`topchef_worker._shutdown`), whatever state the start is in.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

import requests

from ._client import TopChefClient
from ._context import Context
from ._handlers import HandlerSpec
from ._health import ACTIVE, HealthMonitor
from ._listeners import Listeners
from ._pools import PoolSource
from ._runtime import Runtime, stats_without_runtime
from ._settings import STOP_MARGIN, Settings
from ._shutdown import Shutdown
from ._startup import Left, open_context, resolve_all
from ._stats import WorkerState
from ._tasks import inside_worker
from .exceptions import ConfigurationError, TopChefError

__all__ = ["Lifecycle"]

_log = logging.getLogger("topchef_worker")


class Lifecycle:
    """Starts and stops one worker, once.

    Args:
        cond: The worker's one lock.
        health: Holds the worker's state.
        listeners: Opened at start, closed at stop.
        wake: Wakes a blocking ``run()`` (the worker stopped, or failed to start).
    """

    def __init__(
        self,
        *,
        cond: threading.Condition,
        clock: Callable[[], float],
        rand: Callable[[], float],
        counts: Counter[str],
        health: HealthMonitor,
        listeners: Listeners,
        wake: Callable[[], None],
    ) -> None:
        self._cond = cond
        self._clock = clock
        self._rand = rand
        self._counts = counts
        self._health = health
        self._listeners = listeners
        self._wake = wake
        self._shutdown = Shutdown(cond, clock)
        self.ctx: Context | None = None
        self.runtime: Runtime | None = None
        self.failure: BaseException | None = None  # what kept the worker from starting
        self._connecting: threading.Thread | None = None
        self._made_session: requests.Session | None = None

    @property
    def state(self) -> WorkerState:
        return self._health.state

    # -- starting ---------------------------------------------------------------------

    def start(
        self,
        settings: Settings,
        handlers: Sequence[HandlerSpec],
        *,
        client: TopChefClient | None,
        session: requests.Session | None,
        pools: dict[str, PoolSource],
    ) -> Settings | None:
        """Start, returning the settings with the URL resolved (None: started already)."""
        with self._cond:
            if self.state is WorkerState.STARTING or self.state in ACTIVE:
                return None
            if self.state is not WorkerState.NEW:
                raise ConfigurationError("a stopped worker cannot be started again")
            if not handlers:
                raise ConfigurationError("no handlers registered: nothing to run")
            ctx, left, self._made_session = open_context(
                settings,
                services=len(handlers),
                client=client,
                session=session,
                cond=self._cond,
                clock=self._clock,
                rand=self._rand,
                counts=self._counts,
                emit=self._listeners.emit,
                health=self._health,
            )
            self.ctx = ctx
            self._listeners.open()
            self._health.set_state(WorkerState.STARTING)
            self._connecting = threading.Thread(
                target=self._connect,
                args=(ctx, list(handlers), left, pools),
                name="topchef-start",
                daemon=True,
            )
        self._connecting.start()
        return ctx.settings

    def _connect(
        self,
        ctx: Context,
        handlers: list[HandlerSpec],
        left: Left,
        pools: dict[str, PoolSource],
    ) -> None:
        """Find every service, settle what an earlier run left, start working."""
        try:
            runtime = Runtime(
                ctx,
                resolve_all(ctx, handlers),
                pools=pools,
                on_idle=self._wake,
            )
            with self._cond:
                if ctx.stopping.is_set():
                    return
                self.runtime = runtime
                runtime.begin(left)
                self._health.set_state(WorkerState.RUNNING)
        except BaseException as error:
            if ctx.stopping.is_set() and not isinstance(error, ConfigurationError):
                return  # stop() ended the wait for the server
            _log.error(
                "the worker cannot start: %s", error, exc_info=not isinstance(error, TopChefError)
            )
            self._abort(ctx, error)

    def _abort(self, ctx: Context, error: BaseException) -> None:
        """End a start that failed: the worker is STOPPED and says why."""
        ctx.stopping.set()
        self._close_io(ctx)
        self._listeners.close(timeout=1.0)
        with self._cond:
            self.failure = error
            self._health.set_state(WorkerState.STOPPED)
        self._wake()

    def _close_io(self, ctx: Context) -> None:
        ctx.close()
        if self._made_session is not None:
            self._made_session.close()
            self._made_session = None

    def wait_ready(self, timeout: float | None) -> bool:
        """Wait until running (True), for at most *timeout* seconds (False); raise
        the error that ended the start, if one did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self.state not in ACTIVE:
                if self.failure is not None:
                    raise self.failure
                if self.state in (WorkerState.STOPPING, WorkerState.STOPPED, WorkerState.NEW):
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.5 if remaining is None else min(remaining, 0.5))
            return True

    # -- stopping ---------------------------------------------------------------------

    def stop(self, limit: float | None, cancel: bool, *, hurried: Callable[[], bool]) -> None:
        """Stop within *limit* seconds plus ``STOP_MARGIN``; *hurried* says that a
        second signal asked to stop at once."""
        try:
            begun = self._begin_stop(limit, cancel)
        except KeyboardInterrupt:
            # A Ctrl-C (a second signal) between the state change and the launch of
            # the stop sequence: the worker must not be left STOPPING with its
            # threads running, so the stop still happens, at once.
            if self._begin_stop(0.0, cancel):
                self._shutdown.join()
            raise
        if not begun or inside_worker():
            return  # a handler or listener: the stop goes on without it
        self._shutdown.wait(stopped=lambda: self.state is WorkerState.STOPPED, hurried=hurried)

    def _begin_stop(self, limit: float | None, cancel: bool) -> bool:
        """Tighten the stop's deadline and launch its sequence, once.  Returns
        whether a stop is under way to wait for."""
        with self._cond:
            if self.state is WorkerState.NEW:
                self._health.set_state(WorkerState.STOPPED)  # never started
                return False
            stopped = self.state is WorkerState.STOPPED
            if not stopped:
                self._shutdown.tighten(limit, cancel)
                if self.state is not WorkerState.STOPPING:
                    self._health.set_state(WorkerState.STOPPING)
                assert self.ctx is not None
                self.ctx.stopping.set()
                first = not self._shutdown.under_way
        if stopped:  # a start that failed, or a stop, may still be ending its thread
            bound = time.monotonic() + (STOP_MARGIN if limit is None else min(limit, STOP_MARGIN))
            for thread in (self._connecting, *self._shutdown.threads):
                if thread is not None and thread is not threading.current_thread():
                    with contextlib.suppress(RuntimeError):  # a launch cut short: unstarted
                        thread.join(max(0.0, bound - time.monotonic()))
            return False
        if first:
            try:
                _log.info("worker stopping")
            finally:
                self._shutdown.launch(self._stop_sequence)
        return True

    def _stop_sequence(self) -> None:
        ctx = self.ctx
        assert ctx is not None
        try:
            connecting = self._connecting
            if connecting is not None and connecting.is_alive():
                # A start waiting for the server ends with the stop event; a request
                # it has in flight is not waited for past the bound.
                remaining = self._shutdown.remaining()
                connecting.join(STOP_MARGIN / 2 if remaining is None else remaining / 2)
            runtime = self.runtime
            if runtime is not None:
                runtime.stop(lambda: self._shutdown.deadline, lambda: self._shutdown.cancel)
        except BaseException:
            _log.exception("stopping the worker failed; it is STOPPED all the same")
        finally:
            try:  # whatever failed above, nothing of the worker's goes on
                ctx.scheduler.stop(timeout=0.5)
                self._close_io(ctx)
            except BaseException:
                _log.exception("closing the worker's pools and files failed")
            with self._cond:
                self._health.set_state(WorkerState.STOPPED)
                counts = stats_without_runtime(self._counts, WorkerState.STOPPED)
            self._listeners.close(timeout=0.5)
            self._wake()
            _log.info(
                "worker stopped: %d completed, %d failed, %d requeued",
                counts.completed,
                counts.failed,
                counts.requeued,
            )
