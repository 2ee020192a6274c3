"""A job pool on a Dask cluster: one worker process polls, jobs run on many machines.

TopChef has no atomic claim, so more pollers do not scale a service (see
``docs/scaling.md``); more machines do, behind one poller.  Dask's
``distributed`` already runs Python functions on a cluster, and its
``Client.get_executor()`` is a :class:`concurrent.futures.Executor`, the kind of
pool a worker runs handlers on.  :class:`DaskExecutor` adapts it to what a worker
needs: every call runs (Dask would otherwise treat two jobs with equal parameters
as one computation), ``shutdown(cancel_futures=True)`` works, and a client the
worker made is closed with the pool.  Closures travel (Dask pickles with
cloudpickle).

Needs the ``dask`` extra: ``pip install 'topchef-worker[dask]'``.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import CancelledError, Executor, Future
from typing import Any

__all__ = ["DaskExecutor", "dask_pool"]


class DaskExecutor(Executor):
    """Runs calls on a Dask cluster through *client*.

    Args:
        client: A ``distributed.Client``.
        close_client: Close *client* when the pool shuts down (for a client made
            for the pool alone).
    """

    def __init__(self, client: Any, *, close_client: bool = False) -> None:
        self.client = client
        self._close_client = close_client
        # Not pure: two jobs with the same parameters are two runs, not one result.
        self._executor: Executor = client.get_executor(pure=False)
        self._inner: dict[Future[Any], Future[Any]] = {}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` on the cluster, as a future.

        The future is RUNNING at once (nobody here knows when the cluster starts
        the task), so ``cancel()`` never takes a task that may be running; use
        :meth:`interrupt` to cancel it on the cluster.
        """
        inner = self._executor.submit(fn, *args, **kwargs)
        outer: Future[Any] = Future()
        outer.set_running_or_notify_cancel()
        self._inner[outer] = inner
        inner.add_done_callback(lambda done: self._copy(done, outer))
        return outer

    def interrupt(self, future: Future[Any]) -> None:
        """Cancel *future*'s task on the cluster (best effort: a task that runs
        finishes its call)."""
        inner = self._inner.get(future)
        if inner is not None:
            inner.cancel()

    def _copy(self, inner: Future[Any], outer: Future[Any]) -> None:
        self._inner.pop(outer, None)
        if inner.cancelled():
            outer.set_exception(CancelledError())
        elif inner.exception() is not None:
            outer.set_exception(inner.exception())
        else:
            outer.set_result(inner.result())

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Submit nothing more; with *cancel_futures*, cancel what has not run."""
        # distributed's executor cancels what is pending when it does not wait.
        self._executor.shutdown(wait=wait and not cancel_futures)
        if self._close_client:
            self.client.close()


def dask_pool(address: Any = None, **client_options: Any) -> Callable[[], Executor]:
    """A function that makes a job pool on the Dask cluster at *address* (a
    scheduler address such as ``"tcp://scheduler:8786"``, or a cluster object), with
    a client of its own: give it as ``Worker(job_pool=...)`` or in
    ``Worker(pools=...)``.  The worker makes the pool when it starts and closes the
    client when it stops."""

    def make() -> Executor:
        try:
            from distributed import Client
        except ImportError as error:
            raise ImportError(
                "a Dask job pool needs distributed: pip install 'topchef-worker[dask]'"
            ) from error
        return DaskExecutor(Client(address, **client_options), close_client=True)

    return make
