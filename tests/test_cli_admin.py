"""The server-admin commands (services, jobs, job, submit) and --version, run as the
real console script against a real TopChefServer."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
from datetime import datetime

import pytest

from test_cli import Process, cli, error_line
from topchef_worker import JobStatus, Service, TopChefClient
from topchef_worker.testing import TopChefServer

MISSING_JOB = "00000000-0000-4000-8000-000000000000"


def make_service(client: TopChefClient, name: str, description: str = "") -> Service:
    return client.create_service(
        name=name,
        description=description or f"the {name} service",
        job_registration_schema={},
        job_result_schema={},
    )


def outcome(result: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    return result.returncode, result.stdout, result.stderr


def test_version_comes_from_the_installed_distribution() -> None:
    """--version prints the name and the version pip installed."""
    expected = f"topchef-worker {importlib.metadata.version('topchef-worker')}\n"
    assert (0, expected, "") == outcome(cli("--version"))


def test_services_as_text_and_json(server: TopChefServer, client: TopChefClient) -> None:
    """`services` prints one line a service; --json an array of objects."""
    adder = make_service(client, "Adder", "adds a and b")
    mul = make_service(client, "Mul", "multiplies")
    text = f"{adder.id}  Adder  adds a and b\n{mul.id}  Mul  multiplies\n"
    assert (0, text, "") == outcome(cli("services", url=server.url))
    as_json = cli("services", "--json", "--url", server.url)
    assert 0 == as_json.returncode
    assert [
        {"id": adder.id, "name": "Adder", "description": "adds a and b"},
        {"id": mul.id, "name": "Mul", "description": "multiplies"},
    ] == json.loads(as_json.stdout)


def test_no_services_is_said_on_stderr_and_json_prints_an_empty_array(
    server: TopChefServer,
) -> None:
    """With nothing to list, stdout stays empty and stderr says so; --json prints
    `[]` and nothing else."""
    url = server.url
    assert (0, "", f"no services on {url}\n") == outcome(cli("services", url=url))
    assert (0, "[]\n", "") == outcome(cli("services", "--json", url=url))


def test_no_jobs_is_said_on_stderr_naming_the_status_filter(
    server: TopChefServer, client: TopChefClient
) -> None:
    url = server.url
    adder = make_service(client, "Adder")
    empty = f"no jobs of Adder ({adder.id}) on {url}\n"
    assert (0, "", empty) == outcome(cli("jobs", "Adder", url=url))
    client.submit_job(adder.id, {})
    filtered = f"no WORKING jobs of Adder ({adder.id}) on {url} (--status WORKING)\n"
    assert (0, "", filtered) == outcome(cli("jobs", "Adder", "--status", "working", url=url))
    assert (0, "[]\n", "") == outcome(cli("jobs", adder.id, "--status", "ERROR", "--json", url=url))


def test_jobs_as_text_and_json(server: TopChefServer, client: TopChefClient) -> None:
    """`jobs` lists id, status and date; --json gives every field, the status as its
    value and the date as an ISO string; --status filters both."""
    adder = make_service(client, "Adder")
    first = client.submit_job(adder.id, {"a": 1})
    second = client.submit_job(adder.id, {"a": 2})
    client.update_job(second.id, status="COMPLETED", results={"sum": 2})
    text = cli("jobs", adder.id, url=server.url)
    assert 0 == text.returncode
    assert [
        f"{first.id}  REGISTERED  {first.date_submitted.isoformat()}",
        f"{second.id}  COMPLETED   {second.date_submitted.isoformat()}",
    ] == text.stdout.splitlines()
    as_json = cli("jobs", "Adder", "--status", "completed", "--json", url=server.url)
    assert 0 == as_json.returncode
    (record,) = json.loads(as_json.stdout)
    assert second.date_submitted == datetime.fromisoformat(record.pop("date_submitted"))
    assert {
        "id": second.id,
        "service_id": adder.id,
        "status": "COMPLETED",
        "parameters": {"a": 2},
        "results": {"sum": 2},
    } == record


def test_job_shows_status_service_parameters_and_results(
    server: TopChefServer, client: TopChefClient
) -> None:
    """`job` finds the job's service (TopChef's job view does not name it) and shows
    parameters and results as JSON; --json prints one object."""
    make_service(client, "Other")
    adder = make_service(client, "Adder")
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    client.update_job(job.id, status="COMPLETED", results={"sum": 3})
    text = cli("job", job.id, url=server.url)
    assert (0, "") == (text.returncode, text.stderr)
    assert [
        f"id:          {job.id}",
        "status:      COMPLETED",
        f"service:     Adder ({adder.id})",
        f"submitted:   {job.date_submitted.isoformat()}",
        "parameters:",
        "  {",
        '    "a": 1,',
        '    "b": 2',
        "  }",
        "results:",
        "  {",
        '    "sum": 3',
        "  }",
    ] == text.stdout.splitlines()
    as_json = json.loads(cli("job", job.id.upper(), "--json", url=server.url).stdout)
    assert {
        "id": job.id,
        "service_id": adder.id,
        "status": "COMPLETED",
        "date_submitted": job.date_submitted.isoformat(),
        "parameters": {"a": 1, "b": 2},
        "results": {"sum": 3},
    } == as_json


def test_a_job_without_results_says_none(server: TopChefServer, client: TopChefClient) -> None:
    adder = make_service(client, "Adder")
    job = client.submit_job(adder.id, {})
    lines = cli("job", job.id, url=server.url).stdout.splitlines()
    assert ["parameters:", "  {}", "results:     none"] == lines[-3:]


def test_a_missing_job_fails_and_a_malformed_id_is_a_usage_error(server: TopChefServer) -> None:
    missing = cli("job", MISSING_JOB, url=server.url)
    assert (1, "") == (missing.returncode, missing.stdout)
    assert f"job {MISSING_JOB} not found" in error_line(missing.stderr)
    malformed = cli("job", "job-1", url=server.url)
    assert 2 == malformed.returncode
    assert "'job-1' is not a job id" in error_line(malformed.stderr)


def test_a_service_is_named_by_id_or_by_name(server: TopChefServer, client: TopChefClient) -> None:
    """SERVICE may be a name; a name two services share is a usage error listing their
    ids, and a name nobody has fails at run time."""
    adder = make_service(client, "Adder")
    submitted = cli("submit", "Adder", '{"a": 1}', url=server.url)
    assert 0 == submitted.returncode
    assert [submitted.stdout.strip()] == [job.id for job in client.jobs(adder.id)]
    by_id = cli("jobs", adder.id.replace("-", "").upper(), url=server.url)
    assert submitted.stdout.strip() in by_id.stdout
    twin = make_service(client, "Adder")
    for command in (["jobs", "Adder"], ["submit", "Adder", "{}"]):
        ambiguous = cli(*command, url=server.url)
        assert (2, "") == (ambiguous.returncode, ambiguous.stdout)
        line = error_line(ambiguous.stderr)
        assert f"2 services are named 'Adder': {adder.id}, {twin.id}" in line
    assert 1 == len(client.jobs(adder.id))
    assert [] == client.jobs(twin.id)
    nobody = cli("jobs", "Nobody", url=server.url)
    assert 1 == nobody.returncode
    assert f"no service with id or name 'Nobody' on {server.url}" in error_line(nobody.stderr)


def test_submit_wait_prints_the_results_of_a_completed_job(
    server: TopChefServer, client: TopChefClient, processes: list[Process]
) -> None:
    """`submit --wait` polls until the job is COMPLETED and prints its results."""
    adder = make_service(client, "Adder")
    process = Process(
        "submit", "Adder", '{"a": 1, "b": 2}', "--wait", env={"TOPCHEF_URL": server.url}
    )
    processes.append(process)
    job_id = submitted_id(process)
    assert JobStatus.REGISTERED == client.job(job_id).status
    client.update_job(job_id, status="COMPLETED", results={"sum": 3})
    assert 0 == process.finish()
    assert {"sum": 3} == json.loads("".join(process.stdout))
    assert [job_id] == [job.id for job in client.jobs(adder.id)]


@pytest.mark.parametrize(
    ("results", "printed", "says"),
    [
        ({"reason": "b is 0"}, '{\n  "reason": "b is 0"\n}\n', "its results are above"),
        (None, "null\n", "no results"),
    ],
)
def test_submit_wait_fails_on_a_job_ended_in_error(
    results: dict[str, str] | None,
    printed: str,
    says: str,
    server: TopChefServer,
    client: TopChefClient,
    processes: list[Process],
) -> None:
    """A job that ends in ERROR: exit code 1, its results (or null) on stdout, and
    one error line saying so."""
    make_service(client, "Adder")
    process = Process(
        "submit", "Adder", "{}", "--wait", "--timeout", "60", env={"TOPCHEF_URL": server.url}
    )
    processes.append(process)
    job_id = submitted_id(process)
    client.update_job(job_id, status="ERROR", results=results)
    assert 1 == process.finish()
    assert printed == "".join(process.stdout)
    assert f"job {job_id} ended in ERROR ({says})" in error_line("".join(process.stderr))


def test_submit_wait_times_out_leaving_the_job_queued(
    server: TopChefServer, client: TopChefClient
) -> None:
    """With no worker, --timeout ends the wait with exit code 1 and a message naming
    the job, which stays queued on the server."""
    adder = make_service(client, "Adder")
    result = cli("submit", "Adder", "{}", "--wait", "--timeout", "0.3", url=server.url)
    (job,) = client.jobs(adder.id)
    assert (1, "") == (result.returncode, result.stdout)
    line = error_line(result.stderr)
    assert f"job {job.id} is still queued (REGISTERED) after 0.3 s" in line
    assert JobStatus.REGISTERED == job.status


def test_submit_timeout_needs_wait(server: TopChefServer, client: TopChefClient) -> None:
    adder = make_service(client, "Adder")
    result = cli("submit", "Adder", "{}", "--timeout", "5", url=server.url)
    assert 2 == result.returncode
    assert "--timeout needs --wait" in error_line(result.stderr)
    assert [] == client.jobs(adder.id)


def submitted_id(process: Process) -> str:
    """The id `submit --wait` announces on stderr before it starts waiting."""
    process.wait_for_line(process.stderr, "submitted job ")
    (line,) = [line for line in process.stderr if "submitted job " in line]
    return line.split("submitted job ", 1)[1].split()[0]
