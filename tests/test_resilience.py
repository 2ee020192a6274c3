"""The worker against a server that fails: outages, 500s, lost answers, slow answers,
crashes, broken pools and overrunning handlers.  Nothing is lost and nothing runs
twice."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import handlers
from test_worker import WAIT, Gate, fast_worker, statuses
from topchef_worker import (
    Job,
    JobStatus,
    RetryPolicy,
    Service,
    TopChefClient,
    Worker,
    WorkerState,
)
from topchef_worker.exceptions import JobTimeoutError
from topchef_worker.testing import TopChefServer

FAST_RETRY = RetryPolicy.forever(initial=0.01, maximum=0.2)
TESTS = Path(__file__).parent


def resilient_worker(server: TopChefServer, **kwargs: Any) -> Worker:
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("heartbeat_interval", 0.05)
    return fast_worker(server, **kwargs)


class Counting:
    """A handler that counts its calls per job id."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()

    def __call__(self, parameters: dict[str, Any], job: Job) -> dict[str, Any]:
        with self.lock:
            self.calls[job.id] += 1
        return {"sum": parameters["a"] + parameters["b"]}


def test_server_outage_degrades_then_recovers(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """With the server down the worker is DEGRADED and keeps retrying; once it is
    back on the same port the worker is RUNNING and every job completes once."""
    handler = Counting()
    worker = resilient_worker(server)
    worker.handler(adder.id)(handler)
    jobs = [client.submit_job(adder.id, {"a": i, "b": 1}) for i in range(10)]
    with worker:
        worker.wait_for(lambda stats: stats.completed == 10)
        server.stop()
        stats = worker.wait_for(lambda stats: stats.state is WorkerState.DEGRADED)
        failed_before = stats.heartbeats_failed + stats.poll_errors
        worker.wait_for(lambda s: s.heartbeats_failed + s.poll_errors >= failed_before + 3)
        server.start()
        worker.wait_for(lambda stats: stats.state is WorkerState.RUNNING)
        more = [client.submit_job(adder.id, {"a": i, "b": 2}) for i in range(10)]
        worker.wait_for(lambda stats: stats.completed == 20)
    assert {job.id: 1 for job in jobs + more} == dict(handler.calls)
    assert Counter({"COMPLETED": 20}) == statuses(client, adder.id)


def test_html_500s_are_retried(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """Polls, claims and reports answered with Flask's 500 page are retried."""
    handler = Counting()
    worker = resilient_worker(server)
    worker.handler(adder.id)(handler)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    server.faults.fail_next(2, path="/services/*/jobs/next")
    server.faults.fail_next(2, method="PATCH", path="/jobs/*")
    worker.run(until_idle=True)
    assert {job.id: 1} == dict(handler.calls)
    assert (JobStatus.COMPLETED, {"sum": 3}) == (
        client.job(job.id).status,
        client.job(job.id).results,
    )
    assert worker.stats().poll_errors >= 2


@pytest.mark.parametrize("after_apply", [False, True], ids=["before", "after"])
def test_lost_claim_answers_do_not_cause_a_second_run(
    client: TopChefClient, server: TopChefServer, adder: Service, after_apply: bool
) -> None:
    """A claim whose connection drops, applied or not, is retried and the job runs
    exactly once."""
    handler = Counting()
    worker = resilient_worker(server)
    worker.handler(adder.id)(handler)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    server.faults.drop_next(after_apply=after_apply, method="PATCH", path="/jobs/*")
    worker.run(until_idle=True)
    assert {job.id: 1} == dict(handler.calls)
    assert JobStatus.COMPLETED == client.job(job.id).status
    claims = [r for r in server.requests if b'"WORKING"' in r.body]
    assert [(True, after_apply), (False, True)] == [
        (r.dropped, r.status is not None) for r in claims
    ]


def test_lost_result_answers_are_delivered_once(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """A result whose answer is lost after it landed is sent again, harmlessly."""
    handler = Counting()
    worker = resilient_worker(server)
    worker.handler(adder.id)(handler)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    server.faults.drop_next(2, after_apply=True, method="PATCH", path="/jobs/*")
    server.faults.fail_next(1, status=503, method="PATCH", path="/jobs/*")
    worker.run(until_idle=True)
    assert {job.id: 1} == dict(handler.calls)
    assert (JobStatus.COMPLETED, {"sum": 3}) == (
        client.job(job.id).status,
        client.job(job.id).results,
    )


def test_slow_answers_beyond_the_read_timeout(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """Timed-out requests are retried; once the server is fast again, jobs complete."""
    handler = Counting()
    worker = resilient_worker(server, request_timeout=(2.0, 0.05))
    worker.handler(adder.id)(handler)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    server.faults.add_latency(0.2, path="/services/*/jobs/next")
    with worker:
        worker.wait_for(lambda stats: stats.poll_errors >= 2)
        server.faults.clear()
        worker.wait_for(lambda stats: stats.completed == 1)
    assert {job.id: 1} == dict(handler.calls)


def test_malformed_answers_are_logged_and_the_loop_goes_on(
    client: TopChefClient,
    server: TopChefServer,
    adder: Service,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """HTML or nonsense where JSON belongs is logged with method, path and status."""
    handler = Counting()
    worker = resilient_worker(server)
    worker.handler(adder.id)(handler)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    server.faults.fail_next(
        status=200, body="<html>maintenance</html>", content_type="text/html", path="*/jobs/next"
    )
    server.faults.fail_next(
        status=200, body='{"data": {"id": 7}}', content_type="application/json", path="*/next"
    )
    with caplog.at_level(logging.WARNING, logger="topchef_worker"):
        worker.run(until_idle=True)
    assert {job.id: 1} == dict(handler.calls)
    messages = [r.getMessage() for r in caplog.records if "poll of service" in r.getMessage()]
    assert 2 == len(messages)
    assert f"GET /services/{adder.id}/jobs/next answered 200" in messages[0]
    assert "instead of JSON: maintenance" in messages[0]
    assert "data.id is a number" in messages[1]


def test_undelivered_outcomes_go_to_the_outbox_and_are_delivered_next_start(
    client: TopChefClient, server: TopChefServer, adder: Service, tmp_path: Path
) -> None:
    """A result computed while the server is down survives stop() in the outbox and
    lands when the next worker starts."""
    outbox = tmp_path / "outbox.jsonl"
    gate = Gate()
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    first = resilient_worker(server, outbox=outbox)
    first.handler(adder.id)(gate)
    first.start()
    gate.wait_started()
    server.stop()
    gate.release.set()
    first.wait_for(lambda stats: stats.state is WorkerState.DEGRADED)
    first.stop(timeout=0.05)
    assert 1 == first.stats().undelivered
    assert [job.id] == [line.split('"')[3] for line in outbox.read_text().splitlines()]

    server.start()
    assert JobStatus.WORKING == client.job(job.id).status
    second = resilient_worker(server, outbox=outbox)
    second.handler(adder.id)(lambda parameters: {"sum": -1})
    with second:
        second.wait_for(lambda stats: stats.completed >= 1)
        assert (JobStatus.COMPLETED, {"sum": 3}) == (
            client.job(job.id).status,
            client.job(job.id).results,
        )
    assert not outbox.exists()


def test_without_an_outbox_stop_says_what_was_lost(
    client: TopChefClient,
    server: TopChefServer,
    adder: Service,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """stop() lists the undelivered job ids and outcomes loudly."""
    gate = Gate()
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    worker = resilient_worker(server)
    worker.handler(adder.id)(gate)
    worker.start()
    gate.wait_started()
    server.stop()
    gate.release.set()
    worker.wait_for(lambda stats: stats.state is WorkerState.DEGRADED)
    with caplog.at_level(logging.ERROR, logger="topchef_worker"):
        worker.stop(timeout=0.05)
    assert any(
        "could NOT be delivered" in r.getMessage() and f"{job.id} COMPLETED" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize(
    ("on_orphan", "expected"),
    [("requeue", JobStatus.COMPLETED), ("error", JobStatus.ERROR)],
)
def test_journal_recovers_jobs_a_killed_worker_claimed(
    client: TopChefClient,
    server: TopChefServer,
    adder: Service,
    tmp_path: Path,
    on_orphan: str,
    expected: JobStatus,
) -> None:
    """After kill -9 mid-job, the next start finds the claimed job still WORKING and
    requeues it (it then runs) or ends it ERROR, as the handler asks."""
    journal = tmp_path / "journal.jsonl"
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        [sys.executable, str(TESTS / "crashing_worker.py"), server.url, adder.id, str(journal)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert "started" == process.stdout.readline().strip()  # type: ignore[union-attr]
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(WAIT)
        process.stdout.close()  # type: ignore[union-attr]
    assert JobStatus.WORKING == client.job(job.id).status

    handler = Counting()
    worker = resilient_worker(server, journal=journal)
    worker.handler(adder.id, on_orphan=on_orphan)(handler)
    worker.run(until_idle=True)
    assert expected == client.job(job.id).status
    assert ({job.id: 1} if on_orphan == "requeue" else {}) == dict(handler.calls)
    assert "" == journal.read_text()


def test_overrunning_handlers_free_slots_up_to_a_cap(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """A timed-out job ends ERROR at its deadline; while max_overrun calls still run
    the worker claims nothing and is DEGRADED; when they end it goes on."""
    gate = Gate()
    errors: list[BaseException] = []
    worker = resilient_worker(server, max_jobs=1, max_overrun=1)
    worker.handler(adder.id, timeout=0.05, error_results=errors.append)(gate)
    first = client.submit_job(adder.id, {"a": 1, "b": 2})
    others = [client.submit_job(adder.id, {"a": i, "b": 0}) for i in range(2)]
    with worker:
        stats = worker.wait_for(lambda s: s.overrun == 1 and s.state is WorkerState.DEGRADED)
        assert (1, 1) == (stats.failed, stats.claimed)
        assert JobStatus.ERROR == client.job(first.id).status
        assert {JobStatus.REGISTERED} == {client.job(j.id).status for j in others}
        gate.release.set()
        worker.wait_for(lambda s: s.completed == 2 and s.state is WorkerState.RUNNING)
    assert [JobTimeoutError] == [type(e) for e in errors]
    assert 0 == worker.stats().overrun


def test_a_broken_process_pool_is_rebuilt(client: TopChefClient, server: TopChefServer) -> None:
    """A crashed pool process ends its job ERROR; the worker makes a new pool and the
    next jobs complete."""
    service = client.create_service(
        name="square", description="d", job_registration_schema={}, job_result_schema={}
    )
    context = multiprocessing.get_context("spawn")
    worker = resilient_worker(
        server, max_jobs=1, job_pool=lambda: ProcessPoolExecutor(1, mp_context=context)
    )
    worker.handler(service.id)(handlers.square_or_crash)
    crash = client.submit_job(service.id, {"x": 0, "crash": True})
    fine = [client.submit_job(service.id, {"x": x}) for x in (2, 3)]
    worker.run(until_idle=True)
    assert JobStatus.ERROR == client.job(crash.id).status
    assert [4, 9] == [client.job(j.id).results["y"] for j in fine]  # type: ignore[index]
    assert 1 == worker.stats().pool_rebuilds


def test_random_faults_are_repeatable(server: TopChefServer, adder: Service) -> None:
    """The same seed fails and drops the same requests."""
    outcomes = []
    for _ in range(2):
        server.clear_requests()
        server.faults.set_random(failure_rate=0.3, drop_rate=0.2, seed=7)
        client = TopChefClient(server.url, retry=None)
        for _ in range(30):
            try:
                client.check_in(adder.id)
            except Exception:  # counted from the request log below
                continue
        outcomes.append([(r.status, r.dropped) for r in server.requests])
        server.faults.clear()
    assert outcomes[0] == outcomes[1]
    assert {(None, True), (500, False), (200, False)} <= set(outcomes[0])
    with pytest.raises(ValueError, match="fractions"):
        server.faults.set_random(failure_rate=0.8, drop_rate=0.5)


@pytest.mark.soak
def test_soak(client: TopChefClient, server: TopChefServer, adder: Service) -> None:
    """2,000 jobs while 10% of requests fail with 5xx, 5% of connections drop, and
    the server goes down twice: every job ends COMPLETED exactly once with the right
    result, nothing is left WORKING or REGISTERED, and no thread is left over."""
    total = 2000
    for i in range(total):
        client.submit_job(adder.id, {"a": i, "b": 1})
    handler = Counting()
    worker = resilient_worker(server, max_jobs=8, heartbeat_interval=0.2)
    worker.handler(adder.id)(handler)
    server.faults.set_random(failure_rate=0.10, drop_rate=0.05, seed=2026)
    threads_at_start = None
    with worker:
        for outage_at in (total // 3, 2 * total // 3):
            worker.wait_for(lambda s, n=outage_at: s.completed >= n, timeout=120)
            if threads_at_start is None:
                threads_at_start = threading.active_count()
            server.stop()
            worker.wait_for(lambda s: s.state is WorkerState.DEGRADED, timeout=60)
            server.start()
        worker.wait_for(lambda s: s.completed == total, timeout=120)
        threads_at_end = threading.active_count()
    server.faults.clear()
    assert all(count == 1 for count in handler.calls.values())
    assert total == len(handler.calls)
    jobs = client.jobs(adder.id)
    assert Counter({"COMPLETED": total}) == Counter(job.status.value for job in jobs)
    assert all(job.results == {"sum": job.parameters["a"] + 1} for job in jobs)
    assert threads_at_start is not None
    assert threads_at_end <= threads_at_start + 4  # pools fill up to their fixed sizes
    stats = worker.stats()
    print(
        f"soak: {total} jobs, {stats.poll_errors} poll errors, "
        f"{stats.heartbeats_failed} failed heartbeats, {stats.polls} polls, "
        f"threads {threads_at_start} -> {threads_at_end}"
    )
