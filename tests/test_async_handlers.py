"""``async def`` handlers on the worker's event loop, and named job pools (issue 12).

Coroutines are awaited on one thread the worker owns; their deadline and
``stop(cancel=True)`` cancel them for real.  Waits are on events and the worker's
stats, with deadlines.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from conftest import ADDER_PARAMETERS, ADDER_RESULTS
from test_worker import WAIT, fast_worker
from topchef_worker import Job, JobStatus, Service, TopChefClient, Worker
from topchef_worker.exceptions import ConfigurationError
from topchef_worker.testing import TopChefServer

pytestmark = pytest.mark.timeout(60)


def describe(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": "adds a and b",
        "job_registration_schema": ADDER_PARAMETERS,
        "job_result_schema": ADDER_RESULTS,
    }


def test_coroutine_handlers_run_together_on_one_thread(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """Twenty coroutines that each wait for all twenty to be running: they can
    only finish if the worker awaits them at once, and they share one thread."""
    count = 20
    threads: set[str] = set()
    running = 0
    everyone: asyncio.Event | None = None

    async def add(parameters: dict[str, Any], job: Job) -> dict[str, Any]:
        nonlocal running, everyone
        threads.add(threading.current_thread().name)
        everyone = everyone or asyncio.Event()
        running += 1
        if running == count:
            everyone.set()
        await asyncio.wait_for(everyone.wait(), WAIT)
        return {"sum": parameters["a"] + parameters["b"]}

    worker = fast_worker(server, max_jobs=count)
    worker.handler(adder.id)(add)
    jobs = [client.submit_job(adder.id, {"a": i, "b": 1}) for i in range(count)]
    with worker:
        worker.wait_for(lambda s: s.completed + s.failed == count, WAIT)

    assert [{"sum": i + 1} for i in range(count)] == [client.job(j.id).results for j in jobs]
    assert {"topchef-asyncio"} == threads


def test_a_timeout_cancels_the_coroutine(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    cancelled = threading.Event()

    async def slow(parameters: dict[str, Any]) -> dict[str, Any]:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {"sum": 0}

    worker = fast_worker(server)
    worker.handler(adder.id, timeout=0.2)(slow)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    with worker:
        worker.wait_for(lambda s: s.failed == 1, WAIT)
        assert cancelled.wait(WAIT)
        stats = worker.wait_for(lambda s: s.overrun == 0, WAIT)  # no call runs on

    assert (JobStatus.ERROR, 0) == (client.job(job.id).status, stats.in_flight)


def test_stop_with_cancel_cancels_running_coroutines_and_requeues_their_jobs(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    started, cancelled = threading.Event(), threading.Event()

    async def forever(parameters: dict[str, Any]) -> dict[str, Any]:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {"sum": 0}

    worker = fast_worker(server)
    worker.handler(adder.id)(forever)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    worker.start()
    assert started.wait(WAIT)
    worker.stop(timeout=30, cancel=True)

    assert cancelled.is_set()
    assert JobStatus.REGISTERED is client.job(job.id).status
    assert not any(t.name == "topchef-asyncio" for t in threading.enumerate())


def test_sync_and_async_handlers_and_named_pools_in_one_worker(
    client: TopChefClient, server: TopChefServer
) -> None:
    """A coroutine handler on the event loop, a function on the default pool, and
    one on a named pool, each where it asked to run."""
    where: dict[str, str] = {}

    async def on_loop(parameters: dict[str, Any]) -> dict[str, Any]:
        where["loop"] = threading.current_thread().name
        return {"sum": parameters["a"] + parameters["b"]}

    def on_default(parameters: dict[str, Any]) -> dict[str, Any]:
        where["default"] = threading.current_thread().name
        return {"sum": parameters["a"] + parameters["b"]}

    def on_instruments(parameters: dict[str, Any]) -> dict[str, Any]:
        where["instruments"] = threading.current_thread().name
        return {"sum": parameters["a"] + parameters["b"]}

    with ThreadPoolExecutor(1, "instrument") as instruments:
        worker = fast_worker(server, pools={"instruments": instruments})
        worker.handler(**describe("loop"))(on_loop)
        worker.handler(**describe("default"))(on_default)
        worker.handler(**describe("instruments"), pool="instruments")(on_instruments)
        with worker:
            worker.wait_ready(WAIT)
            for service in worker.services:
                client.submit_job(service.id, {"a": 1, "b": 2})
            worker.wait_for(lambda s: s.completed == 3, WAIT)

    assert ("topchef-asyncio", "topchef-job", "instrument") == (
        where["loop"],
        where["default"].rsplit("_", 1)[0],
        where["instruments"].rsplit("_", 1)[0],
    )


def test_coroutine_results_are_checked_and_failures_reported_as_for_functions(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    async def wrong(parameters: dict[str, Any]) -> Any:
        if parameters["a"]:
            raise ValueError("the instrument is busy")
        return {"sum": "not a number"}

    worker = fast_worker(server)
    worker.handler(adder.id, error_results=lambda error: {"sum": -1})(wrong)
    raising = client.submit_job(adder.id, {"a": 1, "b": 2})
    invalid = client.submit_job(adder.id, {"a": 0, "b": 2})
    with worker:
        worker.wait_for(lambda s: s.failed == 2, WAIT)

    assert (JobStatus.ERROR, {"sum": -1}) == (
        client.job(raising.id).status,
        client.job(raising.id).results,
    )
    assert JobStatus.ERROR is client.job(invalid.id).status


@pytest.mark.parametrize(
    ("handler_kind", "pool", "message"),
    [
        ("async", "default", "runs on the worker's event loop"),
        ("sync", "asyncio", "runs async def handlers only"),
        ("sync", "gpu", "no job pool named 'gpu'"),
    ],
)
def test_a_handler_on_the_wrong_pool_is_refused_when_registered(
    handler_kind: str, pool: str, message: str
) -> None:
    async def coroutine(parameters: dict[str, Any]) -> dict[str, Any]:
        return {}

    def function(parameters: dict[str, Any]) -> dict[str, Any]:
        return {}

    worker = Worker("http://127.0.0.1:1")
    with pytest.raises(ConfigurationError, match=message):
        worker.handler(**describe("x"), pool=pool)(
            coroutine if handler_kind == "async" else function
        )


def test_pool_names_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="pool names"):
        Worker("http://127.0.0.1:1", pools={"asyncio": ThreadPoolExecutor(1)})
    with pytest.raises(ConfigurationError, match="must be an Executor"):
        Worker("http://127.0.0.1:1", pools={"cpu": 4})  # type: ignore[dict-item]
