"""Coroutine handlers: an event loop on one thread, as a ``concurrent.futures`` pool.

An ``async def`` handler is called like any other (``fn(parameters)`` or
``fn(parameters, job=job)``) and awaited on an event loop the worker owns, on one
thread, so that hundreds of jobs that mostly wait (an instrument, a web service)
cost one thread, not hundreds.  :class:`LoopExecutor` is an
:class:`~concurrent.futures.Executor`, so a coroutine job is a
:class:`~concurrent.futures.Future` like every other job, and everything the worker
does with futures holds: a deadline, ``stop()``, the slot given back.  Unlike a
thread, a coroutine can be stopped: :meth:`LoopExecutor.interrupt` cancels its task
(``asyncio.CancelledError`` is raised at its ``await``), so a handler's ``timeout=``
and ``stop(cancel=True)`` end it for real.  Its future ends only when the coroutine
has, so that its slot is held while it cleans up, and a coroutine that ignores the
cancellation counts as an overrun, like a thread that cannot be stopped.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

from ._tasks import marked

__all__ = ["LoopExecutor"]

_log = logging.getLogger("topchef_worker")

#: Seconds cancelled coroutines get to finish (their ``finally`` blocks) at shutdown;
#: one that ignores the cancellation is abandoned then, so a stop stays bounded.
_CANCEL_GRACE = 1.0


class LoopExecutor(Executor):
    """Runs calls on an event loop on a thread of its own, awaiting what they return
    when it is awaitable."""

    #: ``stop(cancel=True)`` interrupts running calls: a coroutine can be stopped.
    interrupts_at_stop = True

    def __init__(self, name: str = "topchef-asyncio") -> None:
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._closed = False
        self._tasks: dict[Future[Any], asyncio.Task[Any]] = {}  # on the loop's thread
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._started.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._started.set)
        with marked():  # the worker's own thread: stop() from a handler must not wait
            try:
                self._loop.run_forever()
            finally:
                self._loop.close()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` on the loop, awaiting what it returns.

        The future is RUNNING from the moment the coroutine starts until it has
        really ended, so ``cancel()`` only takes a call that has not started; use
        :meth:`interrupt` to cancel a running one.
        """
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new calls after shutdown")
            self._loop.call_soon_threadsafe(self._start, future, fn, args, kwargs)
        return future

    def interrupt(self, future: Future[Any]) -> None:
        """Cancel the coroutine of *future*: ``CancelledError`` is raised at its
        ``await``; the future ends when the coroutine does."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._cancel, future)

    def _start(
        self,
        future: Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        if not future.set_running_or_notify_cancel():
            return  # cancelled before it started
        task = self._loop.create_task(_call(fn, args, kwargs))
        self._tasks[future] = task
        task.add_done_callback(lambda done: self._finished(future, done))

    def _finished(self, future: Future[Any], task: asyncio.Task[Any]) -> None:
        self._tasks.pop(future, None)
        if task.cancelled():
            future.set_exception(asyncio.CancelledError())
        elif task.exception() is not None:
            future.set_exception(task.exception())
        else:
            future.set_result(task.result())

    def _cancel(self, future: Future[Any]) -> None:
        task = self._tasks.get(future)
        if task is not None:
            task.cancel()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._finish, cancel_futures)
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def _finish(self, cancel: bool) -> None:
        """Stop the loop once its tasks are done (or, if *cancel*, cancelled)."""
        tasks = [task for task in asyncio.all_tasks(self._loop) if not task.done()]
        if cancel:
            for task in tasks:
                task.cancel()
            self._loop.call_later(_CANCEL_GRACE, self._loop.stop)
        if not tasks:
            self._loop.stop()
            return
        gathered = asyncio.gather(*tasks, return_exceptions=True)
        gathered.add_done_callback(lambda _: self._loop.stop())


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result
