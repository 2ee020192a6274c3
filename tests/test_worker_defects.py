"""Regression tests for the worker defects of issue 10, one group per defect.

Each test names the behaviour it pins; the numbers in the section titles are the
defects' numbers in the issue.  Blocking calls go through the :class:`Harness` of
``test_hostile_shutdown``, so a worker that hangs fails its test instead of the run.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from test_cli import Process, free_port
from test_hostile_shutdown import (
    MARGIN,
    SCRIPTS,
    START_BOUND,
    Harness,
    read_outbox,
    working,
)
from test_worker import WAIT, add, heartbeats
from topchef_worker import (
    Job,
    JobStatus,
    RetryPolicy,
    Service,
    TopChefClient,
    Worker,
    WorkerState,
)
from topchef_worker.events import Event, JobFailed, JobStarted, StateChanged
from topchef_worker.exceptions import ConfigurationError
from topchef_worker.testing import ManualClock, TopChefServer

pytestmark = pytest.mark.timeout(60)

QUICK_RETRY = RetryPolicy.forever(initial=0.01, maximum=0.05)


@pytest.fixture
def harness(server: TopChefServer) -> Iterator[Harness]:
    made = Harness(server)
    yield made
    made.close()


def patches(log: list[Any], job_id: str, text: bytes, status: int | None = 200) -> int:
    """How many PATCHes of a job whose body contains *text* the server answered
    with *status* (None: whatever it answered)."""
    return sum(
        1
        for r in log
        if r.method == "PATCH"
        and r.path == f"/jobs/{job_id}"
        and text in r.body
        and (status is None or r.status == status)
    )


def errors_naming(caplog: pytest.LogCaptureFixture, *texts: str) -> list[str]:
    """ERROR (or worse) messages that contain every one of *texts*."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and all(text in r.getMessage() for text in texts)
    ]


# -- 1. heartbeats stop --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [(500, None, None), (200, "<html>maintenance</html>", "text/html")],
    ids=["500", "200-html"],
)
def test_heartbeats_go_on_after_one_fails_while_every_slot_is_busy(
    client: TopChefClient,
    server: TopChefServer,
    clock: ManualClock,
    adder: Service,
    harness: Harness,
    status: int,
    body: str | None,
    content_type: str | None,
) -> None:
    """One failed heartbeat while the only slot holds a long job: the next heartbeat
    is still sent, so the service never times out on the server's clock."""
    hold = harness.hold()
    worker = harness.worker(max_jobs=1, heartbeat_interval=0.2)
    worker.handler(adder.id)(hold)
    client.submit_job(adder.id, {"a": 1, "b": 2})
    harness.start(worker)
    hold.wait_started()

    server.faults.fail_next(
        status=status, body=body, content_type=content_type, method="PATCH", path="/services/*"
    )
    failed_at = heartbeats(
        server.wait_for_requests(lambda log: server.faults.pending == 0), adder.id
    )
    clock.advance(20)
    server.wait_for_requests(lambda log: heartbeats(log, adder.id) > failed_at, timeout=5.0)
    clock.advance(20)  # 40 s after the failed one, 20 s after the one that followed

    assert False is client.service(adder.id).has_timed_out


# -- 2. exceptions in background tasks -----------------------------------------------


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def test_results_too_deep_to_encode_end_error_and_free_the_slot(
    client: TopChefClient,
    server: TopChefServer,
    adder: Service,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Results nested 5,000 deep (json.dumps raises RecursionError) end the job ERROR
    with the reason logged, and the next job of the service still runs."""
    worker = harness.worker(max_jobs=1)
    worker.handler(adder.id)(
        lambda parameters: (
            {"sum": 0, "deep": nested(5000)} if parameters["a"] == 0 else add(parameters)
        )
    )
    deep = client.submit_job(adder.id, {"a": 0, "b": 0})
    after = client.submit_job(adder.id, {"a": 1, "b": 2})
    with caplog.at_level(logging.ERROR, logger="topchef_worker"):
        harness.start(worker)
        server.wait_for_requests(lambda log: patches(log, after.id, b"COMPLETED") == 1)
    harness.stop(worker, 1.0)

    assert (JobStatus.ERROR, JobStatus.COMPLETED) == (
        client.job(deep.id).status,
        client.job(after.id).status,
    )
    assert [] != [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR
        and deep.id in r.getMessage()
        and (r.exc_info is not None or "Recursion" in r.getMessage())
    ]


def test_a_result_schema_with_an_unreachable_ref_ends_jobs_error(
    client: TopChefClient,
    server: TopChefServer,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A result schema whose $ref points at a URL (never fetched: the worker makes no
    local check, the server cannot resolve it and answers 500) ends each job ERROR,
    not WORKING, with the failure logged; later jobs still run and stop() returns."""
    service = client.create_service(
        name="ref",
        description="d",
        job_registration_schema={},
        job_result_schema={
            "type": "object",
            "properties": {"sum": {"$ref": "http://127.0.0.1:1/schema.json"}},
        },
    )
    calls: list[dict[str, Any]] = []
    worker = harness.worker(max_jobs=1)
    worker.handler(service.id)(lambda parameters: calls.append(parameters) or {"sum": 1})
    jobs = [client.submit_job(service.id, {"n": i}) for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="topchef_worker"):
        harness.start(worker)
        server.wait_for_requests(
            lambda log: all(patches(log, job.id, b"ERROR") >= 1 for job in jobs), timeout=WAIT
        )
        elapsed = harness.stop(worker, 1.0)

    assert [{"n": i} for i in range(3)] == calls
    assert [JobStatus.ERROR] * 3 == [client.job(job.id).status for job in jobs]
    assert elapsed <= 1.0 + MARGIN
    assert [] != [
        r for r in caplog.records if r.levelno >= logging.ERROR and jobs[0].id in r.getMessage()
    ]
    assert any(
        "http://127.0.0.1:1/schema.json" in r.getMessage() and "never fetched" in r.getMessage()
        for r in caplog.records
    )


def test_error_results_raising_system_exit_still_ends_the_job_error(
    client: TopChefClient, server: TopChefServer, adder: Service, harness: Harness
) -> None:
    """error_results that raises SystemExit: the job ends ERROR (bare), and the worker
    keeps running and runs the next job."""

    def explain(error: BaseException) -> dict[str, Any]:
        raise SystemExit(3)

    def handler(parameters: dict[str, Any]) -> dict[str, Any]:
        if parameters["a"] == 0:
            raise ValueError("probe not tuned")
        return add(parameters)

    worker = harness.worker(max_jobs=1)
    worker.handler(adder.id, error_results=explain)(handler)
    failing = client.submit_job(adder.id, {"a": 0, "b": 0})
    after = client.submit_job(adder.id, {"a": 1, "b": 2})
    harness.start(worker)
    server.wait_for_requests(lambda log: patches(log, after.id, b"COMPLETED") == 1)
    state = worker.state
    harness.stop(worker, 1.0)

    assert (JobStatus.ERROR, None) == (
        client.job(failing.id).status,
        client.job(failing.id).results,
    )
    assert (WorkerState.RUNNING, JobStatus.COMPLETED) == (state, client.job(after.id).status)


def test_a_journal_that_cannot_be_written_is_logged_and_stop_still_returns(
    client: TopChefClient,
    server: TopChefServer,
    adder: Service,
    harness: Harness,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The journal's directory removed while the worker runs: the failure is logged
    with the file's name, no job stays WORKING, and stop() returns within the bound,
    STOPPED."""
    directory = tmp_path / "ledger"
    directory.mkdir()
    hold = harness.hold()
    worker = harness.worker(journal=directory / "journal.jsonl")
    worker.handler(adder.id)(hold)
    first = client.submit_job(adder.id, {"a": 1, "b": 2})
    with caplog.at_level(logging.ERROR, logger="topchef_worker"):
        harness.start(worker)
        hold.wait_started()
        shutil.rmtree(directory)
        hold.release.set()
        # Another claim to record: the worker may run it, or refuse to claim it
        # without a journal; either way it must not be left WORKING.
        client.submit_job(adder.id, {"a": 2, "b": 2})
        server.wait_for_requests(
            lambda log: patches(log, first.id, b"COMPLETED") + patches(log, first.id, b"ERROR") >= 1
        )
        elapsed = harness.stop(worker, 1.0)

    assert elapsed <= 1.0 + MARGIN
    assert WorkerState.STOPPED == worker.state
    assert [] == working(client, adder.id)
    assert [] != errors_naming(caplog, "journal.jsonl")


# -- 4. start() with the server unreachable, and configuration errors ----------------


def test_start_returns_at_once_while_the_server_is_unreachable(
    client: TopChefClient,
    server: TopChefServer,
    adder: Service,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the server down, start() returns within 2 s: STARTING, not ready, a
    WARNING names the URL and wait_ready(0.5) is False; once the server is up on its
    port, wait_ready() turns True and a submitted job runs."""
    server.stop()
    worker = harness.worker()
    worker.handler(adder.id)(add)
    with caplog.at_level(logging.WARNING, logger="topchef_worker"):
        starting = harness.call(worker.start, name="test-start")
        assert starting.wait(START_BOUND), "start() did not return within 2 s"
        starting.result(0, "start()")
        assert (WorkerState.STARTING, False) == (worker.state, worker.health().ready)
        assert False is worker.wait_ready(timeout=0.5)
        assert [] != [
            r
            for r in caplog.records
            if r.levelno == logging.WARNING and server.url in r.getMessage()
        ]

    server.start()
    assert True is worker.wait_ready(timeout=10)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    server.wait_for_requests(lambda log: patches(log, job.id, b"COMPLETED") == 1)
    assert JobStatus.COMPLETED == client.job(job.id).status


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://", "http://"),
        ("http://127.0.0.1:70000", "70000"),
        ("{url}\n", "{url}"),
    ],
    ids=["no-host", "port-out-of-range", "trailing-newline"],
)
def test_a_malformed_url_fails_at_once(
    server: TopChefServer, adder: Service, harness: Harness, url: str, named: str
) -> None:
    """A malformed URL is a ConfigurationError naming it, raised at once (by Worker()
    or start()), not an outage to retry."""
    url, named = url.format(url=server.url), named.format(url=server.url)

    def make_and_start() -> None:
        worker = harness.track(Worker(url, poll_interval=0.05, retry=QUICK_RETRY))
        worker.handler(adder.id)(add)
        worker.start()

    starting = harness.call(make_and_start, name="test-start")
    assert starting.wait(START_BOUND), "start() did not return within 2 s"
    assert (ConfigurationError, True) == (type(starting.error), named in str(starting.error))


def test_an_unknown_service_id_ends_the_start(server: TopChefServer, harness: Harness) -> None:
    """A handler for a service the server does not have: start() returns, then
    wait_ready() raises a ConfigurationError naming the id, and the worker is STOPPED."""
    service_id = str(uuid.uuid4())
    worker = harness.worker()
    worker.handler(service_id)(add)
    harness.call(worker.start, name="test-start").result(START_BOUND, "start()")

    with pytest.raises(ConfigurationError, match=service_id):
        worker.wait_ready(timeout=10)
    worker.wait_for(lambda stats: stats.state is WorkerState.STOPPED, timeout=WAIT)


@pytest.mark.parametrize("server_up", [True, False], ids=["server-up", "server-down"])
def test_an_invalid_schema_is_a_configuration_error(
    client: TopChefClient, server: TopChefServer, harness: Harness, server_up: bool
) -> None:
    """A described handler whose result schema is not valid Draft 4 is refused with a
    ConfigurationError naming the schema, at registration, start() or wait_ready(),
    within 2 s even while the server is down, and no service is created."""
    if not server_up:
        server.stop()
    worker = harness.worker()

    def register_start_and_wait() -> None:
        worker.handler(
            name="bad", description="d", job_registration_schema={}, job_result_schema={"type": 5}
        )(add)
        worker.start()
        worker.wait_ready(timeout=WAIT)

    configuring = harness.call(register_start_and_wait, name="test-start")
    assert configuring.wait(START_BOUND), "the invalid schema was not refused within 2 s"
    assert (ConfigurationError, True) == (
        type(configuring.error),
        "job_result_schema" in str(configuring.error),
    )
    worker.wait_for(lambda stats: stats.state in (WorkerState.NEW, WorkerState.STOPPED))
    server.start()
    assert [] == client.services()


# -- 5. outcomes lost or stranded ----------------------------------------------------


def test_an_undelivered_outcome_is_in_the_outbox_while_the_worker_runs(
    client: TopChefClient, server: TopChefServer, adder: Service, harness: Harness, tmp_path: Path
) -> None:
    """With an outbox, a result whose delivery fails is written to it at once (before
    any stop); once the server takes results again it is delivered, and the outbox
    the worker leaves no longer holds it."""
    outbox = tmp_path / "outbox.jsonl"
    hold = harness.hold()
    worker = harness.worker(outbox=outbox, retry=QUICK_RETRY)
    worker.handler(adder.id)(hold)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    harness.start(worker)
    hold.wait_started()
    server.faults.fail_next(10_000, status=503, method="PATCH", path=f"/jobs/{job.id}")
    hold.release.set()

    worker.wait_for(lambda stats: stats.undelivered >= 1)
    saved = read_outbox(outbox)
    server.faults.clear()
    worker.wait_for(lambda stats: stats.undelivered == 0 and stats.completed == 1)
    # Read after stop(): while the worker runs, the file's lines need not be one
    # outcome each (it may append and compact later); the outbox it leaves must be.
    harness.stop(worker, 1.0)
    left = read_outbox(outbox)

    assert [(job.id, adder.id, "COMPLETED", {"sum": 3})] == [
        (r["job_id"], r["service_id"], r["status"], r["results"]) for r in saved
    ]
    assert (JobStatus.COMPLETED, {"sum": 3}) == (
        client.job(job.id).status,
        client.job(job.id).results,
    )
    assert [] == [r for r in left if r.get("job_id") == job.id]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (413, "<html><h1>413 Request Entity Too Large</h1>nginx</html>"),
        (401, "<html><h1>401 Authorization Required</h1></html>"),
        (403, "<html><h1>403 Forbidden</h1></html>"),
        (200, "<html><h1>Welcome to the captive portal</h1></html>"),
    ],
    ids=["413", "401", "403", "200-html"],
)
def test_a_results_patch_refused_for_good_ends_the_job_error(
    client: TopChefClient,
    server: TopChefServer,
    adder: Service,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
    status: int,
    body: str,
) -> None:
    """A results PATCH answered with a status that will not change on retry (a
    proxy's 413, 401, 403, or a 200 HTML page) ends the job ERROR with the reason
    logged, and counts it as failed."""
    hold = harness.hold()
    worker = harness.worker()
    worker.handler(adder.id)(hold)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    with caplog.at_level(logging.ERROR, logger="topchef_worker"):
        harness.start(worker)
        hold.wait_started()
        server.faults.fail_next(
            status=status,
            body=body,
            content_type="text/html",
            method="PATCH",
            path=f"/jobs/{job.id}",
        )
        hold.release.set()
        server.wait_for_requests(lambda log: patches(log, job.id, b"ERROR") == 1)
        stats = worker.wait_for(lambda stats: stats.failed == 1)

    assert (JobStatus.ERROR, None) == (client.job(job.id).status, client.job(job.id).results)
    assert (1, 0) == (stats.failed, stats.completed)
    assert [] != errors_naming(caplog, job.id, str(status))


def test_a_result_schema_the_server_fails_on_does_not_wedge_the_worker(
    client: TopChefClient, server: TopChefServer, adder: Service, harness: Harness
) -> None:
    """A result schema typo ("type": "float") makes the server answer 500 to every
    results PATCH; after bounded retries the job ends ERROR, and the worker goes on."""
    service = client.create_service(
        name="float",
        description="d",
        job_registration_schema={},
        job_result_schema={"type": "object", "properties": {"x": {"type": "float"}}},
    )
    worker = harness.worker(max_jobs=1, retry=QUICK_RETRY)
    worker.handler(service.id)(lambda parameters: {"x": 1.5})
    worker.handler(adder.id)(add)
    job = client.submit_job(service.id, {})
    harness.start(worker)
    log = server.wait_for_requests(lambda log: patches(log, job.id, b"ERROR") == 1, timeout=30)
    after = client.submit_job(adder.id, {"a": 1, "b": 2})
    server.wait_for_requests(lambda log: patches(log, after.id, b"COMPLETED") == 1)

    assert patches(log, job.id, b'"x"', 500) >= 1  # as on the real server
    assert (JobStatus.ERROR, JobStatus.COMPLETED) == (
        client.job(job.id).status,
        client.job(after.id).status,
    )


def test_the_outbox_delivered_at_start_respects_the_jobs_current_state(
    client: TopChefClient, server: TopChefServer, adder: Service, harness: Harness, tmp_path: Path
) -> None:
    """At start the outbox is delivered only to jobs still WORKING (transient failures
    retried); a job since put back to REGISTERED or completed by someone else is left
    as it is, and no job is left WORKING."""
    elsewhere = client.create_service(
        name="elsewhere", description="d", job_registration_schema={}, job_result_schema={}
    )
    stranded = client.submit_job(adder.id, {"a": 1, "b": 2})
    client.update_job(stranded.id, status="WORKING")
    requeued = client.submit_job(elsewhere.id, {})  # claimed, then put back by an operator
    finished = client.submit_job(elsewhere.id, {})
    client.update_job(finished.id, status="COMPLETED", results={"by": "someone else"})
    outbox = tmp_path / "outbox.jsonl"
    outbox.write_text(
        "".join(
            json.dumps(
                {"job_id": job.id, "service_id": sid, "status": "COMPLETED", "results": results}
            )
            + "\n"
            for job, sid, results in [
                (stranded, adder.id, {"sum": 3}),
                (requeued, elsewhere.id, {"stale": True}),
                (finished, elsewhere.id, {"stale": True}),
            ]
        )
    )
    server.faults.fail_next(1, status=503, method="GET", path=f"/jobs/{stranded.id}")
    server.faults.fail_next(2, status=503, method="PATCH", path=f"/jobs/{stranded.id}")

    worker = harness.worker(outbox=outbox, retry=QUICK_RETRY)
    worker.handler(adder.id)(add)  # the outbox names jobs of a service it does not run, too
    harness.start(worker)
    server.wait_for_requests(lambda log: patches(log, stranded.id, b"COMPLETED") == 1)
    harness.stop(worker, 1.0)
    server.faults.clear()

    assert {
        stranded.id: (JobStatus.COMPLETED, {"sum": 3}),
        requeued.id: (JobStatus.REGISTERED, None),
        finished.id: (JobStatus.COMPLETED, {"by": "someone else"}),
    } == {
        job.id: (client.job(job.id).status, client.job(job.id).results)
        for job in (stranded, requeued, finished)
    }
    assert [] == read_outbox(outbox)
    assert [] == working(client, adder.id) + working(client, elsewhere.id)


# -- 7. a job pool shut down by its owner --------------------------------------------


def test_a_job_pool_shut_down_by_its_owner_makes_no_hot_loop(
    client: TopChefClient,
    server: TopChefServer,
    adder: Service,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A job pool given to the worker and shut down by its owner: the job is claimed
    (and put back) at most once while heartbeats go on, the worker is not ready, and
    an ERROR says the job pool cannot run jobs."""
    pool = ThreadPoolExecutor(2, thread_name_prefix="owners-pool")
    worker = harness.worker(job_pool=pool, max_jobs=2)
    worker.handler(adder.id)(add)
    with caplog.at_level(logging.ERROR, logger="topchef_worker"):
        harness.start(worker)
        pool.shutdown()
        job = client.submit_job(adder.id, {"a": 1, "b": 2})
        beats = heartbeats(server.requests, adder.id)
        log = server.wait_for_requests(lambda log: heartbeats(log, adder.id) >= beats + 10)
        ready = worker.health().ready
    harness.stop(worker, 1.0)

    claims = patches(log, job.id, b'"WORKING"', None)
    assert claims <= 1, f"claimed {claims} times in 10 heartbeats: a hot loop"
    assert (False, JobStatus.REGISTERED) == (ready, client.job(job.id).status)
    assert [] != [
        r for r in caplog.records if r.levelno >= logging.ERROR and "job pool" in r.getMessage()
    ]


def test_a_future_cancelled_by_the_pools_owner_is_requeued(
    client: TopChefClient, server: TopChefServer, adder: Service, harness: Harness
) -> None:
    """A claimed job queued in a one-thread pool whose owner shuts it down with
    cancel_futures ends REGISTERED, not WORKING; the running job still completes."""
    started: set[str] = set()
    changed = threading.Condition()

    def note(event: Event) -> None:
        if isinstance(event, JobStarted):
            with changed:
                started.add(event.job_id)
                changed.notify_all()

    pool = ThreadPoolExecutor(1, thread_name_prefix="owners-pool")
    hold = harness.hold()
    worker = harness.worker(job_pool=pool, max_jobs=2)
    worker.handler(adder.id)(hold)
    worker.add_listener(note)
    first = client.submit_job(adder.id, {"a": 1, "b": 2})
    queued = client.submit_job(adder.id, {"a": 2, "b": 2})
    harness.start(worker)
    hold.wait_started()
    with changed:
        assert changed.wait_for(lambda: {first.id, queued.id} <= started, WAIT)

    pool.shutdown(wait=False, cancel_futures=True)
    server.wait_for_requests(lambda log: patches(log, queued.id, b'"REGISTERED"') >= 1)
    hold.release.set()
    server.wait_for_requests(lambda log: patches(log, first.id, b"COMPLETED") == 1)
    harness.stop(worker, 1.0)

    assert {first.id: JobStatus.COMPLETED, queued.id: JobStatus.REGISTERED} == {
        job.id: client.job(job.id).status for job in (first, queued)
    }
    assert [{"a": 1, "b": 2}] == hold.calls  # the cancelled job never ran


# -- 8. the head of a queue never blocks the rest ------------------------------------


def test_a_job_requeued_on_purpose_runs_again(
    client: TopChefClient, server: TopChefServer, adder: Service, harness: Harness
) -> None:
    """A job put back to REGISTERED by a client after it ran in this worker runs
    again, and the jobs behind it run too."""
    calls: Counter[str] = Counter()

    def handler(parameters: dict[str, Any], job: Job) -> dict[str, Any]:
        calls[job.id] += 1
        return add(parameters)

    worker = harness.worker()
    worker.handler(adder.id)(handler)
    first = client.submit_job(adder.id, {"a": 1, "b": 2})
    harness.start(worker)
    server.wait_for_requests(lambda log: patches(log, first.id, b"COMPLETED") == 1)
    client.update_job(first.id, status="REGISTERED")
    second = client.submit_job(adder.id, {"a": 2, "b": 2})
    server.wait_for_requests(
        lambda log: (
            patches(log, first.id, b"COMPLETED") == 2 and patches(log, second.id, b"COMPLETED") == 1
        )
    )
    harness.stop(worker, 1.0)

    assert {first.id: 2, second.id: 1} == dict(calls)
    assert [JobStatus.COMPLETED] * 2 == [client.job(j.id).status for j in (first, second)]


def test_a_job_too_large_for_the_client_ends_error_and_does_not_block_the_queue(
    client: TopChefClient, server: TopChefServer, adder: Service, harness: Harness
) -> None:
    """A job whose parameters exceed the worker's client's max_response_bytes ends
    ERROR, and the jobs submitted after it still run."""
    big = client.submit_job(adder.id, {"a": 1, "b": 2, "pad": "x" * 50_000})
    small = [client.submit_job(adder.id, {"a": i, "b": 1}) for i in range(2)]
    with TopChefClient(server.url, retry=None, max_response_bytes=16_384) as limited:
        worker = harness.track(
            Worker(client=limited, poll_interval=0.05, heartbeat_interval=0.05, retry=QUICK_RETRY)
        )
        worker.handler(adder.id)(add)
        harness.start(worker)
        server.wait_for_requests(
            lambda log: (
                all(patches(log, job.id, b"COMPLETED") == 1 for job in small)
                and patches(log, big.id, b"ERROR") >= 1
            )
        )
        harness.stop(worker, 1.0)

    assert [JobStatus.ERROR, JobStatus.COMPLETED, JobStatus.COMPLETED] == [
        client.job(job.id).status for job in (big, *small)
    ]


# -- 9. health -----------------------------------------------------------------------


def test_liveness_survives_an_outage_and_readiness_follows_it(
    server: TopChefServer, adder: Service, harness: Harness
) -> None:
    """health().alive stays True through a server outage, while ready is True only
    when RUNNING: False while DEGRADED, True again once the server is back."""
    worker = harness.worker()
    worker.handler(adder.id)(add)
    harness.start(worker)
    before = worker.health()
    server.stop()
    worker.wait_for(lambda stats: stats.state is WorkerState.DEGRADED)
    during = worker.health()
    server.start()
    worker.wait_for(lambda stats: stats.state is WorkerState.RUNNING)
    after = worker.health()

    assert [(True, True), (True, False), (True, True)] == [
        (health.alive, health.ready) for health in (before, during, after)
    ]


def test_many_idle_services_are_healthy_between_spread_polls(
    client: TopChefClient, server: TopChefServer, clock: ManualClock, harness: Harness
) -> None:
    """With 40 idle services polled every ~10 s in all (idle_poll_rate=4), each is
    still healthy 12 s after its last poll: staleness follows the spread, it is not
    a fixed 10 s."""
    epoch = clock()

    def seconds() -> float:  # the worker's clock: the server's ManualClock, in seconds
        return (clock() - epoch).total_seconds()

    # Heartbeats every timeout/3 = 10 s; after an empty poll, the next after 1 s at
    # first, and (40 services at 4 polls a second) every 10 s once they are idle.
    worker = harness.worker(
        poll_interval=1.0,
        min_poll_interval=1.0,
        idle_poll_rate=4,
        heartbeat_interval=None,
        clock=seconds,
    )
    ids = []
    for i in range(40):
        service = client.create_service(
            name=f"s{i}", description="d", job_registration_schema={}, job_result_schema={}
        )
        ids.append(service.id)
        # Shared: no lease to take first, whose settle time the frozen clock would
        # hold up.
        worker.handler(service.id, exclusive=False)(add)
    harness.start(worker)
    worker.wait_for(lambda stats: stats.polls >= 40 and stats.heartbeats_sent >= 40)
    assert {f"/services/{sid}/queue" for sid in ids} <= {r.path for r in server.requests}

    clock.advance(12)
    health = worker.health()

    assert (True, ()) == (health.healthy, health.reasons)


def test_one_failing_service_does_not_make_the_state_flap(
    client: TopChefClient, server: TopChefServer, adder: Service, harness: Harness
) -> None:
    """While one service's polls keep failing and another's succeed, the worker turns
    DEGRADED once and does not alternate between RUNNING and DEGRADED."""
    failing = client.create_service(
        name="failing", description="d", job_registration_schema={}, job_result_schema={}
    )
    changes: list[tuple[WorkerState, WorkerState]] = []
    changed = threading.Condition()

    def note(event: Event) -> None:
        if isinstance(event, StateChanged):
            with changed:
                changes.append((event.old, event.new))
                changed.notify_all()

    worker = harness.worker(retry=QUICK_RETRY)
    worker.handler(adder.id)(add)
    worker.handler(failing.id)(add)
    worker.add_listener(note)
    harness.start(worker)
    path = f"/services/{failing.id}/jobs/next"
    server.faults.fail_next(10_000, path=path)

    def polls(log: list[Any], path: str, status: int) -> int:
        return sum(1 for r in log if r.path == path and r.status == status)

    server.wait_for_requests(
        lambda log: (
            polls(log, path, 500) >= 20 and polls(log, f"/services/{adder.id}/jobs/next", 204) >= 20
        )
    )
    harness.stop(worker, 1.0)
    with changed:
        assert changed.wait_for(
            lambda: (WorkerState.STOPPING, WorkerState.STOPPED) in changes, WAIT
        )

    assert 1 == sum(1 for _, new in changes if new is WorkerState.DEGRADED)
    assert [] == [
        change for change in changes if change == (WorkerState.DEGRADED, WorkerState.RUNNING)
    ]


# -- 10. smaller ---------------------------------------------------------------------


def test_a_job_claimed_as_stop_begins_is_requeued_once(
    client: TopChefClient, server: TopChefServer, harness: Harness
) -> None:
    """A job claimed just as stop(timeout=0) begins (its parameters take a while to
    check, so it is not started yet) is PATCHed back to REGISTERED exactly once."""
    service = client.create_service(
        name="long",
        description="d",
        job_registration_schema={
            "type": "object",
            "properties": {"items": {"type": "array", "items": {"type": "number", "minimum": 0}}},
        },
        job_result_schema={},
    )
    hold = harness.hold()
    worker = harness.worker(max_jobs=1)
    worker.handler(service.id)(hold)
    job = client.submit_job(service.id, {"items": list(range(30_000))})
    harness.start(worker)
    worker.wait_for(lambda stats: stats.claimed == 1)
    harness.stop(worker, 0)

    assert (1, JobStatus.REGISTERED) == (
        patches(server.requests, job.id, b'"REGISTERED"', None),
        client.job(job.id).status,
    )


def test_a_timed_out_job_is_measured_to_its_deadline(
    client: TopChefClient, adder: Service, harness: Harness
) -> None:
    """The JobFailed event of a job that timed out (timeout=0.2) has the time it ran
    as its duration, not 0."""
    failures: queue.Queue[JobFailed] = queue.Queue()
    hold = harness.hold()
    worker = harness.worker()
    worker.handler(adder.id, timeout=0.2)(hold)
    worker.add_listener(lambda event: isinstance(event, JobFailed) and failures.put(event))
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    harness.start(worker)
    failed = failures.get(timeout=WAIT)

    assert job.id == failed.job_id
    assert 0.2 <= failed.duration < 0.2 + MARGIN, failed


def test_run_works_with_more_than_1024_open_files(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """run() works in a process holding more than 1,024 open files (no select())."""
    import resource

    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 1300:
        pytest.skip("the hard limit on open files is too low to open 1,100")
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    finished = subprocess.run(
        [sys.executable, str(SCRIPTS / "many_fds_worker.py"), server.url, adder.id],
        capture_output=True,
        text=True,
        timeout=WAIT * 3,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )

    assert (0, "completed 1") == (finished.returncode, finished.stdout.strip()), finished.stderr
    assert JobStatus.COMPLETED == client.job(job.id).status


APP = """
from topchef_worker import Worker

worker = Worker(poll_interval=0.05)

@worker.handler("{service_id}")
def handle(parameters):
    return {{}}
"""


def test_sigterm_while_starting_exits_0(tmp_path: Path) -> None:
    """SIGTERM while `topchef-worker run` waits for an unreachable server exits 0."""
    url = f"http://127.0.0.1:{free_port()}"
    app = tmp_path / "waitingapp.py"
    app.write_text(APP.format(service_id=uuid.uuid4()))
    process = Process("run", f"{app}:worker", "--url", url)
    try:
        process.wait_for_line(process.stderr, url)
        process.signal(signal.SIGTERM)
        code = process.finish(timeout=WAIT)
    finally:
        if process.popen.poll() is None:
            process.popen.kill()
            process.finish()

    assert 0 == code, "".join(process.stderr)


# -- found in review -----------------------------------------------------------------


def test_a_job_that_times_out_while_queued_in_the_pool_ends_error_once(
    client: TopChefClient, server: TopChefServer, adder: Service, harness: Harness
) -> None:
    """With a pool smaller than max_jobs, a job still queued in the pool at its
    deadline ends ERROR with JobTimeoutError; it is not requeued again and again."""
    release = threading.Event()
    pool = ThreadPoolExecutor(1)

    def handler(parameters: dict[str, Any]) -> dict[str, Any]:
        release.wait(WAIT)
        return {"sum": 0}

    jobs = [client.submit_job(adder.id, {"a": i, "b": 0}) for i in range(2)]
    worker = harness.worker(max_jobs=2, job_pool=pool)
    worker.handler(adder.id, timeout=0.3)(handler)
    failed: list[JobFailed] = []
    worker.add_listener(
        lambda event: failed.append(event) if isinstance(event, JobFailed) else None
    )
    try:
        harness.start(worker)
        worker.wait_for(lambda stats: stats.failed == 2, timeout=WAIT)
        stats = worker.stats()
    finally:
        release.set()
        harness.stop(worker, 1.0)
        pool.shutdown(wait=True)
    assert (0, {JobStatus.ERROR}) == (
        stats.requeued,
        {client.job(job.id).status for job in jobs},
    )
