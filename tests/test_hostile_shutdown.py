"""Hostile shutdown: ``stop(timeout=T)`` returns within T plus a small margin however
the worker is caught, and leaves no job it claimed WORKING (issue 10, defect 3).

When ``stop()`` returns, every job the worker claimed is COMPLETED, ERROR or REGISTERED
on the server, or its outcome is in the outbox, or (without one) its id is in an ERROR
log line; and no ``topchef-*`` thread is left but those still inside a hung handler.

Every blocking call a test makes on the worker (``start``, ``stop``) runs on a helper
thread and is joined with a deadline, so a call that hangs fails its test in seconds
instead of hanging the run; the :class:`Harness` then unblocks whatever the failed
worker left behind, so that the test process can still exit.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from test_cli import Process
from test_worker import WAIT, fast_worker
from topchef_worker import (
    JobStatus,
    RetryPolicy,
    Service,
    TopChefClient,
    Worker,
    WorkerState,
)
from topchef_worker.exceptions import ConfigurationError, JobTimeoutError
from topchef_worker.testing import TopChefServer

pytestmark = pytest.mark.timeout(60)

#: The margin stop(timeout) may take beyond its timeout.  The rebuilt worker will
#: document 5 s as ``Worker.STOP_MARGIN``, and the tests hold it to that.
MARGIN = 5.0
#: How long start() may take when it only has to begin connecting.
START_BOUND = 2.0
#: How long a "hung" handler holds its call if the test never releases it; the
#: harness releases it at teardown, long before.
HUNG = 120.0
FAST_RETRY = RetryPolicy.forever(initial=0.01, maximum=0.2)
SCRIPTS = Path(__file__).parent / "scripts"


# -- the harness ----------------------------------------------------------------------


class Call:
    """A blocking call on a daemon thread: how long it took, and its value or error."""

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.elapsed: float | None = None
        self.thread = threading.Thread(target=self._run, args=(fn, args), name=name, daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        began = time.monotonic()
        try:
            self.value = fn(*args)
        except BaseException as error:  # handed to the test thread by result()
            self.error = error
        finally:
            self.elapsed = time.monotonic() - began
            self.done.set()

    def wait(self, timeout: float) -> bool:
        """True once the call returned or raised, False if it is still blocked."""
        return self.done.wait(timeout)

    def result(self, timeout: float, what: str) -> Any:
        """The call's value; fails the test if it is still blocked after *timeout*."""
        if not self.done.wait(timeout):
            pytest.fail(f"{what} did not return within {timeout:g} s")
        if self.error is not None:
            raise self.error
        return self.value


class Hold:
    """A handler for the Adder service that holds each call until ``release`` is set
    (a hung handler, when the test never sets it), and tells which calls started,
    which returned, and which threads are still inside a call."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._started = threading.Semaphore(0)
        self._returned = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._inside: set[threading.Thread] = set()
        self.calls: list[dict[str, Any]] = []

    def __call__(self, parameters: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._inside.add(threading.current_thread())
            self.calls.append(parameters)
        self._started.release()
        try:
            self.release.wait(HUNG)
            return {"sum": parameters["a"] + parameters["b"]}
        finally:
            with self._lock:
                self._inside.discard(threading.current_thread())
            self._returned.release()

    def wait_started(self, n: int = 1) -> None:
        for _ in range(n):
            assert self._started.acquire(timeout=WAIT), "a handler did not start in time"

    def wait_returned(self, n: int = 1) -> None:
        for _ in range(n):
            assert self._returned.acquire(timeout=WAIT), "a handler did not return in time"

    def inside(self) -> set[threading.Thread]:
        """The threads still inside a call."""
        with self._lock:
            return set(self._inside)


class Harness:
    """Makes workers and handlers for one test, runs their blocking calls with a
    deadline, and cleans up whatever a failing worker leaves behind."""

    def __init__(self, server: TopChefServer) -> None:
        self.server = server
        self.before = set(threading.enumerate())
        self.workers: list[Worker] = []
        self.holds: list[Hold] = []
        self.calls: list[Call] = []

    def worker(self, **kwargs: Any) -> Worker:
        """A fast worker (short polls, frequent heartbeats, quick retries) on the server."""
        kwargs.setdefault("retry", FAST_RETRY)
        kwargs.setdefault("heartbeat_interval", 0.05)
        return self.track(fast_worker(self.server, **kwargs))

    def track(self, worker: Worker) -> Worker:
        self.workers.append(worker)
        return worker

    def hold(self) -> Hold:
        hold = Hold()
        self.holds.append(hold)
        return hold

    def call(self, fn: Callable[..., Any], *args: Any, name: str) -> Call:
        call = Call(fn, *args, name=name)
        self.calls.append(call)
        return call

    def start(self, worker: Worker) -> None:
        """Start the worker and wait until it is RUNNING."""
        self.call(worker.start, name="test-start").result(START_BOUND + WAIT, "start()")
        worker.wait_for(lambda stats: stats.state is WorkerState.RUNNING, timeout=WAIT)

    def stop(self, worker: Worker, timeout: float | None) -> float:
        """Call ``worker.stop(timeout)`` and return how long it took; fail the test if
        it does not return within the timeout plus MARGIN."""
        bound = (timeout or 0.0) + MARGIN
        call = self.call(worker.stop, timeout, name="test-stop")
        call.result(bound, f"stop(timeout={timeout})")
        assert call.elapsed is not None
        return call.elapsed

    def threads_left(self, inside_a_call: Iterable[threading.Thread] = ()) -> list[str]:
        """Threads the worker started that are still alive, but those still inside a
        (hung) handler call; the test server's threads do not count."""
        inside_a_call = set(inside_a_call)
        return sorted(
            thread.name
            for thread in threading.enumerate()
            if thread not in self.before
            and thread not in inside_a_call
            and thread.name.startswith("topchef-")
            and not thread.name.startswith("topchef-server")
            and thread.is_alive()
        )

    def close(self) -> None:
        for hold in self.holds:
            hold.release.set()
        self.server.faults.clear()
        for worker in self.workers:
            if worker.state in (WorkerState.NEW, WorkerState.STOPPED):
                continue
            stopper = Call(worker.stop, 0, name="test-teardown-stop")
            if not stopper.wait(3.0):
                _unjam(worker)
                stopper.wait(10.0)
        for call in self.calls:
            call.wait(10.0)


def _unjam(worker: Worker) -> None:
    """Last resort for the worker core as it was before issue 10.

    Its stop() can wait forever (called from a handler, or for an outcome a
    background task lost), and its scheduler thread then keeps the test process from
    exiting.  Its own "second signal" flag makes every one of its waits give up.  On
    a core without these attributes this does nothing.
    """
    if hasattr(worker, "_hurry"):
        worker._hurry = True
    for name in ("_abandon", "_stopping"):
        event = getattr(worker, name, None)
        if isinstance(event, threading.Event):
            event.set()
    condition = getattr(worker, "_cond", None)
    if isinstance(condition, threading.Condition):
        with condition:
            condition.notify_all()


@pytest.fixture
def harness(server: TopChefServer) -> Iterator[Harness]:
    made = Harness(server)
    yield made
    made.close()


def working(client: TopChefClient, service_id: str) -> list[str]:
    """Ids of the service's jobs that are WORKING on the server."""
    return [job.id for job in client.jobs(service_id) if job.status is JobStatus.WORKING]


def read_outbox(path: Path) -> list[dict[str, Any]]:
    """The outbox's records, one JSON object a line (none when there is no file)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Script(Process):
    """A script from tests/scripts run in a subprocess; its output is read by threads."""

    def __init__(self, name: str, *args: str) -> None:
        super().__init__(
            str(SCRIPTS / name),
            *args,
            env={"PYTHONPATH": os.pathsep.join(sys.path)},
            command=[sys.executable],
        )

    def wait_for_output(self, text: str, timeout: float = WAIT) -> None:
        with self.changed:
            printed = self.changed.wait_for(
                lambda: any(text in line for line in self.stdout), timeout
            )
        assert printed, f"never printed {text!r}; stderr: {''.join(self.stderr)}"

    def finish(self, timeout: float = WAIT) -> int:
        """The exit code; fails the test (killing the process) if it does not exit
        within *timeout* seconds."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(
                f"the process did not exit within {timeout:g} s; stderr: {''.join(self.stderr)}"
            )
        for reader in self.readers:
            reader.join(WAIT)
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(WAIT)
        for reader in self.readers:
            reader.join(WAIT)


@pytest.fixture
def scripts() -> Iterator[list[Script]]:
    started: list[Script] = []
    yield started
    for script in started:
        script.kill()


# -- hostile shutdowns ----------------------------------------------------------------


def test_stop_with_a_hung_handler(client: TopChefClient, adder: Service, harness: Harness) -> None:
    """stop(timeout=1) with a handler that never returns comes back within the bound,
    puts the job back to REGISTERED, and leaves no thread but the hung call's."""
    hold = harness.hold()
    worker = harness.worker()
    worker.handler(adder.id)(hold)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    harness.start(worker)
    hold.wait_started()

    elapsed = harness.stop(worker, 1.0)

    assert elapsed <= 1.0 + MARGIN
    assert (WorkerState.STOPPED, JobStatus.REGISTERED) == (
        worker.state,
        client.job(job.id).status,
    )
    assert [] == harness.threads_left(hold.inside())


def test_stop_while_a_timed_out_call_still_runs(
    client: TopChefClient, server: TopChefServer, adder: Service, harness: Harness
) -> None:
    """A handler overrunning its timeout=0.2 ends its job ERROR (JobTimeoutError) at
    the deadline; stop(timeout=1) then returns within the bound while the call runs on."""
    hold = harness.hold()
    errors: list[BaseException] = []
    worker = harness.worker()
    worker.handler(adder.id, timeout=0.2, error_results=errors.append)(hold)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    harness.start(worker)
    hold.wait_started()
    server.wait_for_requests(
        lambda log: any(
            r.path == f"/jobs/{job.id}" and b'"ERROR"' in r.body and r.status == 200 for r in log
        )
    )

    elapsed = harness.stop(worker, 1.0)
    still_inside = hold.inside()

    assert elapsed <= 1.0 + MARGIN
    assert 1 == len(still_inside)  # the call still runs: stop did not wait for it
    assert (WorkerState.STOPPED, JobStatus.ERROR, [JobTimeoutError]) == (
        worker.state,
        client.job(job.id).status,
        [type(error) for error in errors],
    )
    assert [] == harness.threads_left(still_inside)


@pytest.mark.parametrize("with_outbox", [True, False], ids=["outbox", "no-outbox"])
def test_stop_after_32_jobs_finished_during_an_outage(
    client: TopChefClient,
    server: TopChefServer,
    adder: Service,
    harness: Harness,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    with_outbox: bool,
) -> None:
    """32 jobs that finish while the server is down: stop(timeout=2) returns within
    the bound, and every outcome is in the outbox (one JSON line per job) or, without
    an outbox, every job id is named in an ERROR log line."""
    outbox = tmp_path / "outbox.jsonl"
    hold = harness.hold()
    worker = harness.worker(max_jobs=32, **({"outbox": outbox} if with_outbox else {}))
    worker.handler(adder.id)(hold)
    jobs = [client.submit_job(adder.id, {"a": i, "b": 1}) for i in range(32)]
    harness.start(worker)
    hold.wait_started(32)
    server.stop()
    hold.release.set()
    hold.wait_returned(32)

    with caplog.at_level(logging.ERROR, logger="topchef_worker"):
        elapsed = harness.stop(worker, 2.0)

    assert elapsed <= 2.0 + MARGIN
    assert WorkerState.STOPPED == worker.state
    assert [] == harness.threads_left()
    ids = {job.id for job in jobs}
    if with_outbox:
        records = read_outbox(outbox)
        assert 32 == len(records)
        assert ids == {record["job_id"] for record in records}
        assert {(adder.id, "COMPLETED")} == {(r["service_id"], r["status"]) for r in records}
        expected = {job.id: {"sum": job.parameters["a"] + 1} for job in jobs}
        assert expected == {record["job_id"]: record["results"] for record in records}
    else:
        errors = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
        assert [] == sorted(job_id for job_id in ids if job_id not in errors)
    server.start()
    # Nothing could be delivered, so the server still says WORKING for every job:
    # each is accounted for above.
    assert ids == set(working(client, adder.id))


@pytest.mark.parametrize("with_outbox", [True, False], ids=["outbox", "no-outbox"])
def test_stop_with_32_jobs_still_running_during_an_outage(
    client: TopChefClient,
    server: TopChefServer,
    adder: Service,
    harness: Harness,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    with_outbox: bool,
) -> None:
    """32 hung jobs and the server down: stop(timeout=2) still returns within the
    bound (the 32 requeues it cannot deliver are not tried one after another), and
    each job's REGISTERED outcome is in the outbox or, without one, its id is named
    in an ERROR log line."""
    outbox = tmp_path / "outbox.jsonl"
    hold = harness.hold()
    worker = harness.worker(max_jobs=32, **({"outbox": outbox} if with_outbox else {}))
    worker.handler(adder.id)(hold)
    jobs = [client.submit_job(adder.id, {"a": i, "b": 1}) for i in range(32)]
    harness.start(worker)
    hold.wait_started(32)
    server.stop()

    with caplog.at_level(logging.ERROR, logger="topchef_worker"):
        elapsed = harness.stop(worker, 2.0)

    assert elapsed <= 2.0 + MARGIN
    assert WorkerState.STOPPED == worker.state
    assert [] == harness.threads_left(hold.inside())
    ids = {job.id for job in jobs}
    if with_outbox:
        records = read_outbox(outbox)
        assert ids == {record["job_id"] for record in records}
        assert {"REGISTERED"} == {record["status"] for record in records}
    else:
        errors = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
        assert [] == sorted(job_id for job_id in ids if job_id not in errors)
    server.start()
    assert ids == set(working(client, adder.id))


def test_stop_called_from_a_handler(
    client: TopChefClient, adder: Service, harness: Harness
) -> None:
    """stop() called inside a handler starts the stop and returns at once; the
    handler's own job then completes and is delivered, the worker reaches STOPPED,
    and a stop() from outside then returns at once with every thread ended."""
    returned = threading.Event()
    worker = harness.worker()

    def handler(parameters: dict[str, Any]) -> dict[str, Any]:
        worker.stop()
        returned.set()
        return {"sum": parameters["a"] + parameters["b"]}

    worker.handler(adder.id)(handler)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    harness.start(worker)

    assert returned.wait(MARGIN), "stop() called from a handler did not return"
    worker.wait_for(lambda stats: stats.state is WorkerState.STOPPED, timeout=WAIT)
    assert (JobStatus.COMPLETED, {"sum": 3}) == (
        client.job(job.id).status,
        client.job(job.id).results,
    )
    # The stop the handler began runs on without a caller; a blocking stop() returns
    # only once it is over.
    assert harness.stop(worker, None) <= MARGIN
    assert [] == harness.threads_left()


def test_stop_during_start_stays_stopped(
    client: TopChefClient, server: TopChefServer, adder: Service, harness: Harness
) -> None:
    """With the server down, start() returns within 2 s (STARTING) and stop(timeout=1)
    leaves the worker STOPPED: when the server comes back it sends nothing and runs
    nothing, while a worker made the same way is seen at once and runs the job."""
    server.stop()
    never = harness.hold()
    worker = harness.worker()
    worker.handler(adder.id)(never)

    starting = harness.call(worker.start, name="test-start")
    assert starting.wait(START_BOUND), "start() did not return within 2 s with the server down"
    starting.result(0, "start()")
    assert WorkerState.STARTING == worker.state
    elapsed = harness.stop(worker, 1.0)
    assert elapsed <= 1.0 + MARGIN
    assert WorkerState.STOPPED == worker.state
    assert [] == harness.threads_left()

    server.clear_requests()
    server.start()
    job = client.submit_job(adder.id, {"a": 1, "b": 2})

    def from_a_worker(log: list[Any]) -> bool:
        return any(r.method != "POST" for r in log)  # the test itself only submits

    # A live worker retries its connection at least every 0.2 s (FAST_RETRY) and
    # beats every 0.05 s: 2 s of silence means it is really stopped...
    with pytest.raises(TimeoutError):
        server.wait_for_requests(from_a_worker, timeout=2.0)
    assert [] == never.calls
    # ...as the same wait shows for a worker that is alive.
    control = harness.worker()
    control.handler(adder.id)(lambda parameters: {"sum": parameters["a"] + parameters["b"]})
    harness.call(control.start, name="test-start")
    server.wait_for_requests(from_a_worker, timeout=2.0)
    server.wait_for_requests(
        lambda log: any(r.path == f"/jobs/{job.id}" and b"COMPLETED" in r.body for r in log)
    )
    assert ([], JobStatus.COMPLETED) == (never.calls, client.job(job.id).status)


def test_an_outbox_in_a_missing_directory_fails_start(
    adder: Service, harness: Harness, server: TopChefServer, tmp_path: Path
) -> None:
    """An outbox that cannot be written (its directory does not exist) fails start()
    at once with a ConfigurationError naming the path, and leaves no thread."""
    path = tmp_path / "missing" / "outbox.jsonl"

    def start() -> None:
        worker = harness.worker(outbox=path)
        worker.handler(adder.id)(lambda parameters: {"sum": 0})
        worker.start()

    starting = harness.call(start, name="test-start")
    assert starting.wait(START_BOUND), "start() did not return within 2 s"
    assert (ConfigurationError, True) == (
        type(starting.error),
        str(path) in str(starting.error),
    )
    assert [] == harness.threads_left()


def test_outbox_directory_removed_while_running(
    client: TopChefClient,
    server: TopChefServer,
    adder: Service,
    harness: Harness,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When the outbox's directory disappears while the worker runs, stop(timeout=1)
    still returns within the bound, the worker is STOPPED (not stuck STOPPING), a
    second stop() returns at once, and the undelivered job is named in an ERROR line."""
    directory = tmp_path / "box"
    directory.mkdir()
    hold = harness.hold()
    worker = harness.worker(outbox=directory / "outbox.jsonl")
    worker.handler(adder.id)(hold)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    harness.start(worker)
    hold.wait_started()
    server.stop()
    shutil.rmtree(directory)
    hold.release.set()
    hold.wait_returned()

    with caplog.at_level(logging.ERROR, logger="topchef_worker"):
        elapsed = harness.stop(worker, 1.0)
        again = harness.stop(worker, None)

    assert elapsed <= 1.0 + MARGIN
    assert again <= MARGIN
    assert WorkerState.STOPPED == worker.state
    assert any(r.levelno >= logging.ERROR and job.id in r.getMessage() for r in caplog.records), (
        "no ERROR line names the undelivered job"
    )
    assert [] == harness.threads_left()


# -- the interpreter exiting, and a second Ctrl-C ------------------------------------


def test_stop_from_atexit_while_a_job_runs(
    client: TopChefClient, server: TopChefServer, adder: Service, scripts: list[Script]
) -> None:
    """A program that registers atexit.register(worker.stop, 5) and returns from main
    while one job runs and another is claimed but not started exits within the
    bound, and leaves no job WORKING."""
    jobs = [client.submit_job(adder.id, {"a": i, "b": 1}) for i in range(2)]
    script = Script("atexit_worker.py", server.url, adder.id)
    scripts.append(script)
    script.wait_for_output("returning")

    code = script.finish(timeout=5 + MARGIN + 10)  # stop(5), the margin, the job's last 0.5 s

    assert 0 == code
    assert [] == working(client, adder.id)
    assert {JobStatus.REGISTERED, JobStatus.COMPLETED} >= {client.job(j.id).status for j in jobs}


def test_pools_refusing_work_at_interpreter_exit_make_no_claim_loop(
    client: TopChefClient, server: TopChefServer, adder: Service, scripts: list[Script]
) -> None:
    """While the interpreter exits (every pool refuses work) before the atexit
    stop(), the worker claims nothing more: a job left in the queue is claimed at most
    once, and no job is left WORKING."""
    jobs = [client.submit_job(adder.id, {"a": i, "b": 1}) for i in range(3)]
    script = Script("atexit_worker.py", server.url, adder.id, "default-pool")
    scripts.append(script)
    script.wait_for_output("returning")

    code = script.finish(timeout=5 + MARGIN + 10)

    claims = Counter(
        r.path for r in server.requests if r.method == "PATCH" and b"WORKING" in r.body
    )
    assert (0, []) == (code, working(client, adder.id))
    assert all(count <= 2 for count in claims.values()), claims
    assert {JobStatus.REGISTERED, JobStatus.COMPLETED} >= {client.job(j.id).status for j in jobs}


def test_a_second_ctrl_c_during_stop_leaves_no_job_working(
    client: TopChefClient, server: TopChefServer, adder: Service, scripts: list[Script]
) -> None:
    """``with worker:`` interrupted by Ctrl-C, then its stop() (draining a running job)
    by a second Ctrl-C: the process exits within the bound and no job is WORKING."""
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    script = Script("interrupted_worker.py", server.url, adder.id)
    scripts.append(script)
    script.wait_for_output("running")
    script.popen.send_signal(signal.SIGINT)
    script.wait_for_output("stopping")
    script.popen.send_signal(signal.SIGINT)

    script.finish(timeout=3 + MARGIN + 10)  # the handler's 3 s, the margin, start-up

    assert [] == working(client, adder.id)
    assert client.job(job.id).status in (JobStatus.REGISTERED, JobStatus.COMPLETED)


def test_stop_while_the_server_sits_on_a_request(
    client: TopChefClient,
    server: TopChefServer,
    adder: Service,
    harness: Harness,
    tmp_path: Path,
) -> None:
    """A server stuck on a request (the others queue behind it, one at a time) does
    not stretch stop(timeout=1) past its bound, though requests wait up to their read
    timeout: the outcome whose delivery hangs is kept in the outbox."""
    outbox = tmp_path / "outbox.jsonl"
    hold = harness.hold()
    worker = harness.worker(outbox=outbox)
    worker.handler(adder.id)(hold)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    harness.start(worker)
    hold.wait_started()
    server.faults.add_latency(8.0, method="PATCH", path="/jobs/*")
    hold.release.set()
    hold.wait_returned()

    elapsed = harness.stop(worker, 1.0)

    assert elapsed <= 1.0 + MARGIN
    assert WorkerState.STOPPED == worker.state
    assert [(job.id, "COMPLETED")] == [(r["job_id"], r["status"]) for r in read_outbox(outbox)]
    server.faults.clear()


class _CtrlCAt(logging.Filter):
    """A Ctrl-C landing while the worker logs *message*: where a signal can arrive
    between two bytecodes of the main thread, made to arrive at one chosen spot."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message
        self.raised = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() == self.message and not self.raised:
            self.raised += 1
            raise KeyboardInterrupt
        return True


class _ThreadingWithCtrlC:
    """The ``threading`` module as ``_shutdown`` sees it, but making the stop thread
    raises KeyboardInterrupt once: a Ctrl-C landing inside the launch itself."""

    def __init__(self) -> None:
        self.raised = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(threading, name)

    def Thread(self, *args: Any, **kwargs: Any) -> threading.Thread:  # noqa: N802
        if kwargs.get("name") == "topchef-stop" and not self.raised:
            self.raised += 1
            raise KeyboardInterrupt
        return threading.Thread(*args, **kwargs)


@pytest.mark.parametrize(
    ("where", "timeout"),
    [("as-the-stop-begins", None), ("inside-the-launch", 1.0)],
)
def test_a_ctrl_c_during_the_start_of_the_stop_still_stops_the_worker(
    client: TopChefClient,
    adder: Service,
    harness: Harness,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    where: str,
    timeout: float | None,
) -> None:
    """The second Ctrl-C of ``with worker:`` lands after the worker turned STOPPING
    and before its stop sequence was launched, or inside the launch, before its
    thread exists: the stop still happens, once and at once (the running job goes
    back to the queue), and the Ctrl-C reaches the caller."""
    hold = harness.hold()
    worker = harness.worker()
    worker.handler(adder.id)(hold)
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    harness.start(worker)
    hold.wait_started()
    interrupt: _CtrlCAt | _ThreadingWithCtrlC
    if where == "as-the-stop-begins":
        caplog.set_level(logging.INFO, "topchef_worker")  # the record is made, and filtered
        interrupt = _CtrlCAt("worker stopping")
        logging.getLogger("topchef_worker").addFilter(interrupt)
    else:
        interrupt = _ThreadingWithCtrlC()
        monkeypatch.setattr("topchef_worker._shutdown.threading", interrupt)
    try:
        call = harness.call(worker.stop, timeout, name="test-stop")
        with pytest.raises(KeyboardInterrupt):
            call.result((timeout or 0.0) + MARGIN, "stop()")
    finally:
        monkeypatch.undo()
        if isinstance(interrupt, _CtrlCAt):
            logging.getLogger("topchef_worker").removeFilter(interrupt)
    hold.release.set()

    assert (1, WorkerState.STOPPED) == (interrupt.raised, worker.state)
    assert JobStatus.REGISTERED == client.job(job.id).status
    assert [] == harness.threads_left(hold.inside())
