"""Where jobs run, at its edges: coroutines that clean up or ignore their
cancellation, a blocking coroutine, a Dask task at stop, a job tried alone that
retries, a pool broken by a call past its timeout, retries and stops, a pool that
cannot be made.  Helpers that a process pool (spawn) or a Dask cluster must import
are defined at module level.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from test_async_handlers import describe
from test_handler_retries import InstrumentBusyError, flaky
from test_worker import WAIT, fast_worker
from topchef_worker import JobStatus, RetryPolicy, Service, TopChefClient, WorkerState
from topchef_worker.events import JobRetrying
from topchef_worker.testing import TopChefServer

pytestmark = pytest.mark.timeout(90)

SPAWN = multiprocessing.get_context("spawn")
QUICK = RetryPolicy(initial=0.01, maximum=0.02, attempts=4, deadline=None)


@pytest.fixture
def anything(client: TopChefClient) -> Service:
    """A service whose schemas accept any parameters and results."""
    return client.create_service(
        name="anything", description="d", job_registration_schema={}, job_result_schema={}
    )


def new_threads(before: set[threading.Thread], prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.name.startswith(prefix)]


# -- module-level helpers for child processes and Dask workers -------------------------


class BusyError(Exception):
    """Worth another attempt (it pickles: it travels back from a child)."""


def crash_or_flaky(parameters: dict[str, Any]) -> dict[str, Any]:
    """``crash``: kill this pool process after that many seconds (every time).
    Otherwise: wait to be killed with the pool until the crash happened; after it,
    fail once with BusyError, then succeed."""
    crashed = Path(parameters["crashed"])
    if "crash" in parameters:
        time.sleep(parameters["crash"])
        crashed.touch()
        os._exit(1)
    if not crashed.exists():
        time.sleep(30)  # the pool breaks meanwhile; this process is terminated with it
    calls = Path(parameters["calls"])
    with calls.open("a") as file:
        file.write("call\n")
    if len(calls.read_text().splitlines()) == 1:
        raise BusyError("the instrument is busy")
    return {"pid": os.getpid()}


def crash_late(parameters: dict[str, Any]) -> dict[str, Any]:
    """Kill this pool process after ``crash`` seconds, or return at once."""
    if "crash" in parameters:
        time.sleep(parameters["crash"])
        os._exit(1)
    return {"pid": os.getpid()}


def warm_pool() -> Executor:
    """A spawn pool of two processes, both started before any job: a process spawned
    while the pool's manager thread already waits is not watched until it wakes, so
    its death would go unnoticed for as long as the other job runs."""
    pool = ProcessPoolExecutor(2, mp_context=SPAWN)
    for future in [pool.submit(time.sleep, 0.5) for _ in range(2)]:
        future.result()
    return pool


DASK_RUNNING = threading.Event()


def on_the_cluster(parameters: dict[str, Any]) -> dict[str, Any]:
    """A task that runs ``seconds`` on a Dask worker (in this process: the test's
    cluster has no processes, so the event is shared)."""
    DASK_RUNNING.set()
    time.sleep(parameters["seconds"])
    return {"ran": parameters["seconds"]}


# -- 1. a cancelled coroutine is taken for a call that ended ---------------------------


def test_a_timed_out_coroutine_keeps_its_concurrency_slot_while_it_cleans_up(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """A cancelled coroutine keeps its concurrency slot until its ``finally`` has run:
    the next job does not start on the instrument during the cleanup."""
    lock = threading.Lock()
    active = 0
    overlaps: list[int] = []
    first_started = threading.Event()

    async def measure(parameters: dict[str, Any]) -> dict[str, Any]:
        nonlocal active
        with lock:
            if active:
                overlaps.append(parameters["a"])
            active += 1
        first_started.set()
        try:
            if parameters["a"] == 1:
                await asyncio.sleep(60)  # past its timeout: cancelled
            return {"sum": parameters["a"] + parameters["b"]}
        finally:
            if parameters["a"] == 1:
                await asyncio.sleep(1.5)  # closing the instrument's session
            with lock:
                active -= 1

    worker = fast_worker(server)
    worker.handler(adder.id, timeout=0.2, concurrency=1)(measure)
    client.submit_job(adder.id, {"a": 1, "b": 0})
    with worker:
        assert first_started.wait(WAIT)
        client.submit_job(adder.id, {"a": 2, "b": 0})
        worker.wait_for(lambda s: s.failed == 1 and s.completed == 1, WAIT)

    assert [] == overlaps, "a job started while the timed-out coroutine still ran"


def test_a_coroutine_that_runs_on_after_its_timeout_counts_as_an_overrun(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """A coroutine that ignores its cancellation runs on past its timeout: it counts
    as an overrun, as a thread would."""
    release = threading.Event()

    async def stubborn(parameters: dict[str, Any]) -> dict[str, Any]:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # a driver that swallows it
                await asyncio.sleep(0.02)
        return {"sum": 0}

    worker = fast_worker(server)
    worker.handler(adder.id, timeout=0.2)(stubborn)
    client.submit_job(adder.id, {"a": 1, "b": 2})
    try:
        with worker:
            stats = worker.wait_for(lambda s: s.failed == 1, WAIT)
            overrun = stats.overrun
            release.set()
    finally:
        release.set()
    assert 1 == overrun


def test_stop_is_bounded_after_a_blocking_coroutine_timed_out(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """A coroutine that blocks the loop (a synchronous driver call) is past its
    timeout: ``stop(timeout)`` still returns within its bound."""
    entered = threading.Event()

    async def blocking(parameters: dict[str, Any]) -> dict[str, Any]:
        entered.set()
        time.sleep(9)  # a blocking driver call (the work itself)
        return {"sum": 0}

    worker = fast_worker(server)
    worker.handler(adder.id, timeout=0.2)(blocking)
    client.submit_job(adder.id, {"a": 1, "b": 2})
    worker.start()
    assert entered.wait(WAIT)
    worker.wait_for(lambda s: s.failed == 1, WAIT)
    began = time.monotonic()
    worker.stop(timeout=0.5)
    took = time.monotonic() - began

    assert (WorkerState.STOPPED, True) == (worker.state, took < 3.0), f"stop took {took:.1f} s"


distributed: Any = None
with contextlib.suppress(ImportError):  # the Dask test needs the extra
    import distributed  # type: ignore[no-redef]


@pytest.mark.skipif(distributed is None, reason="needs distributed")
def test_stop_cancel_lets_a_running_dask_task_finish(
    client: TopChefClient, server: TopChefServer, anything: Service
) -> None:
    """docs/distributed.md: stop() cancels the tasks not yet started; a running
    one finishes and its result is delivered (it is not put back while it runs)."""
    from topchef_worker.dask import DaskExecutor

    DASK_RUNNING.clear()
    assert distributed is not None
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as dask_client,
    ):
        worker = fast_worker(server, job_pool=DaskExecutor(dask_client))
        worker.handler(anything.id)(on_the_cluster)
        job = client.submit_job(anything.id, {"seconds": 2.0})
        worker.start()
        assert DASK_RUNNING.wait(WAIT)
        worker.stop(timeout=WAIT, cancel=True)

    assert JobStatus.COMPLETED is client.job(job.id).status


# -- 2. a suspect tried alone that retries stalls its pool for good --------------------


def test_a_suspect_job_that_retries_while_alone_is_not_stuck_behind_itself(
    client: TopChefClient, server: TopChefServer, anything: Service, tmp_path: Path
) -> None:
    """A job tried alone after its pool broke raises a retryable error: its next
    attempt keeps the pool's turn, and every job ends."""
    crashed, calls = tmp_path / "crashed", tmp_path / "calls"
    worker = fast_worker(server, max_jobs=2, job_pool=warm_pool)
    worker.handler(
        anything.id, retry=QUICK, retry_on=BusyError, error_results=lambda e: {"error": str(e)}
    )(crash_or_flaky)
    common = {"crashed": str(crashed), "calls": str(calls)}
    innocent = client.submit_job(anything.id, dict(common))
    culprit = client.submit_job(anything.id, {**common, "crash": 1.0})
    worker.start()
    try:
        worker.wait_for(lambda s: s.completed + s.failed == 2, 3 * WAIT)
    finally:
        states = (client.job(innocent.id).status, client.job(culprit.id).status)
        worker.stop(timeout=5)  # with no timeout, stop() waits for the stuck job forever

    assert (JobStatus.COMPLETED, JobStatus.ERROR) == states


# -- 3. a process call that breaks its pool after its job was settled ------------------


def test_a_pool_broken_by_an_overrun_call_is_replaced_before_the_next_job(
    client: TopChefClient, server: TopChefServer, anything: Service
) -> None:
    """A call past its timeout (its job settled ERROR) kills its process: the broken
    pool is replaced, and the next job runs."""
    worker = fast_worker(server, job_pool=lambda: ProcessPoolExecutor(1, mp_context=SPAWN))
    worker.handler(anything.id, timeout=3.0)(crash_late)  # room for a process to spawn
    late = client.submit_job(anything.id, {"crash": 5.0})
    with worker:
        worker.wait_for(lambda s: s.failed == 1 and s.overrun == 1, 3 * WAIT)
        worker.wait_for(lambda s: s.overrun == 0, 3 * WAIT)  # the process died
        fine = client.submit_job(anything.id, {})
        stats = worker.wait_for(lambda s: s.completed == 1, 3 * WAIT)

    assert (JobStatus.ERROR, JobStatus.COMPLETED) == (
        client.job(late.id).status,
        client.job(fine.id).status,
    )
    assert 0 == stats.requeued, "the next job was bounced by the broken pool"


# -- 4. retries and stop ----------------------------------------------------------------


def test_a_stop_does_not_wait_out_a_retry_delay_it_will_never_use(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """A stop puts back a job waiting between two attempts at once, instead of
    waiting for an attempt it would not start."""
    waiting = threading.Event()
    worker = fast_worker(server)

    def on_event(event: object) -> None:
        if isinstance(event, JobRetrying):
            waiting.set()

    worker.add_listener(on_event)
    patient = RetryPolicy(initial=60.0, maximum=60.0, attempts=2, deadline=None)
    worker.handler(adder.id, retry=patient, retry_on=InstrumentBusyError)(flaky(9))
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    worker.start()
    assert waiting.wait(WAIT)
    began = time.monotonic()
    worker.stop(timeout=6)
    took = time.monotonic() - began

    assert JobStatus.REGISTERED is client.job(job.id).status
    assert took < 3.0, f"stop() waited {took:.1f} s for a retry that never runs"


def test_a_retryable_failure_during_a_stop_puts_the_job_back(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """docs/handlers.md: a retryable failure while the worker stops puts the job
    back in the queue instead of ending it ERROR."""
    started, release = threading.Event(), threading.Event()

    def busy_once(parameters: dict[str, Any]) -> dict[str, Any]:
        started.set()
        assert release.wait(WAIT)
        raise InstrumentBusyError("busy")

    worker = fast_worker(server)
    worker.handler(adder.id, retry=QUICK, retry_on=InstrumentBusyError)(busy_once)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    worker.start()
    assert started.wait(WAIT)
    stopping = threading.Thread(target=worker.stop, kwargs={"timeout": WAIT})
    stopping.start()
    try:
        worker.wait_for(lambda s: s.state is WorkerState.STOPPING, WAIT)
    finally:
        release.set()
        stopping.join(WAIT + 6)

    assert JobStatus.REGISTERED is client.job(job.id).status


# -- 5. a start that fails leaves the pools it made -------------------------------------


def _no_pool() -> Executor:
    raise RuntimeError("no cluster today")


def test_a_start_that_fails_on_a_pool_closes_the_pools_it_made(server: TopChefServer) -> None:
    """A start that fails on one pool's factory shuts down the pools it made
    already (here the event loop and its thread)."""
    before = set(threading.enumerate())

    async def on_loop(parameters: dict[str, Any]) -> dict[str, Any]:
        return {"sum": 0}

    def on_cluster(parameters: dict[str, Any]) -> dict[str, Any]:
        return {"sum": 0}

    worker = fast_worker(server, pools={"zcluster": _no_pool})
    worker.handler(**describe("loop"))(on_loop)
    worker.handler(**describe("cluster"), pool="zcluster")(on_cluster)
    worker.start()
    with pytest.raises(RuntimeError, match="no cluster today"):
        worker.wait_ready(WAIT)
    worker.stop(timeout=5)

    for thread in new_threads(before, "topchef-asyncio"):
        thread.join(3.0)
    assert [] == [t.name for t in new_threads(before, "topchef-asyncio") if t.is_alive()]
