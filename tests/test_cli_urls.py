"""Where the commands get the server's URL, and what a bad one does.

One rule everywhere: a URL in the worker's code wins, then --url, then $TOPCHEF_URL
(the admin commands have no code, so --url then $TOPCHEF_URL).  A malformed URL, or
one naming an endpoint, is a one-line configuration error with exit code 2 from
every command.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from test_cli import WAIT, Process, cli, completed, error_line, free_port
from topchef_worker import JobStatus, Service, TopChefClient
from topchef_worker.testing import TopChefServer

APP = """
import os
from topchef_worker import Worker

worker = Worker(url=os.environ.get("APP_CODE_URL") or None, poll_interval=0.05,
                heartbeat_interval=0.1, lease_settle=0.05)

@worker.handler(os.environ["APP_SERVICE_ID"])
def handle(parameters):
    return {"sum": parameters["a"] + parameters["b"]}
"""

JOB = "00000000-0000-4000-8000-000000000000"
BAD_URLS = [
    ("http://[::1", "the TopChef URL 'http://[::1' is malformed"),
    (
        "http://127.0.0.1:5000/services",
        (
            "the TopChef URL 'http://127.0.0.1:5000/services' names the /services endpoint, "
            "not the server's root: use 'http://127.0.0.1:5000'"
        ),
    ),
]


@pytest.fixture
def app(tmp_path: Path) -> Path:
    path = tmp_path / "urlapp.py"
    path.write_text(APP)
    return path


def dead_url() -> str:
    """A URL where nothing listens: a worker that used it would never finish a job."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.mark.parametrize(
    ("code", "option", "environment"),
    [
        pytest.param("live", "live/", "dead", id="code-wins-and-the-same-url-option-is-fine"),
        pytest.param(None, "live", "dead", id="url-option-wins-over-the-environment"),
        pytest.param(None, None, "live", id="the-environment-when-nothing-else"),
    ],
)
def test_run_uses_the_url_by_precedence(
    code: str | None,
    option: str | None,
    environment: str,
    app: Path,
    server: TopChefServer,
    client: TopChefClient,
    adder: Service,
    processes: list[Process],
) -> None:
    """The worker processes a job only if it picked the live server's URL."""
    urls = {"live": server.url, "live/": server.url + "/", "dead": dead_url(), None: ""}
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    args = ["run", f"{app}:worker", *(["--url", urls[option]] if option else [])]
    env = {
        "APP_SERVICE_ID": adder.id,
        "APP_CODE_URL": urls[code],
        "TOPCHEF_URL": urls[environment],
    }
    process = Process(*args, env=env)
    processes.append(process)
    server.wait_for_requests(lambda log: completed(log) == 1, WAIT)
    process.signal(signal.SIGTERM)
    assert 0 == process.finish()
    assert JobStatus.COMPLETED == client.job(job.id).status


def test_run_refuses_a_url_option_that_contradicts_the_code(
    app: Path, server: TopChefServer, adder: Service
) -> None:
    """--url naming another server than Worker(url=...) is an error naming both, and
    the worker does not start."""
    before = len(server.requests)
    other = dead_url()
    result = cli(
        "run",
        f"{app}:worker",
        "--url",
        other,
        env={"APP_SERVICE_ID": adder.id, "APP_CODE_URL": server.url},
    )
    assert 2 == result.returncode
    line = error_line(result.stderr)
    assert f"the worker's code sets url='{server.url}' and --url gives '{other}'" in line
    assert "the code's URL wins: remove one of them" in line
    assert before == len(server.requests)


@pytest.mark.parametrize(("url", "message"), BAD_URLS)
@pytest.mark.parametrize(
    "command",
    [
        ["services"],
        ["jobs", "Adder"],
        ["job", JOB],
        ["submit", "Adder", "{}"],
        ["requeue", "Adder", "--all-working", "--yes"],
        ["run", "{app}:worker"],
    ],
    ids=lambda command: command[0],
)
def test_a_bad_url_option_is_a_configuration_error(
    command: list[str], url: str, message: str, app: Path, adder: Service
) -> None:
    args = [arg.replace("{app}", str(app)) for arg in command]
    result = cli(*args, "--url", url, env={"APP_SERVICE_ID": adder.id})
    assert (2, "") == (result.returncode, result.stdout)
    assert message in error_line(result.stderr)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("url", "message"), BAD_URLS)
@pytest.mark.parametrize(
    "command", [["services"], ["run", "{app}:worker"]], ids=lambda command: command[0]
)
def test_a_bad_topchef_url_is_a_configuration_error(
    command: list[str], url: str, message: str, app: Path, adder: Service
) -> None:
    """The same from $TOPCHEF_URL, which `run` leaves to the worker to read."""
    args = [arg.replace("{app}", str(app)) for arg in command]
    result = cli(*args, url=url, env={"APP_SERVICE_ID": adder.id})
    assert (2, "") == (result.returncode, result.stdout)
    assert message in error_line(result.stderr)
