"""The worker end to end, against TopChefServer over real HTTP on loopback."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest

import handlers
from conftest import ADDER_PARAMETERS, ADDER_RESULTS
from topchef_worker import Job, JobStatus, Service, TopChefClient, Worker, WorkerState
from topchef_worker.exceptions import (
    ConfigurationError,
    InvalidParametersError,
    JobTimeoutError,
    ServiceNotFoundError,
)
from topchef_worker.testing import LoggedRequest, ManualClock, TopChefServer

WAIT = 10.0  # seconds: the most any condition below may take


def fast_worker(server: TopChefServer, **kwargs: Any) -> Worker:
    """A worker with short poll intervals, so tests do not wait on backoff."""
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("min_poll_interval", 0.005)
    kwargs.setdefault("lease_settle", 0.1)
    return Worker(server.url, **kwargs)


def add(parameters: dict[str, Any]) -> dict[str, Any]:
    return {"sum": parameters["a"] + parameters["b"]}


def statuses(client: TopChefClient, service_id: str) -> Counter[str]:
    return Counter(job.status.value for job in client.jobs(service_id))


def heartbeats(log: list[LoggedRequest], service_id: str) -> int:
    """Bare check-ins (a PATCH with a body writes the lease, or releases it)."""
    return sum(
        1 for r in log if r.method == "PATCH" and r.path == f"/services/{service_id}" and not r.body
    )


class Gate:
    """Lets a test hold handlers inside their call and release them."""

    def __init__(self) -> None:
        self.started = threading.Semaphore(0)
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.calls: list[Any] = []

    def wait_started(self, n: int = 1) -> None:
        for _ in range(n):
            assert self.started.acquire(timeout=WAIT), "a handler did not start in time"

    def __call__(self, parameters: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.calls.append(parameters)
        self.started.release()
        assert self.release.wait(WAIT), "the test never released the handler"
        return {"sum": parameters["a"] + parameters["b"]}


@pytest.fixture
def threads_before() -> Iterator[set[threading.Thread]]:
    """Fails the test if threads it started are still alive at its end."""
    before = set(threading.enumerate())
    yield before
    left = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert [] == [name for name in left if name.startswith("topchef-")]


# -- end to end -----------------------------------------------------------------------


def test_hundreds_of_jobs_across_services_within_capacity(
    client: TopChefClient, server: TopChefServer, threads_before: set[threading.Thread]
) -> None:
    """Every job completes; neither max_jobs nor any concurrency is ever exceeded,
    and the server never has more of this worker's jobs WORKING than it has slots."""
    lock = threading.Lock()
    active: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    def measured(name: str) -> Any:
        def handler(parameters: dict[str, Any]) -> dict[str, Any]:
            with lock:
                active[name] += 1
                active["all"] += 1
                peak[name] = max(peak[name], active[name])
                peak["all"] = max(peak["all"], active["all"])
            try:
                threading.Event().wait(0.001)  # a little work, so jobs overlap
                return {"sum": parameters["a"] + parameters["b"]}
            finally:
                with lock:
                    active[name] -= 1
                    active["all"] -= 1

        return handler

    worker = fast_worker(server, max_jobs=5)
    ids = []
    for index, limit in enumerate([1, 2, None]):
        service = client.create_service(
            name=f"S{index}",
            description="d",
            job_registration_schema=ADDER_PARAMETERS,
            job_result_schema=ADDER_RESULTS,
        )
        ids.append(service.id)
        worker.handler(service.id, concurrency=limit)(measured(service.id))
    for i in range(300):
        client.submit_job(ids[i % 3], {"a": i, "b": 1})

    worker.run(until_idle=True)

    for sid in ids:
        assert Counter({"COMPLETED": 100}) == statuses(client, sid)
        for job in client.jobs(sid):
            assert {"sum": job.parameters["a"] + 1} == job.results
    assert 1 == peak[ids[0]]
    assert peak[ids[1]] <= 2
    assert peak["all"] <= 5
    stats = worker.stats()
    assert (300, 300, 0, 0, WorkerState.STOPPED) == (
        stats.claimed,
        stats.completed,
        stats.failed,
        stats.in_flight,
        stats.state,
    )
    # Replay the server's log (it handles one request at a time, in this order).
    working = peak_working = 0
    for request in server.requests:
        if request.method == "PATCH" and request.path.startswith("/jobs/"):
            working += 1 if b'"WORKING"' in request.body else -1
            peak_working = max(peak_working, working)
    assert 0 == working
    assert peak_working <= 5


def test_polls_only_with_a_free_slot(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """While every slot is busy the worker does not poll; it still heartbeats."""
    gate = Gate()
    worker = fast_worker(server, max_jobs=2, heartbeat_interval=0.02)
    worker.handler(adder.id)(gate)
    for i in range(4):
        client.submit_job(adder.id, {"a": i, "b": 0})
    with worker:
        gate.wait_started(2)
        polls = sum(1 for r in server.requests if r.path.endswith("/jobs/next"))
        beats = heartbeats(server.requests, adder.id)
        server.wait_for_requests(lambda log: heartbeats(log, adder.id) >= beats + 3, WAIT)
        assert polls == sum(1 for r in server.requests if r.path.endswith("/jobs/next"))
        assert Counter({"WORKING": 2, "REGISTERED": 2}) == statuses(client, adder.id)
        gate.release.set()
        server.wait_for_requests(lambda log: sum(b"COMPLETED" in r.body for r in log) == 4)
    assert Counter({"COMPLETED": 4}) == statuses(client, adder.id)


def test_heartbeats_keep_a_busy_service_alive(
    client: TopChefClient, server: TopChefServer, clock: ManualClock, adder: Service
) -> None:
    """A long job holding every slot does not stop heartbeats: the service never
    times out on the server's clock, though 90 s pass while the job runs."""
    gate = Gate()
    worker = fast_worker(server, max_jobs=1, heartbeat_interval=0.02)
    worker.handler(adder.id)(gate)
    client.submit_job(adder.id, {"a": 1, "b": 2})
    with worker:
        gate.wait_started()
        for _ in range(4):
            seen = heartbeats(server.requests, adder.id)
            clock.advance(29)  # just under the 30 s timeout
            server.wait_for_requests(lambda log, seen=seen: heartbeats(log, adder.id) > seen)
            assert client.service(adder.id).has_timed_out is False
        gate.release.set()
    assert (worker.stats().heartbeats_sent, 0) == (
        heartbeats(server.requests, adder.id),
        worker.stats().heartbeats_failed,
    )
    assert worker.stats().last_heartbeat[adder.id] is not None
    clock.advance(31)  # stopped: nothing beats any more
    assert client.service(adder.id).has_timed_out is True


def test_heartbeat_interval_defaults_to_a_third_of_the_timeout(
    client: TopChefClient, server: TopChefServer
) -> None:
    """The period is read from the service's timeout at start."""
    service = client.create_service(
        name="n", description="d", job_registration_schema={}, job_result_schema={}, timeout=9
    )
    worker = fast_worker(server)
    worker.handler(service.id)(add)
    with worker:
        assert worker.wait_ready(WAIT)
        assert [service.id] == [s.id for s in worker.services]
        runtime = worker._life.runtime
        assert runtime is not None
        assert 3.0 == runtime.services[0].interval
        assert 9 == worker.services[0].timeout


# -- outcomes -------------------------------------------------------------------------


def test_failures_end_error_with_the_reason_logged(
    client: TopChefClient, server: TopChefServer, adder: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """A raising handler, a non-dict, a non-JSON value and schema-failing results all
    end ERROR; each reason is logged with the job and service ids."""

    def handler(parameters: dict[str, Any]) -> Any:
        kind = parameters["a"]
        if kind == 0:
            raise RuntimeError("the magnet quenched")
        if kind == 1:
            return [1, 2]
        if kind == 2:
            return {"sum": object()}
        if kind == 3:
            return {"sum": "eleven"}
        return {"sum": kind}

    worker = fast_worker(server)
    worker.handler(adder.id)(handler)
    jobs = [client.submit_job(adder.id, {"a": i, "b": 0}) for i in range(5)]
    with caplog.at_level(logging.ERROR, logger="topchef_worker"):
        worker.run(until_idle=True)
    final = {job.id: client.job(job.id) for job in jobs}
    assert [JobStatus.ERROR] * 4 + [JobStatus.COMPLETED] == [final[j.id].status for j in jobs]
    assert {"sum": 4} == final[jobs[4].id].results
    failures = {r.job_id: r.getMessage() for r in caplog.records if hasattr(r, "job_id")}
    assert "RuntimeError: the magnet quenched" in failures[jobs[0].id]
    assert "returned list, expected a dict" in failures[jobs[1].id]
    assert "not JSON-serialisable" in failures[jobs[2].id]
    # Where and what kind, not the value: results may be private.
    assert '$.sum: a string, against "type": "number"' in failures[jobs[3].id]
    assert "eleven" not in failures[jobs[3].id]
    assert {adder.id} == {r.service_id for r in caplog.records if hasattr(r, "service_id")}
    assert (1, 4) == (worker.stats().completed, worker.stats().failed)


def test_results_rejected_by_the_server(
    client: TopChefClient,
    server: TopChefServer,
    adder: Service,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a local schema check, the server's 400 ends the job ERROR, with the
    server's reasons in the log: counted, since their text quotes the values, which
    the ``topchef_worker.values`` logger shows when it is turned on."""
    monkeypatch.setattr("topchef_worker._schemas.checker", lambda schema, label="": None)
    worker = fast_worker(server)
    worker.handler(adder.id)(lambda parameters: {"sum": "eleven"})
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    caplog.set_level(logging.ERROR, logger="topchef_worker")
    caplog.set_level(logging.DEBUG, logger="topchef_worker.values")
    worker.run(until_idle=True)
    assert (JobStatus.ERROR, None) == (client.job(job.id).status, client.job(job.id).results)
    rejected = [r.getMessage() for r in caplog.records if r.name == "topchef_worker"]
    values = [r.getMessage() for r in caplog.records if r.name == "topchef_worker.values"]
    assert any(
        "server rejected the results: 1 x JSONSchema Validation Error" in m for m in rejected
    )
    assert not any("eleven" in m for m in rejected)
    assert 1 == len(values)
    assert "the server said: " in values[0]
    assert "'eleven' is not of type 'number'" in values[0]


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of this exception fails")


def test_a_handler_exception_whose_str_raises_still_ends_its_job(
    client: TopChefClient, server: TopChefServer
) -> None:
    """An exception whose ``__str__`` raises: the job ends ERROR all the same, with
    its type named, and its slot is given back."""
    service = client.create_service(
        name="x", description="d", job_registration_schema={}, job_result_schema={}
    )

    def handler(parameters: dict[str, Any]) -> dict[str, Any]:
        raise _UnprintableError

    worker = fast_worker(server, max_jobs=1)
    worker.handler(service.id)(handler)
    jobs = [client.submit_job(service.id, {}) for _ in range(2)]
    worker.run(until_idle=True)
    stats = worker.stats()
    results = [client.job(job.id).results for job in jobs]
    assert (2, 0) == (stats.failed, stats.in_flight)
    assert [
        {
            "error": "<str() of _UnprintableError raised RuntimeError>",
            "error_type": "_UnprintableError",
        }
    ] * 2 == results


def test_a_url_given_in_code_wins_over_the_environment(
    client: TopChefClient,
    server: TopChefServer,
    adder: Service,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One rule: the URL in code, then the command line's --url, then TOPCHEF_URL;
    a TOPCHEF_URL left unused is said so, not silently ignored."""
    monkeypatch.setenv("TOPCHEF_URL", "http://127.0.0.1:9")
    worker = fast_worker(server)
    worker.handler(adder.id)(add)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    with caplog.at_level(logging.INFO, logger="topchef_worker"):
        worker.run(until_idle=True)
    assert JobStatus.COMPLETED == client.job(job.id).status
    assert any(
        "TOPCHEF_URL (http://127.0.0.1:9) is not used: the worker's own URL wins" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize(
    ("result_schema", "expected"),
    [
        ({"type": "object"}, {"error": "probe not tuned", "error_type": "ValueError"}),
        ({"type": "object", "required": ["sum"]}, None),
        ({"type": "object", "additionalProperties": False}, None),
    ],
    ids=["schema-accepts", "schema-requires-sum", "schema-allows-nothing"],
)
def test_a_failed_job_reports_its_exception_when_the_schema_accepts_it(
    client: TopChefClient,
    server: TopChefServer,
    caplog: pytest.LogCaptureFixture,
    result_schema: dict[str, Any],
    expected: dict[str, Any] | None,
) -> None:
    """Without error_results, the job's results on the server say why it failed, if
    the result schema accepts them; otherwise ERROR goes alone, with nothing to
    warn about (no rejected PATCH: the local check saw it first)."""
    service = client.create_service(
        name="probe", description="d", job_registration_schema={}, job_result_schema=result_schema
    )

    def handler(parameters: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("probe not tuned")

    worker = fast_worker(server)
    worker.handler(service.id)(handler)
    job = client.submit_job(service.id, {})
    server.clear_requests()
    with caplog.at_level(logging.WARNING, logger="topchef_worker"):
        worker.run(until_idle=True)
    final = client.job(job.id)
    patches = [r for r in server.requests if r.method == "PATCH" and r.path == f"/jobs/{job.id}"]
    assert (JobStatus.ERROR, expected, 2) == (final.status, final.results, len(patches))
    assert [] == [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_error_results_are_sent_with_error(client: TopChefClient, server: TopChefServer) -> None:
    """error_results explains a failure in results that fit the schema."""
    service = client.create_service(
        name="fid",
        description="d",
        job_registration_schema={},
        job_result_schema={
            "type": "object",
            "properties": {"error": {"type": "string"}, "sum": {"type": "number"}},
        },
    )
    seen: list[BaseException] = []

    def explain(error: BaseException) -> dict[str, Any]:
        seen.append(error)
        return {"error": f"{type(error).__name__}: {error}"}

    def handler(parameters: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("probe not tuned")

    worker = fast_worker(server)
    worker.handler(service.id, error_results=explain)(handler)
    job = client.submit_job(service.id, {})
    worker.run(until_idle=True)
    final = client.job(job.id)
    assert (JobStatus.ERROR, {"error": "ValueError: probe not tuned"}) == (
        final.status,
        final.results,
    )
    assert [ValueError] == [type(e) for e in seen]


def test_error_results_the_server_rejects_fall_back_to_bare_error(
    client: TopChefClient,
    server: TopChefServer,
    adder: Service,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the server rejects the error results, ERROR is sent alone."""
    monkeypatch.setattr("topchef_worker._schemas.checker", lambda schema, label="": None)
    worker = fast_worker(server)
    worker.handler(adder.id, error_results=lambda e: {"message": str(e)})(lambda parameters: 1 / 0)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    worker.run(until_idle=True)
    assert (JobStatus.ERROR, None) == (client.job(job.id).status, client.job(job.id).results)
    bodies = [r.body for r in server.requests if r.method == "PATCH" and job.id in r.path]
    assert b'"message"' in bodies[-2]
    assert b'{"status":"ERROR"}' == bodies[-1]


def test_invalid_parameters_end_error_without_calling_the_handler(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """Parameters failing the registration schema: ERROR, handler not called, and
    error_results gets an InvalidParametersError."""
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    # The server checks parameters on submission, so alter the poll's and the
    # claim's answers: the worker runs what the claim answered.
    bad = (
        '{"id": "%s", "status": "%s", "parameters": {"a": "one"}, '
        '"results": null, "date_submitted": "2026-11-27T20:33:16+00:00"}'
    )
    server.faults.fail_next(
        status=200,
        body='{"data": %s}' % (bad % (job.id, "REGISTERED")),
        content_type="application/json",
        path="/services/*/jobs/next",
    )
    server.faults.fail_next(
        status=200,
        body=bad % (job.id, "WORKING"),
        content_type="application/json",
        method="PATCH",
        path="/jobs/*",
    )
    calls: list[Any] = []
    errors: list[BaseException] = []
    worker = fast_worker(server)
    worker.handler(adder.id, error_results=lambda e: errors.append(e))(calls.append)
    worker.run(until_idle=True)
    assert [] == calls
    assert JobStatus.ERROR == client.job(job.id).status
    assert [InvalidParametersError] == [type(e) for e in errors]
    assert '$.a: a string, against "type": "number"' in str(errors[0])
    assert "'b' is a required property" in str(errors[0])


def test_handler_receives_the_job_record(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """A handler with a `job` parameter gets the claimed Job."""
    seen: list[Job] = []

    def handler(parameters: dict[str, Any], job: Job) -> dict[str, Any]:
        seen.append(job)
        return {"sum": 0}

    worker = fast_worker(server)
    worker.handler(adder.id)(handler)
    submitted = client.submit_job(adder.id, {"a": 1, "b": 2})
    worker.run(until_idle=True)
    assert [(submitted.id, JobStatus.WORKING, adder.id)] == [
        (j.id, j.status, j.service_id) for j in seen
    ]


def test_job_timeout_ends_error_and_counts_the_overrun(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """Past its timeout a job ends ERROR; the still-running handler is counted."""
    gate = Gate()
    errors: list[BaseException] = []
    worker = fast_worker(server)
    worker.handler(adder.id, timeout=0.05, error_results=lambda e: errors.append(e))(gate)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    with worker:
        gate.wait_started()
        server.wait_for_requests(
            lambda log: any(r.path == f"/jobs/{job.id}" and b"ERROR" in r.body for r in log)
        )
        assert JobStatus.ERROR == client.job(job.id).status
        assert 1 == worker.wait_for(lambda stats: stats.failed == 1).overrun
        gate.release.set()
    assert [JobTimeoutError] == [type(e) for e in errors]
    assert (0, JobStatus.ERROR) == (worker.stats().overrun, client.job(job.id).status)


def test_a_job_requeued_on_purpose_runs_again(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """A job an operator puts back in the queue after it ran here runs again, and the
    younger jobs behind it run too."""
    calls: Counter[str] = Counter()
    first_done = threading.Event()

    def handler(parameters: dict[str, Any], job: Job) -> dict[str, Any]:
        calls[job.id] += 1
        first_done.set()
        return {"sum": 0}

    worker = fast_worker(server)
    worker.handler(adder.id)(handler)
    first = client.submit_job(adder.id, {"a": 1, "b": 2})
    with worker:
        assert first_done.wait(WAIT)
        worker.wait_for(lambda stats: stats.completed == 1)
        client.update_job(first.id, status="REGISTERED")
        second = client.submit_job(adder.id, {"a": 2, "b": 2})
        worker.wait_for(lambda stats: stats.completed == 3)
    assert {first.id: 2, second.id: 1} == dict(calls)
    assert JobStatus.COMPLETED == client.job(first.id).status


# -- pools ----------------------------------------------------------------------------


def test_process_pool(client: TopChefClient, server: TopChefServer) -> None:
    """Picklable handlers run in a ProcessPoolExecutor; plain data crosses over."""
    service = client.create_service(
        name="square", description="d", job_registration_schema={}, job_result_schema={}
    )
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        worker = fast_worker(server, max_jobs=2, job_pool=pool)
        worker.handler(service.id)(handlers.square)
        for x in range(6):
            client.submit_job(service.id, {"x": x})
        worker.run(until_idle=True)
    jobs = client.jobs(service.id)
    assert [x * x for x in range(6)] == [job.results["y"] for job in jobs if job.results]
    assert os.getpid() not in {job.results["pid"] for job in jobs if job.results}


# -- stopping -------------------------------------------------------------------------


def test_stop_drains_running_jobs(
    client: TopChefClient, server: TopChefServer, adder: Service, threads_before: Any
) -> None:
    """stop() waits for running jobs and delivers their results."""
    gate = Gate()
    worker = fast_worker(server, max_jobs=2)
    worker.handler(adder.id)(gate)
    for i in range(2):
        client.submit_job(adder.id, {"a": i, "b": 0})
    worker.start()
    gate.wait_started(2)
    stopper = threading.Thread(target=worker.stop, name="test-stopper")
    stopper.start()
    server.wait_for_requests(lambda log: len(log) > 0)  # the stop is under way
    gate.release.set()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert Counter({"COMPLETED": 2}) == statuses(client, adder.id)
    assert WorkerState.STOPPED == worker.state


def test_stop_cancel_requeues_unstarted_jobs(
    client: TopChefClient, server: TopChefServer, adder: Service, threads_before: Any
) -> None:
    """stop(cancel=True) puts claimed jobs the pool has not started back in the queue."""
    gate = Gate()
    with ThreadPoolExecutor(1) as pool:  # fewer threads than slots: claims queue up
        worker = fast_worker(server, max_jobs=3, job_pool=pool)
        worker.handler(adder.id)(gate)
        for i in range(3):
            client.submit_job(adder.id, {"a": i, "b": 0})
        worker.start()
        gate.wait_started()
        server.wait_for_requests(lambda log: sum(1 for r in log if b'"WORKING"' in r.body) == 3)
        stopper = threading.Thread(target=worker.stop, kwargs={"cancel": True})
        stopper.start()
        server.wait_for_requests(lambda log: sum(1 for r in log if b'"REGISTERED"' in r.body) == 2)
        gate.release.set()
        stopper.join(WAIT)
    assert Counter({"COMPLETED": 1, "REGISTERED": 2}) == statuses(client, adder.id)
    assert (1, 2) == (worker.stats().completed, worker.stats().requeued)
    assert 1 == len(gate.calls)


def test_stop_timeout_requeues_running_jobs(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """A job still running when the stop timeout expires goes back to REGISTERED,
    and its late result is discarded."""
    gate = Gate()
    worker = fast_worker(server)
    worker.handler(adder.id)(gate)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    worker.start()
    gate.wait_started()
    worker.stop(timeout=0.05)
    assert JobStatus.REGISTERED == client.job(job.id).status
    gate.release.set()
    assert WorkerState.STOPPED == worker.state
    assert 1 == worker.stats().requeued


def test_stop_is_idempotent_and_a_stopped_worker_stays_stopped(
    server: TopChefServer, adder: Service, threads_before: Any
) -> None:
    """stop() twice is harmless; start() after stop() is refused."""
    worker = fast_worker(server)
    worker.handler(adder.id)(add)
    worker.start()
    worker.start()  # already running: nothing happens
    worker.stop()
    worker.stop()
    with pytest.raises(ConfigurationError, match="cannot be started again"):
        worker.start()
    never_started = fast_worker(server)
    never_started.stop()
    assert WorkerState.STOPPED == never_started.state


def test_sigterm_stops_run_gracefully(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """On the main thread, SIGTERM lets the running job finish, then run() returns
    and the previous signal handler is back."""
    gate = Gate()
    worker = fast_worker(server)
    worker.handler(adder.id)(gate)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    before = signal.getsignal(signal.SIGTERM)

    def operator() -> None:
        gate.wait_started()
        os.kill(os.getpid(), signal.SIGTERM)
        server.wait_for_requests(lambda log: len(log) > 0)
        gate.release.set()

    helper = threading.Thread(target=operator)
    helper.start()
    worker.run()
    helper.join(WAIT)
    assert JobStatus.COMPLETED == client.job(job.id).status
    assert before == signal.getsignal(signal.SIGTERM)


def test_run_until_idle_off_the_main_thread(server: TopChefServer, adder: Service) -> None:
    """run() works on any thread (without signal handlers) and returns when idle."""
    client = TopChefClient(server.url)
    for i in range(10):
        client.submit_job(adder.id, {"a": i, "b": 0})
    worker = fast_worker(server)
    worker.handler(adder.id)(add)
    runner = threading.Thread(target=worker.run, kwargs={"until_idle": True})
    runner.start()
    runner.join(WAIT)
    assert not runner.is_alive()
    assert 10 == worker.stats().completed


# -- starting -------------------------------------------------------------------------


def test_start_without_a_url(monkeypatch: pytest.MonkeyPatch, adder: Service) -> None:
    """No URL anywhere is a clear ConfigurationError."""
    monkeypatch.delenv("TOPCHEF_URL", raising=False)
    worker = Worker()
    worker.handler(adder.id)(add)
    with pytest.raises(ConfigurationError, match="TOPCHEF_URL"):
        worker.start()
    assert WorkerState.NEW == worker.state


def test_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, server: TopChefServer, adder: Service
) -> None:
    """TOPCHEF_URL supplies a URL left out of the constructor."""
    monkeypatch.setenv("TOPCHEF_URL", server.url)
    worker = Worker(poll_interval=0.05)
    worker.handler(adder.id)(add)
    TopChefClient(server.url).submit_job(adder.id, {"a": 1, "b": 1})
    worker.run(until_idle=True)
    assert (server.url, 1) == (worker.url, worker.stats().completed)


def test_start_without_handlers(server: TopChefServer) -> None:
    """A worker with nothing to run refuses to start."""
    with pytest.raises(ConfigurationError, match="no handlers"):
        fast_worker(server).start()


def test_unknown_service_id_fails_start(server: TopChefServer, threads_before: Any) -> None:
    """A handler for a service the server does not have ends the start, by id: a
    configuration error, not an outage to wait out."""
    worker = fast_worker(server)
    worker.handler("00000000-0000-0000-0000-000000000000")(add)
    worker.start()
    with pytest.raises(ConfigurationError, match="00000000-0000") as raised:
        worker.wait_ready(WAIT)
    assert isinstance(raised.value.__cause__, ServiceNotFoundError)
    assert WorkerState.STOPPED == worker.state
    worker.stop()


def test_find_or_create(client: TopChefClient, server: TopChefServer) -> None:
    """A described service is created once, found by name and schemas afterwards,
    and a different schema makes a new one."""
    spec: dict[str, Any] = {
        "name": "Adder",
        "description": "adds",
        "job_registration_schema": ADDER_PARAMETERS,
        "job_result_schema": ADDER_RESULTS,
        "service_timeout": 12,
    }
    first = fast_worker(server)
    first.handler(**spec)(add)
    with first:
        assert first.wait_ready(WAIT)
        created = first.services[0]
    assert (12, "Adder") == (created.timeout, created.name)

    again = fast_worker(server)
    again.handler(**{**spec, "service_timeout": 15})(add)
    with again:
        assert again.wait_ready(WAIT)
        assert created.id == again.services[0].id
    assert 15 == client.service(created.id).timeout

    other = fast_worker(server)
    other.handler(**{**spec, "job_result_schema": {"type": "object"}})(add)
    with other:
        assert other.wait_ready(WAIT)
        assert created.id != other.services[0].id
    assert 2 == len(client.services())


def test_invalid_schema_is_refused_before_creating(
    client: TopChefClient, server: TopChefServer
) -> None:
    """A schema that is not valid Draft 4 is refused at registration, naming it, and
    no service is created."""
    worker = fast_worker(server)
    with pytest.raises(ConfigurationError, match="job_registration_schema of 'bad' is not a valid"):
        worker.handler(
            name="bad", description="d", job_registration_schema={"type": 5}, job_result_schema={}
        )(add)
    assert [] == client.services()


def test_two_handlers_resolving_to_one_service(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """An id and a description that name the same service are refused at start."""
    worker = fast_worker(server)
    worker.handler(adder.id)(add)
    worker.handler(
        name="Adder",
        description="adds a and b",
        job_registration_schema=ADDER_PARAMETERS,
        job_result_schema=ADDER_RESULTS,
    )(add)
    worker.start()
    with pytest.raises(ConfigurationError, match="two handlers"):
        worker.wait_ready(WAIT)
    worker.stop()


def test_registration_after_start_is_refused(server: TopChefServer, adder: Service) -> None:
    """Handlers are fixed once the worker runs."""
    worker = fast_worker(server)
    worker.handler(adder.id)(add)
    with worker, pytest.raises(ConfigurationError, match="before the worker starts"):
        worker.handler("8a432f0e-7b17-4c63-8e68-ddd5b4eb46c0")(add)


def test_idle_polling_is_spread_over_many_services(
    client: TopChefClient, server: TopChefServer
) -> None:
    """With many services, an idle queue is polled less often than poll_interval, so
    that idle polls stay under idle_poll_rate per second in all."""
    worker = fast_worker(server, poll_interval=1.0, idle_poll_rate=2.0)
    for i in range(6):
        sid = client.create_service(
            name=f"s{i}", description="d", job_registration_schema={}, job_result_schema={}
        ).id
        worker.handler(sid)(add)
    assert 3.0 == worker.settings.idle_poll_interval(6)
    with pytest.raises(ConfigurationError, match="idle_poll_rate"):
        Worker(server.url, idle_poll_rate=0)


def test_a_busy_queue_is_claimed_in_batches(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """With free slots on a busy queue, one GET /queue names up to ten jobs, each then
    claimed with its own PATCH: far fewer polls than jobs, and every job runs once."""
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    def handler(parameters: dict[str, Any], job: Job) -> dict[str, Any]:
        with lock:
            calls[job.id] += 1
        return {"sum": parameters["a"] + parameters["b"]}

    jobs = [client.submit_job(adder.id, {"a": i, "b": 1}) for i in range(100)]
    server.clear_requests()
    worker = fast_worker(server, max_jobs=10)
    worker.handler(adder.id)(handler)
    worker.run(until_idle=True)
    log = server.requests
    polls = sum(1 for r in log if r.path.endswith(("/jobs/next", "/queue")))
    claims = sum(1 for r in log if r.method == "PATCH" and b"WORKING" in r.body)
    assert ({job.id: 1 for job in jobs}, 100) == (dict(calls), claims)
    assert polls <= 30, f"{polls} polls for 100 jobs"
    assert any(r.path == f"/services/{adder.id}/queue" for r in log)
