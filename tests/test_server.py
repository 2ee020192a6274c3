"""TopChefServer as a test tool: lifecycle, restarts, faults, the log and the clock."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests

from topchef_worker import JobStatus, Service, TopChefClient
from topchef_worker.exceptions import ServerError, TransportError
from topchef_worker.testing import CostModel, ManualClock, TopChefServer


def _server_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t is not threading.main_thread()}


def test_context_manager_url_and_no_threads_left() -> None:
    """The URL has no trailing slash; after stop no server thread is left running."""
    before = _server_threads()
    with TopChefServer() as server:
        assert server.running
        assert server.url == f"http://127.0.0.1:{server.port}"
        session = requests.Session()
        assert 200 == session.get(server.url + "/services", timeout=5).status_code
        # A keep-alive connection is still open when the server stops.
    assert not server.running
    assert set() == _server_threads() - before
    session.close()


def test_stop_is_idempotent_and_start_returns_self() -> None:
    """stop() twice is harmless; start() on a running server does nothing."""
    server = TopChefServer()
    assert server is server.start()
    assert server is server.start()
    server.stop()
    server.stop()
    assert "stopped" in repr(server)


def test_restart_on_same_port_keeps_state(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """A stopped server refuses connections; restarted, it has the same port and state."""
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    port = server.port
    server.stop()
    with pytest.raises(TransportError):
        client.next_job(adder.id)
    server.start()
    assert port == server.port
    assert job == client.next_job(adder.id)


def test_stop_drops_open_keep_alive_connections(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """Clients with pooled connections reconnect transparently after a restart."""
    client.check_in(adder.id)
    server.stop()
    server.start()
    client.check_in(adder.id)
    assert [200, 200] == [r.status for r in server.requests[-2:]]


def test_fail_next_counts_and_filters(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """fail_next(n) answers exactly n matching requests; others pass through."""
    server.faults.fail_next(2, status=503, method="PATCH", path="/services/*")
    client.next_job(adder.id)  # GET: not matched
    for _ in range(2):
        with pytest.raises(ServerError, match="503"):
            client.check_in(adder.id)
    client.check_in(adder.id)
    assert [204, 503, 503, 200] == [r.status for r in server.requests[-4:]]
    assert 0 == server.faults.pending


def test_fail_next_does_not_apply_the_request(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """An injected answer replaces the request: nothing changes on the server."""
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    server.faults.fail_next(path="/jobs/*")
    with pytest.raises(ServerError):
        client.update_job(job.id, status="WORKING")
    assert JobStatus.REGISTERED == client.job(job.id).status


def test_drop_before_and_after_apply(
    client: TopChefClient, server: TopChefServer, adder: Service
) -> None:
    """Dropped before: nothing applied.  Dropped after: applied, answer lost."""
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    server.faults.drop_next(path="/jobs/*")
    with pytest.raises(TransportError):
        client.update_job(job.id, status="WORKING")
    assert JobStatus.REGISTERED == client.job(job.id).status

    server.faults.drop_next(after_apply=True, method="PATCH")
    with pytest.raises(TransportError):
        client.update_job(job.id, status="WORKING")
    assert JobStatus.WORKING == client.job(job.id).status
    patches = [r for r in server.requests if r.method == "PATCH"]
    assert [(None, True), (200, True)] == [(r.status, r.dropped) for r in patches]


def test_faults_are_validated_and_cleared() -> None:
    """Nonsense counts and latencies are refused; clear() removes everything."""
    server = TopChefServer()
    with pytest.raises(ValueError, match="at least 1"):
        server.faults.fail_next(0)
    with pytest.raises(ValueError, match="negative"):
        server.faults.add_latency(-1)
    server.faults.fail_next(3)
    server.faults.drop_next(2)
    assert 5 == server.faults.pending
    server.faults.clear()
    assert 0 == server.faults.pending


def test_latency_is_spent_serially(server: TopChefServer, adder: Service) -> None:
    """Latency delays requests inside the one-at-a-time section, without real sleeps here."""
    slept: list[float] = []
    server._sleep = slept.append  # an injected sleep records instead of waiting
    server.faults.add_latency(0.25, path="/services/*/jobs/next")
    server.faults.add_latency(0.5)
    client = TopChefClient(server.url, retry=None)
    client.next_job(adder.id)
    client.check_in(adder.id)
    assert [0.75, 0.5] == slept


def test_requests_are_handled_one_at_a_time(server: TopChefServer, adder: Service) -> None:
    """Concurrent clients never overlap inside the server, like the real one."""
    inside = 0
    overlaps = 0
    lock = threading.Lock()
    handle = server.app.handle

    def counting(request: object, host: str) -> object:
        nonlocal inside, overlaps
        with lock:
            inside += 1
            overlaps += inside > 1
        try:
            return handle(request, host)  # type: ignore[arg-type]
        finally:
            with lock:
                inside -= 1

    server.app.handle = counting  # type: ignore[method-assign, assignment]
    client = TopChefClient(server.url, retry=None)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: client.check_in(adder.id), range(200)))
    assert 0 == overlaps
    assert 200 == sum(1 for r in server.requests if r.method == "PATCH")


def test_request_log_records_everything(server: TopChefServer, adder: Service) -> None:
    """Method, path, query, lower-case headers, body and status are logged."""
    server.clear_requests()
    requests.post(
        f"{server.url}/services/{adder.id}/jobs?x=1",
        json={"parameters": {"a": 1, "b": 2}},
        timeout=5,
    )
    (logged,) = server.requests
    assert ("POST", f"/services/{adder.id}/jobs", "x=1", 201) == (
        logged.method,
        logged.path,
        logged.query,
        logged.status,
    )
    assert "application/json" == logged.headers["content-type"]
    assert b'"parameters"' in logged.body


def test_request_log_is_bounded() -> None:
    """Only the newest log_size requests are kept."""
    with TopChefServer(log_size=3) as server:
        for _ in range(5):
            requests.get(server.url + "/services", timeout=5)
        assert 3 == len(server.requests)


def test_manual_clock() -> None:
    """The clock moves only forward, by seconds or timedelta, and is aware UTC."""
    start = datetime(2026, 1, 1, 12, 0)
    clock = ManualClock(start)
    assert datetime(2026, 1, 1, 12, 0, tzinfo=UTC) == clock()
    assert datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC) == clock.advance(5)
    clock.advance(timedelta(minutes=1))
    assert datetime(2026, 1, 1, 12, 1, 5, tzinfo=UTC) == clock()
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)


def test_submission_dates_come_from_the_clock(
    client: TopChefClient, clock: ManualClock, adder: Service
) -> None:
    """Unlike the real server's start-time bug, each job has its own submission time."""
    first = client.submit_job(adder.id, {"a": 1, "b": 2})
    clock.advance(10)
    second = client.submit_job(adder.id, {"a": 1, "b": 2})
    assert timedelta(seconds=10) == second.date_submitted - first.date_submitted
    assert clock() == second.date_submitted


def test_chunked_request_bodies(server: TopChefServer, adder: Service) -> None:
    """A chunked request body is read like a sized one."""

    def body() -> object:
        yield b'{"parameters": '
        yield b'{"a": 1, "b": 2}}'

    response = requests.post(
        f"{server.url}/services/{adder.id}/jobs",
        data=body(),
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert 201 == response.status_code
    assert "chunked" == server.requests[-1].headers["transfer-encoding"]


def test_the_cost_model_follows_the_real_servers_measurements() -> None:
    """A poll costs 2.5 ms plus about 22.6 us a job of history (25 ms at 1,000 jobs,
    228 ms at 10,000), /queue the same, a detail 60 ms at 1,000; writes nothing."""
    model = CostModel()
    sid = "0b5c8c1e-3f5a-4c2e-9d7e-2a1b3c4d5e6f"

    def cost(method: str, path: str, jobs: int = 1000) -> float:
        return round(model.seconds(method, path, lambda s: {sid: jobs}.get(s, 0)), 4)

    assert (0.0251, 0.0251, 0.2285, 0.06, 0.0, 0.0) == (
        cost("GET", f"/services/{sid}/jobs/next"),
        cost("GET", f"/services/{sid}/queue"),
        cost("GET", f"/services/{sid}/jobs/next", 10_000),
        cost("GET", f"/services/{sid}"),
        cost("PATCH", f"/services/{sid}"),
        cost("GET", "/jobs/" + sid),
    )


def test_a_server_with_the_cost_model_spends_it_per_request() -> None:
    """With cost=, each poll is delayed by the model's time for that service's
    history, spent through the injected sleep; without it, nothing is."""
    slept: list[float] = []
    with (
        TopChefServer(cost=CostModel(), sleep=slept.append) as server,
        TopChefClient(server.url, retry=None) as client,
    ):
        sid = client.create_service(
            name="s", description="d", job_registration_schema={}, job_result_schema={}
        ).id
        for _ in range(100):
            client.submit_job(sid, {})
        slept.clear()
        client.next_job(sid)
        client.queue(sid)
    assert [round(0.0025 + 0.0000226 * 100, 6)] * 2 == [round(s, 6) for s in slept]
