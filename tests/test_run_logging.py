"""What ``worker.run()`` shows when it is a program's main loop, in a real process.

With logging not configured, the worker's INFO records go to stderr while ``run()``
runs (a start line naming the services and pools, each job's outcome); a program
that configured logging, or runs the worker off the main thread, gets only what it
asked for.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

PROGRAM = """
import logging, sys, threading
from topchef_worker import TopChefClient, Worker
from topchef_worker.testing import TopChefServer

MODE = sys.argv[1]
if MODE == "configured":
    logging.basicConfig(level=logging.WARNING, format="app: %(levelname)s %(message)s")

with TopChefServer() as server:
    worker = Worker(server.url, poll_interval=0.05, lease_settle=0.05)

    @worker.handler(name="adder", description="adds", job_registration_schema={},
                    job_result_schema={})
    def add(parameters):
        if MODE == "late":  # the application sets up its logging once under way
            logging.basicConfig(level=logging.WARNING, format="app: %(levelname)s %(message)s")
        if parameters["b"] == 0:
            raise ValueError("b must not be 0")
        return {"sum": parameters["a"] + parameters["b"]}

    with TopChefClient(server.url) as client:
        service = client.create_service(name="adder", description="adds",
                                        job_registration_schema={}, job_result_schema={})
        client.submit_job(service.id, {"a": 1, "b": 2})
        client.submit_job(service.id, {"a": 1, "b": 0})
    if MODE == "thread":
        thread = threading.Thread(target=lambda: worker.run(until_idle=True))
        thread.start()
        thread.join(30)
    else:
        worker.run(until_idle=True)
    print("completed", worker.stats().completed, "failed", worker.stats().failed)
    # After run(): the handler it added is gone again.
    logging.getLogger("topchef_worker").info("after run")
"""


def run(tmp_path: Path, mode: str) -> tuple[str, str]:
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    done = subprocess.run(
        [sys.executable, str(script), mode],
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    return done.stdout, done.stderr


def test_unconfigured_logging_shows_what_the_worker_does(tmp_path: Path) -> None:
    stdout, stderr = run(tmp_path, "unconfigured")
    assert "completed 1 failed 1" in stdout
    lines = stderr.splitlines()
    started = [line for line in lines if "worker started on http://127.0.0.1:" in line]
    assert len(started) == 1, stderr
    assert "1 service(s) ('adder' " in started[0]
    assert "pools: default (ThreadPoolExecutor)" in started[0]
    assert any(" INFO " in line and ": COMPLETED in " in line for line in lines), stderr
    assert any(
        " ERROR " in line and "failed: ValueError: b must not be 0" in line for line in lines
    ), stderr
    assert any("worker stopped: 1 completed, 1 failed" in line for line in lines), stderr
    assert not any("after run" in line for line in lines)


def test_configured_logging_is_left_alone(tmp_path: Path) -> None:
    """The application's WARNING level and format hold: no INFO lines, its format."""
    _, stderr = run(tmp_path, "configured")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert not any("worker started" in line or "COMPLETED" in line for line in lines), stderr
    assert any(line.startswith("app: ERROR job ") for line in lines), stderr


def test_run_off_the_main_thread_is_not_a_main_loop(tmp_path: Path) -> None:
    """An application that runs the worker in a thread owns the program's output."""
    stdout, stderr = run(tmp_path, "thread")
    assert "completed 1 failed 1" in stdout
    assert "worker started" not in stderr


def test_logging_configured_while_run_runs_takes_over_at_once(tmp_path: Path) -> None:
    """An application that configures logging while run() runs gets each record once,
    in its own format, at its own level: run()'s handler steps aside."""
    _, stderr = run(tmp_path, "late")
    lines = stderr.splitlines()
    failed = [line for line in lines if "failed: ValueError: b must not be 0" in line]
    assert 1 == len(failed), stderr
    assert failed[0].startswith("app: ERROR job "), stderr
    assert [] == [line for line in lines if line.startswith("app: INFO")], stderr
