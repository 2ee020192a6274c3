"""`requeue`, run as the real console script: only WORKING jobs of the service named
go back to the queue, unless --force says a finished one may; everything left alone
gets a line saying why."""

from __future__ import annotations

import os
import pty
import subprocess
from collections.abc import Iterator

import pytest

from test_cli import COMMAND, WAIT, cli, error_line
from topchef_worker import Job, JobStatus, Service, TopChefClient
from topchef_worker.testing import TopChefServer

MISSING_JOB = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def other(client: TopChefClient) -> Service:
    return client.create_service(
        name="Other", description="another", job_registration_schema={}, job_result_schema={}
    )


def job_in(client: TopChefClient, service: Service, status: str, **results: int) -> Job:
    job = client.submit_job(service.id, {"a": 1, "b": 2})
    if status != "REGISTERED":
        client.update_job(job.id, status=status, results=results or None)
    return job


def requeue(server: TopChefServer, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("requeue", *args, "--yes", url=server.url)


def test_a_working_job_goes_back_to_the_queue(
    server: TopChefServer, client: TopChefClient, adder: Service
) -> None:
    job = job_in(client, adder, "WORKING")
    result = requeue(server, adder.id, "--job", job.id)
    assert (0, "") == (result.returncode, result.stderr)
    assert [
        f"{job.id}  REGISTERED",
        f"requeued 1 of 1 job of Adder ({adder.id}); 0 skipped",
    ] == result.stdout.splitlines()
    assert JobStatus.REGISTERED == client.job(job.id).status


@pytest.mark.parametrize("status", ["COMPLETED", "ERROR"])
def test_a_finished_job_needs_force_and_keeps_its_results(
    status: str, server: TopChefServer, client: TopChefClient, adder: Service
) -> None:
    """Without --force a finished job is left alone (exit code 1); with it, the job
    is queued again and the output says its old results stay on the server."""
    job = job_in(client, adder, status, sum=3)
    refused = requeue(server, "Adder", "--job", job.id)
    assert 1 == refused.returncode
    assert f"{job.id}  skipped: {status}; add --force to run a finished job again" in (
        refused.stdout.splitlines()
    )
    assert status == client.job(job.id).status
    forced = requeue(server, "Adder", "--job", job.id, "--force")
    assert 0 == forced.returncode
    assert (
        f"{job.id}  REGISTERED  (was {status}; its old results stay on the server until "
        "it runs again)"
    ) in forced.stdout.splitlines()
    after = client.job(job.id)
    assert (JobStatus.REGISTERED, {"sum": 3}) == (after.status, after.results)


def test_jobs_not_working_elsewhere_or_missing_are_reported_and_left_alone(
    server: TopChefServer, client: TopChefClient, adder: Service, other: Service
) -> None:
    """A queued job, a job of another service (even with --force) and an unknown id
    each get a line; the WORKING one is still requeued, and the exit code is 1."""
    working = job_in(client, adder, "WORKING")
    queued = job_in(client, adder, "REGISTERED")
    foreign = job_in(client, other, "WORKING")
    args = ["--job", working.id, queued.id, "--job", foreign.id, MISSING_JOB, "--force"]
    result = requeue(server, adder.id, *args)
    assert (1, "") == (result.returncode, result.stderr)
    assert [
        f"{queued.id}  skipped: already queued",
        f"{foreign.id}  skipped: not a job of Adder ({adder.id})",
        f"{MISSING_JOB}  skipped: no such job",
        f"{working.id}  REGISTERED",
        f"requeued 1 of 4 jobs of Adder ({adder.id}); 3 skipped",
    ] == result.stdout.splitlines()
    assert JobStatus.REGISTERED == client.job(working.id).status
    assert JobStatus.WORKING == client.job(foreign.id).status


def test_all_working_requeues_only_this_services_working_jobs(
    server: TopChefServer, client: TopChefClient, adder: Service, other: Service
) -> None:
    stuck = [job_in(client, adder, "WORKING") for _ in range(2)]
    done = job_in(client, adder, "COMPLETED", sum=3)
    foreign = job_in(client, other, "WORKING")
    result = requeue(server, "Adder", "--all-working")
    assert 0 == result.returncode
    assert [
        *(f"{job.id}  REGISTERED" for job in stuck),
        f"requeued 2 of 2 jobs of Adder ({adder.id}); 0 skipped",
    ] == result.stdout.splitlines()
    assert [JobStatus.REGISTERED] * 2 == [client.job(job.id).status for job in stuck]
    assert JobStatus.COMPLETED == client.job(done.id).status
    assert JobStatus.WORKING == client.job(foreign.id).status
    again = requeue(server, "Adder", "--all-working")
    assert (0, f"no WORKING jobs of Adder ({adder.id}) to requeue\n") == (
        again.returncode,
        again.stdout,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--all-working", "--force"], "--force goes with --job"),
        (["--job", "job-1"], "'job-1' is not a job id"),
        (["--job", MISSING_JOB, "--all-working"], "not allowed with argument"),
    ],
)
def test_usage_errors(
    args: list[str], message: str, server: TopChefServer, client: TopChefClient, adder: Service
) -> None:
    job = job_in(client, adder, "WORKING")
    result = requeue(server, adder.id, *args)
    assert (2, "") == (result.returncode, result.stdout)
    assert message in error_line(result.stderr)
    assert JobStatus.WORKING == client.job(job.id).status


def test_without_a_terminal_it_needs_yes(
    server: TopChefServer, client: TopChefClient, adder: Service
) -> None:
    job = job_in(client, adder, "WORKING")
    result = cli("requeue", "Adder", "--all-working", url=server.url)
    assert 2 == result.returncode
    assert "add --yes" in error_line(result.stderr)
    assert JobStatus.WORKING == client.job(job.id).status


@pytest.fixture
def terminal() -> Iterator[tuple[int, int]]:
    """A pseudo-terminal: the command reads its answer from the second end, the test
    types into the first."""
    typist, reader = pty.openpty()
    yield typist, reader
    os.close(typist)
    os.close(reader)


def start_at_terminal(server: TopChefServer, reader: int, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*COMMAND, "requeue", *args, "--url", server.url],
        stdin=reader,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def listed_jobs(server: TopChefServer, service: Service) -> None:
    """Wait until the command has read the service's jobs, i.e. judged them."""
    path = f"/services/{service.id}/jobs"
    server.wait_for_requests(
        lambda log: any(r.method == "GET" and r.path == path for r in log), WAIT
    )


def test_a_job_finished_while_the_prompt_waits_is_left_alone(
    server: TopChefServer, client: TopChefClient, adder: Service, terminal: tuple[int, int]
) -> None:
    """Each job is read again after the operator answers: one a worker finished in
    the meantime is not put back."""
    typist, reader = terminal
    finished, stuck = job_in(client, adder, "WORKING"), job_in(client, adder, "WORKING")
    process = start_at_terminal(server, reader, "Adder", "--all-working")
    listed_jobs(server, adder)
    client.update_job(finished.id, status="COMPLETED", results={"sum": 3})
    os.write(typist, b"y\n")
    out, err = process.communicate(timeout=WAIT)
    assert (0, "") == (process.returncode, err)
    assert f"Put 2 job(s) of Adder ({adder.id}) back to REGISTERED? [y/N] " in out
    assert f"{finished.id}  skipped: was WORKING, now COMPLETED" in out
    assert f"{stuck.id}  REGISTERED" in out
    assert f"requeued 1 of 2 jobs of Adder ({adder.id}); 1 skipped" in out
    assert JobStatus.COMPLETED == client.job(finished.id).status
    assert JobStatus.REGISTERED == client.job(stuck.id).status


def test_answering_no_changes_nothing(
    server: TopChefServer, client: TopChefClient, adder: Service, terminal: tuple[int, int]
) -> None:
    typist, reader = terminal
    job = job_in(client, adder, "WORKING")
    process = start_at_terminal(server, reader, adder.id, "--job", job.id)
    os.write(typist, b"n\n")
    out, _ = process.communicate(timeout=WAIT)
    assert 0 == process.returncode
    assert out.endswith("nothing changed\n")
    assert JobStatus.WORKING == client.job(job.id).status
