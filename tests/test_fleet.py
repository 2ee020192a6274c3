"""Several worker processes on one service: each job runs once, and when the process
that executes jobs is killed -9 or stopped, another takes over.

TopChef has no atomic claim, so this can only hold if one worker per service claims
(the active one) while the others stand by.  Every test runs real processes
(``tests/scripts/fleet_worker.py``) against a server on a real clock (the service
timeout has to run out), and asserts from the log every execution appends to:
``start <job> <pid> <time>`` before the handler's work, ``end ...`` after, so that a
job whose process was killed mid-run shows that it started.

Waits are on the server's state (``wait_for_requests`` re-checks after every request
it handles); a wait that runs out does not fail by itself, so that the assertions say
what went wrong: jobs run twice first, since that is the property under test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import attrs
import pytest

from test_cli import WAIT, Process
from topchef_worker import TopChefClient
from topchef_worker.testing import LoggedRequest, TopChefServer

pytestmark = pytest.mark.timeout(120)

_T = TypeVar("_T")

SCRIPT = Path(__file__).parent / "scripts" / "fleet_worker.py"
MAX_JOBS = 4


@attrs.frozen
class Run:
    """One execution of a job; ``end`` is None when its process died mid-job."""

    job_id: str
    pid: int
    start: float
    end: float | None


def read_runs(path: Path) -> list[Run]:
    """The executions in the log, pairing each ``end`` with its ``start``."""
    if not path.exists():
        return []
    runs: list[Run] = []
    open_runs: defaultdict[tuple[str, int], list[int]] = defaultdict(list)
    for line in path.read_text().splitlines():
        kind, job_id, pid, stamp = line.split()
        key = (job_id, int(pid))
        if kind == "start":
            open_runs[key].append(len(runs))
            runs.append(Run(job_id, int(pid), float(stamp), None))
        else:
            index = open_runs[key].pop(0)
            runs[index] = attrs.evolve(runs[index], end=float(stamp))
    return runs


def run_twice(runs: list[Run]) -> dict[str, int]:
    """The jobs executed more than once, and how many times."""
    return {job: n for job, n in Counter(run.job_id for run in runs).items() if n > 1}


def first_start_after(runs: list[Run], pid: int, moment: float) -> float | None:
    """Seconds from *moment* to the first start of a job by a process other than *pid*."""
    return min((r.start - moment for r in runs if r.pid != pid and r.start > moment), default=None)


class FleetWorker(Process):
    """One ``fleet_worker.py`` process; its output is read by threads."""

    def __init__(self, url: str, service_id: str, log: Path, *options: str) -> None:
        super().__init__(
            url,
            service_id,
            str(log),
            f"--max-jobs={MAX_JOBS}",
            *options,
            env={"PYTHONPATH": os.pathsep.join(sys.path)},
            command=[sys.executable, str(SCRIPT)],
        )
        self.pid = self.popen.pid

    def stop(self) -> int:
        """SIGTERM (a clean stop) and the exit code."""
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
        return self.finish()

    def kill(self) -> None:
        """kill -9, and wait until the process is gone."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.finish()


class Fleet:
    """A service on a real-clock server, worker processes for it, and their log."""

    def __init__(self, server: TopChefServer, client: TopChefClient, log: Path) -> None:
        self.server = server
        self.client = client
        self.log = log
        self.workers: list[FleetWorker] = []
        self.service_id = ""

    def service(self, jobs: int, timeout: int | None = None) -> None:
        """A service with *jobs* queued jobs (and a check-in timeout, if given)."""
        self.service_id = self.client.create_service(
            name="fleet",
            description="fleet test",
            job_registration_schema={"type": "object"},
            job_result_schema={"type": "object"},
        ).id
        if timeout is not None:
            self.client.update_service(self.service_id, timeout=timeout)
        for n in range(jobs):
            self.client.submit_job(self.service_id, {"n": n})

    def start(self, count: int, *options: str) -> list[FleetWorker]:
        """Start *count* workers at once."""
        started = [
            FleetWorker(self.server.url, self.service_id, self.log, *options) for _ in range(count)
        ]
        self.workers += started
        return started

    def runs(self) -> list[Run]:
        return read_runs(self.log)

    def statuses(self) -> dict[str, int]:
        return dict(Counter(str(job.status) for job in self.client.jobs(self.service_id)))

    def wait_mid_run(self) -> None:
        """Wait until MAX_JOBS jobs are COMPLETED and a full batch is WORKING, so that
        a signal sent now catches jobs mid-run rather than between two batches."""
        jobs = self.server.app.services[self.service_id].jobs

        def mid_run(_: list[LoggedRequest]) -> bool:
            # Called with the server's lock held: read its state, take no lock.
            status = Counter(job.status for job in jobs)
            return status["COMPLETED"] >= MAX_JOBS and status["WORKING"] >= MAX_JOBS

        self.server.wait_for_requests(mid_run, WAIT)

    def settle(self, timeout: float) -> dict[str, int]:
        """Wait until every job is COMPLETED or ERROR, for up to *timeout* s; return
        the statuses whether or not they are, for the test to assert on."""
        jobs = self.server.app.services[self.service_id].jobs
        with contextlib.suppress(TimeoutError):  # the statuses tell what is missing
            self.server.wait_for_requests(
                lambda _: all(job.status in ("COMPLETED", "ERROR") for job in jobs), timeout
            )
        return self.statuses()

    def executing(self) -> FleetWorker:
        """The worker to signal: one mid-job if any, the one that ran most first."""
        runs = self.runs()
        ran = Counter(run.pid for run in runs)
        mid_job = {run.pid for run in runs if run.end is None}
        pid = max(ran, key=lambda pid: (pid in mid_job, ran[pid]))
        return next(worker for worker in self.workers if worker.pid == pid)


def under_lock(server: TopChefServer, read: Callable[[], _T]) -> _T:
    """*read* the stand-in's state under its lock (between two requests)."""
    box: list[_T] = []

    def once(_: list[LoggedRequest]) -> bool:
        box.append(read())
        return True

    server.wait_for_requests(once, WAIT)
    return box[0]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    # A real clock (the service timeout must run out) and a short request log (the
    # waits copy it after every request).
    with TopChefServer(log_size=16) as server, TopChefClient(server.url) as client:
        made = Fleet(server, client, tmp_path / "runs.log")
        try:
            yield made
        finally:
            server.faults.clear()
            for worker in made.workers:
                worker.kill()


def describe(twice: dict[str, int]) -> str:
    return f"{len(twice)} jobs ran more than once, e.g. {sorted(twice.items())[:3]}"


@pytest.mark.parametrize("count", [2, 4])
def test_workers_started_together_run_every_job_once(fleet: Fleet, count: int) -> None:
    """W processes started at once on one service with 200 instant jobs: every job
    is COMPLETED, by exactly one execution."""
    fleet.service(jobs=200)
    workers = fleet.start(count)
    statuses = fleet.settle(timeout=60)
    codes = [worker.stop() for worker in workers]

    runs = fleet.runs()
    twice = run_twice(runs)
    assert {} == twice, describe(twice)
    assert {"COMPLETED": 200} == statuses
    assert 200 == len(runs)
    assert [0] * count == codes


def test_a_killed_worker_is_taken_over_and_only_its_unfinished_jobs_run_again(
    fleet: Fleet,
) -> None:
    """kill -9 of the process executing jobs (service timeout 3 s, jobs of 0.3 s):
    the other process starts a job within the timeout + 10 s, every job ends
    COMPLETED, and the only jobs run twice are those the killed one had started and
    not finished."""
    fleet.service(jobs=40, timeout=3)
    fleet.start(2, "--job-seconds=0.3")
    fleet.wait_mid_run()
    victim = fleet.executing()
    killed_at = time.time()
    victim.kill()
    # Running at the kill: started there, outcome not delivered (not COMPLETED yet).
    jobs = fleet.server.app.services[fleet.service_id].jobs
    done = under_lock(fleet.server, lambda: {j.id for j in jobs if j.status == "COMPLETED"})
    unfinished = {r.job_id for r in fleet.runs() if r.pid == victim.pid} - done
    statuses = fleet.settle(timeout=40)

    runs = fleet.runs()
    twice = run_twice(runs)
    assert set() == set(twice) - unfinished, describe(twice)
    assert all(n == 2 for n in twice.values()), twice
    assert {victim.pid} == {r.pid for r in runs if r.start < killed_at}, "both executed"
    takeover = first_start_after(runs, victim.pid, killed_at)
    assert takeover is not None, "the other process never started a job"
    assert takeover <= 3 + 10
    assert {"COMPLETED": 40} == statuses
    survivor = next(worker for worker in fleet.workers if worker is not victim)
    assert 0 == survivor.stop()


def test_a_stopped_worker_is_taken_over_within_5_s(fleet: Fleet) -> None:
    """SIGTERM to the process executing jobs: it finishes its running jobs and puts
    back the others, and the other process starts executing within 5 s; every job
    ends COMPLETED, none twice.  The service keeps the default 30 s timeout, so a
    takeover this fast comes from the stopped worker releasing the service, not
    from its check-ins running out."""
    fleet.service(jobs=40)
    fleet.start(2, "--job-seconds=0.3")
    fleet.wait_mid_run()
    victim = fleet.executing()
    stopped_at = time.time()
    victim.signal(signal.SIGTERM)
    statuses = fleet.settle(timeout=40)
    code = victim.finish()

    runs = fleet.runs()
    twice = run_twice(runs)
    assert {} == twice, describe(twice)
    assert {victim.pid} == {r.pid for r in runs if r.start < stopped_at}, "both executed"
    takeover = first_start_after(runs, victim.pid, stopped_at)
    assert takeover is not None, "the other process never started a job"
    assert takeover <= 5
    assert {"COMPLETED": 40} == statuses
    assert 0 == code
