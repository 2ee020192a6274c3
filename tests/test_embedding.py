"""The embedding guide's examples (docs/embedding.md), run for real: Flask's and
uvicorn's servers and the plain script, each in a process of its own, against a
TopChefServer in this process.

Nothing here sleeps to synchronise: it reads the processes' output with a deadline,
or polls the server (and the apps' /health) with one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from topchef_worker import JobStatus, TopChefClient, Worker
from topchef_worker.testing import TopChefServer

pytest.importorskip("flask")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"
#: The longest any one step may take (a process starting, a job completing).
WAIT = 20.0
#: The examples' stop timeout in these tests (STOP_TIMEOUT, or --stop-timeout).
STOP_TIMEOUT = 1.0
#: What a process may take past its stop timeout: the worker's own margin, and the
#: interpreter's exit.
EXIT_MARGIN = Worker.STOP_MARGIN + 3.0
#: The marker a worker writes at the end of the description of a service it serves.
MARKER = re.compile(
    r"\[topchef-worker (?P<id>\S+) on (?P<host>.+), pid (?P<pid>\d+): (?P<state>\w+)\]"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def eventually(check: Callable[[], Any], timeout: float = WAIT, what: str = "") -> Any:
    """Check again every 50 ms until *check* returns something true, and return it."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"not within {timeout} s: {what or check}"
        pause.wait(0.05)


class App:
    """A process under test; its output (stdout and stderr) is collected by a thread."""

    def __init__(self, command: list[str], env: dict[str, str], *, group: bool = False) -> None:
        self.group = group
        self.popen = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            cwd=EXAMPLES,
            start_new_session=group,  # its own process group, as in a terminal
        )
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        with self.popen.stdout:
            for line in self.popen.stdout:
                with self.changed:
                    self.lines.append(line)
                    self.changed.notify_all()

    @property
    def output(self) -> str:
        with self.changed:
            return "".join(self.lines)

    def wait_for_line(self, pattern: str, count: int = 1) -> list[re.Match[str]]:
        """The first *count* matches of *pattern* in the output, once there are as many."""

        def found() -> list[re.Match[str]]:
            return [m for line in self.lines if (m := re.search(pattern, line))]

        with self.changed:
            assert self.changed.wait_for(lambda: len(found()) >= count, WAIT), (
                f"never printed {pattern!r} {count} time(s):\n{''.join(self.lines)}"
            )
            return found()[:count]

    def signal(self, signum: int) -> None:
        if self.group:
            os.killpg(self.popen.pid, signum)  # like Ctrl-C in a terminal: every process
        else:
            self.popen.send_signal(signum)

    def finish(self, timeout: float) -> int:
        """Wait for the exit, at most *timeout* seconds; the exit code."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {timeout} s later:\n{self.output}")
        self.reader.join(WAIT)
        return code

    def kill(self) -> None:
        if self.group:
            with contextlib.suppress(ProcessLookupError):  # the whole group is gone
                os.killpg(self.popen.pid, signal.SIGKILL)
        elif self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(WAIT)
        self.reader.join(WAIT)


@pytest.fixture
def topchef() -> Iterator[TopChefServer]:
    """A TopChef server on the real clock (the lease's timeouts need one)."""
    with TopChefServer() as running:
        yield running


@pytest.fixture
def client(topchef: TopChefServer) -> Iterator[TopChefClient]:
    with TopChefClient(topchef.url, timeout=5.0) as running:
        yield running


@pytest.fixture
def apps() -> Iterator[list[App]]:
    started: list[App] = []
    yield started
    for app in started:
        app.kill()


def service_id(client: TopChefClient, name: str) -> str:
    """The id of the service the app found or created, once it has."""
    return str(
        eventually(
            lambda: next((s.id for s in client.services() if s.name == name), None),
            what=f"service {name!r} on the server",
        )
    )


def marker(client: TopChefClient, sid: str) -> re.Match[str] | None:
    return MARKER.search(client.service(sid).description)


def statuses(client: TopChefClient, sid: str) -> list[JobStatus]:
    return [job.status for job in client.jobs(sid)]


def get_json(url: str) -> tuple[int, Any]:
    """GET *url*: the status and the JSON body (of an error status too)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def ready(base: str) -> bool:
    """Whether the app answers /health with 200 and ``ready``."""
    try:
        status, body = get_json(f"{base}/health")
    except (urllib.error.URLError, ConnectionError):
        return False  # not listening yet
    return status == 200 and body["ready"] is True


# -- how each example is started ------------------------------------------------------


def flask_app(
    url: str, service: str, port: int, *, debug: bool = False, path: Path | None = None
) -> App:
    command = [sys.executable, "-m", "flask", "--app", str(path or EXAMPLES / "embed_flask.py")]
    command += ["--debug"] if debug else []
    command += ["run", "--port", str(port)]
    env = {"TOPCHEF_URL": url, "THERMOMETER_SERVICE": service, "STOP_TIMEOUT": str(STOP_TIMEOUT)}
    return App(command, env, group=debug)


def fastapi_app(url: str, service: str, port: int, *, processes: int = 1) -> App:
    command = [sys.executable, "-m", "uvicorn", "embed_fastapi:app", "--port", str(port)]
    command += ["--workers", str(processes)] if processes > 1 else []
    env = {"TOPCHEF_URL": url, "THERMOMETER_SERVICE": service, "STOP_TIMEOUT": str(STOP_TIMEOUT)}
    return App(command, env, group=processes > 1)


def script(url: str, service: str, *options: str) -> App:
    command = [sys.executable, "embed_script.py", "--service", service]
    command += ["--stop-timeout", str(STOP_TIMEOUT), *options]
    return App(command, {"TOPCHEF_URL": url})


WEB_APPS: dict[str, Callable[[str, str, int], App]] = {"flask": flask_app, "fastapi": fastapi_app}
#: The signal each server stops on, and the exit status of a clean stop.  `flask
#: run`'s development server stops on Ctrl-C and exits 0 (SIGTERM kills it outright,
#: atexit hooks and all).  uvicorn shuts down on SIGTERM (the lifespan's end runs),
#: then raises the signal again (uvicorn 0.29 and later): the process ends
#: "terminated by SIGTERM", which systemd counts as a clean stop.
STOP = {"flask": (signal.SIGINT, 0), "fastapi": (signal.SIGTERM, -signal.SIGTERM)}


# -- the tests ------------------------------------------------------------------------


@pytest.mark.parametrize("framework", WEB_APPS)
def test_web_app_runs_jobs_and_answers_health_and_stats(
    framework: str, topchef: TopChefServer, client: TopChefClient, apps: list[App]
) -> None:
    """The app's worker runs the jobs submitted to its service; /health answers JSON
    with ``ready`` true, /stats counts the jobs; the stop signal ends it cleanly."""
    port = free_port()
    app = WEB_APPS[framework](topchef.url, f"{framework}-thermometer", port)
    apps.append(app)
    base = f"http://127.0.0.1:{port}"
    eventually(lambda: ready(base), what=f"{base}/health ready:\n{app.output}")
    sid = service_id(client, f"{framework}-thermometer")

    jobs = [client.submit_job(sid, {"seconds": 0.01}) for _ in range(3)]

    eventually(lambda: statuses(client, sid) == [JobStatus.COMPLETED] * 3, what="3 jobs done")
    assert all(21 < (client.job(job.id).results or {})["celsius"] < 22 for job in jobs)
    status, health = get_json(f"{base}/health")
    assert (200, True, True) == (status, health["alive"], health["ready"])
    assert [sid] == [service["service_id"] for service in health["services"]]
    assert "active" == health["services"][0]["role"]
    _, stats = eventually(
        lambda: (reply := get_json(f"{base}/stats"))[1]["completed"] == 3 and reply,
        what="/stats counting 3 completed jobs",
    )
    assert {sid: "active"} == stats["roles"]

    signum, clean = STOP[framework]
    app.signal(signum)
    assert clean == app.finish(STOP_TIMEOUT + EXIT_MARGIN), app.output
    assert "worker stopped: 3 completed, 0 failed, 0 requeued" in app.output


def test_script_runs_its_jobs_and_exits(
    topchef: TopChefServer, client: TopChefClient, apps: list[App]
) -> None:
    """``--jobs 2``: the script measures twice, then stops by itself and prints its
    counters as JSON."""
    app = script(topchef.url, "script-thermometer", "--jobs", "2")
    apps.append(app)
    sid = service_id(client, "script-thermometer")

    for _ in range(2):
        client.submit_job(sid, {"seconds": 0.01})

    assert 0 == app.finish(WAIT)
    assert [JobStatus.COMPLETED] * 2 == statuses(client, sid)
    summary = json.loads(app.lines[-1])
    assert (2, 0, "STOPPED") == (summary["completed"], summary["failed"], summary["state"])


STOPPING = [
    pytest.param("flask", *STOP["flask"], id="flask-ctrl-c"),
    pytest.param("fastapi", *STOP["fastapi"], id="uvicorn-sigterm"),
    pytest.param("script", signal.SIGINT, 0, id="script-ctrl-c"),
    pytest.param("script", signal.SIGTERM, 0, id="script-sigterm"),
]


@pytest.mark.parametrize(("example", "signum", "clean"), STOPPING)
def test_stop_with_a_job_in_flight_puts_it_back(
    example: str,
    signum: int,
    clean: int,
    topchef: TopChefServer,
    client: TopChefClient,
    apps: list[App],
) -> None:
    """A measurement longer than the stop timeout is running when the stop signal
    comes: the process exits cleanly within the stop timeout plus the margin, having
    given the job the whole stop timeout, and the job is REGISTERED again."""
    name = f"{example}-thermometer"
    if example == "script":
        app = script(topchef.url, name)
    else:
        app = WEB_APPS[example](topchef.url, name, free_port())
    apps.append(app)
    sid = service_id(client, name)
    job = client.submit_job(sid, {"seconds": 60})
    eventually(lambda: client.job(job.id).status is JobStatus.WORKING, what="job claimed")

    app.signal(signum)
    signalled = time.monotonic()
    code = app.finish(STOP_TIMEOUT + EXIT_MARGIN)
    took = time.monotonic() - signalled

    assert clean == code, app.output
    assert took >= STOP_TIMEOUT, f"exited after {took:.2f} s: the job was not given its time"
    assert JobStatus.REGISTERED == client.job(job.id).status
    assert JobStatus.WORKING not in statuses(client, sid)
    assert "worker stopped: 0 completed, 0 failed, 1 requeued" in app.output


def test_flask_reloader_starts_one_worker_in_the_serving_process(
    topchef: TopChefServer, client: TopChefClient, apps: list[App]
) -> None:
    """``flask --debug run`` imports the app in the reloader's watcher and in the
    serving child: only the child starts a worker, and it is the one that serves."""
    port = free_port()
    app = flask_app(topchef.url, "debug-thermometer", port, debug=True)
    apps.append(app)
    base = f"http://127.0.0.1:{port}"
    eventually(lambda: ready(base), what=f"{base}/health ready:\n{app.output}")
    sid = service_id(client, "debug-thermometer")
    held = eventually(lambda: marker(client, sid), what="the service's marker")

    (watcher,) = app.wait_for_line(r" (\d+) INFO embed_flask: reloader watcher \(pid (\d+)\)")
    (started,) = app.wait_for_line(r" (\d+) INFO topchef_worker: worker started on ")
    assert int(watcher[1]) == int(watcher[2]) == app.popen.pid  # create_app() ran there ...
    child = int(started[1])
    assert child != app.popen.pid  # ... and the worker started in another process,
    assert ("active", child) == (held["state"], int(held["pid"]))  # which serves
    assert 1 == app.output.count("worker started on")  # and no other worker started
    assert 1 == len(MARKER.findall(client.service(sid).description))

    job = client.submit_job(sid, {"seconds": 0.01})
    eventually(lambda: client.job(job.id).status is JobStatus.COMPLETED, what="job done")

    app.signal(signal.SIGINT)  # Ctrl-C in the terminal: to the watcher and the child
    assert 0 == app.finish(STOP_TIMEOUT + EXIT_MARGIN)


def test_uvicorn_processes_start_one_active_worker_and_standbys(
    topchef: TopChefServer, client: TopChefClient, apps: list[App]
) -> None:
    """``uvicorn --workers 2`` runs the lifespan in each process: two workers start,
    one serves the service, the other stands by; jobs run once."""
    port = free_port()
    app = fastapi_app(topchef.url, "uvicorn-thermometer", port, processes=2)
    apps.append(app)
    started = app.wait_for_line(r" (\d+) INFO topchef_worker: worker started on ", count=2)
    (standby,) = app.wait_for_line(r" (\d+) INFO topchef_worker: worker STANDBY")
    sid = service_id(client, "uvicorn-thermometer")
    held = eventually(
        lambda: (m := marker(client, sid)) and m["state"] == "active" and m,
        what="an active worker's marker",
    )
    pids = {int(line[1]) for line in started}
    assert 2 == len(pids)
    assert {int(held["pid"]), int(standby[1])} == pids  # one serves, the other waits

    jobs = [client.submit_job(sid, {"seconds": 0.01}) for _ in range(3)]
    eventually(lambda: statuses(client, sid) == [JobStatus.COMPLETED] * 3, what="3 jobs done")
    claims = [r for r in topchef.requests if r.method == "PATCH" and b'"WORKING"' in r.body]
    assert sorted(f"/jobs/{job.id}" for job in jobs) == sorted(r.path for r in claims)

    app.signal(signal.SIGTERM)  # as systemd does: to every process of the unit
    assert 0 == app.finish(STOP_TIMEOUT + EXIT_MARGIN)  # the parent's status
    assert 2 == app.output.count("worker stopped: ")


def test_flask_reload_hands_the_service_to_the_new_child(
    topchef: TopChefServer, client: TopChefClient, apps: list[App], tmp_path: Path
) -> None:
    """A code change restarts the serving child; its atexit stop() releases the
    service, and the new child serves it within a few seconds."""
    shutil.copy(EXAMPLES / "embed_flask.py", tmp_path / "embed_flask.py")
    port = free_port()
    app = flask_app(
        topchef.url, "reloaded-thermometer", port, debug=True, path=tmp_path / "embed_flask.py"
    )
    apps.append(app)
    eventually(lambda: ready(f"http://127.0.0.1:{port}"), what=f"ready:\n{app.output}")
    sid = service_id(client, "reloaded-thermometer")
    (first,) = app.wait_for_line(r" (\d+) INFO topchef_worker: worker started on ")
    eventually(lambda: (m := marker(client, sid)) and m["state"] == "active", what="active")

    os.utime(tmp_path / "embed_flask.py")  # "edit" the code: the child restarts
    second = app.wait_for_line(r" (\d+) INFO topchef_worker: worker started on ", count=2)[1]
    assert first[1] != second[1]

    eventually(
        lambda: (m := marker(client, sid)) and (m["state"], m["pid"]) == ("active", second[1]),
        timeout=4.0,
        what=f"the new child serving:\n{app.output}",
    )


def test_a_url_in_code_wins_over_topchef_url(
    topchef: TopChefServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guide's URL rule for an embedded worker: ``Worker(url)`` first (the
    examples above, which give none, show ``$TOPCHEF_URL`` taking over)."""
    monkeypatch.setenv("TOPCHEF_URL", "http://127.0.0.1:9")  # nothing listens there
    worker = Worker(topchef.url, lease_settle=0.1)
    worker.handler(name="given", description="d", job_registration_schema={}, job_result_schema={})(
        lambda parameters: {}
    )

    with worker:
        assert worker.wait_ready(WAIT)
        assert topchef.url == worker.url
