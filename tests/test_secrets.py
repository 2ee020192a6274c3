"""What the worker, the client and the command line show must not give away secrets.

A password (or a token as user name) in the server's URL is replaced by ``***`` in
logs, ``repr``, exception messages and health output; parameter and result values
stay out of the log unless the ``topchef_worker.values`` logger is turned on; the
journal and outbox are private to their user.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from test_cli import COMMAND
from test_worker import WAIT, fast_worker
from topchef_worker import RetryPolicy, TopChefClient, Worker
from topchef_worker._arguments import redact
from topchef_worker.exceptions import ConfigurationError, TopChefError
from topchef_worker.testing import TopChefServer

pytestmark = pytest.mark.timeout(60)

SECRET = "s3cr3t-Pa55"


def with_password(url: str) -> str:
    return url.replace("http://", f"http://lab:{SECRET}@")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://lab:pw@host:5000", "http://***@host:5000"),
        ("https://TOKEN@host/topchef", "https://***@host/topchef"),
        ("http://host:5000/a@b", "http://host:5000/a@b"),  # an @ in the path is not userinfo
        ("http://u:p@[::1", "http://***@[::1"),  # too malformed to parse: still hidden
        ("http://host", "http://host"),
    ],
)
def test_redact(url: str, shown: str) -> None:
    assert shown == redact(url)


def test_a_password_in_the_url_is_never_shown(
    server: TopChefServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A whole run with a password in the URL, a failing request and the reports: the
    password appears in no log record, repr, error message or health report."""
    caplog.set_level(logging.DEBUG)
    url = with_password(server.url)
    worker = Worker(url, poll_interval=0.05, min_poll_interval=0.005, lease_settle=0.05)

    @worker.handler(
        name="adder", description="adds", job_registration_schema={}, job_result_schema={}
    )
    def add(parameters: dict[str, Any]) -> dict[str, Any]:
        return {"sum": parameters["a"] + parameters["b"]}

    shown: list[str] = [repr(worker)]
    with worker:
        assert worker.wait_ready(WAIT)
        with TopChefClient(url) as client:
            shown.append(repr(client))
            job = client.submit_job(worker.services[0].id, {"a": 1, "b": 2})
            worker.wait_for(lambda s: s.completed == 1, WAIT)
            assert client.job(job.id).results == {"sum": 3}  # it did reach the server
            with pytest.raises(TopChefError) as missing:
                client.service("0" * 8 + "-0000-4000-8000-" + "0" * 12)
            shown.append(str(missing.value))
        shown += [repr(worker), json.dumps(worker.health().to_dict())]
    with pytest.raises(ConfigurationError) as malformed:
        TopChefClient(with_password("http://[::1"))
    shown.append(str(malformed.value))
    shown += [r.getMessage() for r in caplog.records]

    assert any("worker started on http://***@127.0.0.1:" in line for line in shown), shown
    assert [] == [line for line in shown if SECRET in line]


def test_the_command_line_shows_no_password(server: TopChefServer) -> None:
    url = with_password(server.url)
    unknown = subprocess.run(
        [*COMMAND, "jobs", "no-such-service", "--url", url],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    empty = subprocess.run(
        [*COMMAND, "services", "--url", url],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert (1, 0) == (unknown.returncode, empty.returncode)
    assert "http://***@127.0.0.1" in unknown.stderr + empty.stderr
    assert SECRET not in unknown.stdout + unknown.stderr + empty.stdout + empty.stderr


def test_the_worker_s_files_are_private(server: TopChefServer, tmp_path: Path) -> None:
    """The journal (job ids) and the lease identity next to it: mode 0600, whatever
    the umask.  (The outbox, written when a delivery fails, is checked in
    ``test_ledger.py``.)"""
    previous = os.umask(0o022)
    try:
        worker = fast_worker(
            server, journal=tmp_path / "journal.jsonl", outbox=tmp_path / "outbox.jsonl"
        )
        worker.handler(
            name="adder", description="adds", job_registration_schema={}, job_result_schema={}
        )(lambda parameters: {})
        with worker:
            assert worker.wait_ready(WAIT)
    finally:
        os.umask(previous)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in tmp_path.iterdir()}
    assert {"journal.jsonl": 0o600, "journal.jsonl.lease": 0o600} == modes


def test_a_described_schema_with_a_remote_ref_is_refused(
    ref_target: tuple[str, list[str]],
) -> None:
    url, hits = ref_target
    worker = Worker("http://127.0.0.1:9")
    with pytest.raises(ConfigurationError, match="never fetched") as refused:
        worker.handler(
            name="x",
            description="d",
            job_registration_schema={},
            job_result_schema={"properties": {"sum": {"$ref": url}}},
        )(lambda parameters: {})
    assert url in str(refused.value)
    assert [] == hits


def test_a_stored_schema_with_a_remote_ref_is_never_fetched(
    server: TopChefServer,
    client: TopChefClient,
    ref_target: tuple[str, list[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A service registered elsewhere whose result schema points at a URL: the worker
    says it makes no local check, and neither it nor the test server fetches it."""
    url, hits = ref_target
    service = client.create_service(
        name="x",
        description="d",
        job_registration_schema={},
        job_result_schema={"properties": {"sum": {"$ref": url}}},
    )
    # The server cannot resolve it either: 500s, tried quickly here.
    worker = fast_worker(server, retry=RetryPolicy.forever(initial=0.01, maximum=0.05))
    worker.handler(service.id)(lambda parameters: {"sum": 3})
    client.submit_job(service.id, {})
    with caplog.at_level(logging.WARNING, logger="topchef_worker"):
        worker.run(until_idle=True)
    assert [] == hits
    assert any(
        f"the result schema of service {service.id} refers to other documents with $ref"
        in r.getMessage()
        for r in caplog.records
    )


def test_values_are_logged_only_when_asked_for(
    server: TopChefServer, client: TopChefClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Results that fail the schema: the ERROR names the place and the rule; the value
    appears only on the ``topchef_worker.values`` logger at DEBUG."""
    service = client.create_service(
        name="x",
        description="d",
        job_registration_schema={},
        job_result_schema={"properties": {"pin": {"type": "integer"}}},
    )

    def run_one() -> None:
        worker = fast_worker(server)
        worker.handler(service.id)(lambda parameters: {"pin": SECRET})
        client.submit_job(service.id, {})
        worker.run(until_idle=True)

    caplog.set_level(logging.INFO, logger="topchef_worker")
    caplog.set_level(logging.WARNING, logger="topchef_worker.values")
    run_one()
    quiet = [r.getMessage() for r in caplog.records]
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="topchef_worker.values")
    run_one()
    asked = [r.getMessage() for r in caplog.records if r.name == "topchef_worker.values"]

    assert any('$.pin: a string, against "type": "integer"' in m for m in quiet), quiet
    assert [] == [m for m in quiet if SECRET in m]
    expected = f'$.pin: a string, against "type": "integer": \'{SECRET}\' is not of type'
    assert [expected + " 'integer'"] == asked


def test_a_logged_request_hides_its_credentials(server: TopChefServer) -> None:
    """The test server's request log keeps the headers (tests assert on them), and
    its ``repr``, which a failing assertion prints, shows credentials as ``***``."""
    with TopChefClient(with_password(server.url)) as client:
        client.session.headers["Cookie"] = f"session={SECRET}"
        client.services()
    (request,) = server.requests
    assert request.headers["authorization"].startswith("Basic ")
    assert "'authorization': '***'" in repr(request)
    assert SECRET not in repr(request)
    assert base64.b64encode(f"lab:{SECRET}".encode()).decode() not in repr(request)
