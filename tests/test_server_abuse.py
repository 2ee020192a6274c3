"""TopChefServer holds up under abuse: limits, timeouts, malformed requests, and it
validates schemas as the real server does, never fetching a remote ``$ref``.

Raw sockets throughout, since clients would not send these requests; nothing waits
by sleeping: reads have deadlines, and the server's log is waited on.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from topchef_worker import TopChefClient
from topchef_worker.testing import TopChefServer

HEAD = b"POST /services HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"


def connect(server: TopChefServer) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=5)


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection (or fail)."""
    deadline = time.monotonic() + timeout
    received = b""
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not data:
            return received
        received += data
    raise AssertionError(f"the server did not close the connection; got {received[:200]!r}")


def exchange(server: TopChefServer, data: bytes) -> bytes:
    with connect(server) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    return int(answer[9:12])


MALFORMED = {
    "garbage": b"GARBAGE\r\n\r\n",
    "no version": b"GET /services\r\n\r\n",
    "extra word": b"GET /services HTTP/1.1 x\r\nHost: a\r\n\r\n",
    "non-token method": b"G(T /services HTTP/1.1\r\nHost: a\r\n\r\n",
    "negative length": HEAD + b"Content-Length: -1\r\n\r\n",
    "signed length": HEAD + b"Content-Length: +2\r\n\r\n{}",
    "overflowing length": HEAD + b"Content-Length: " + b"9" * 30 + b"\r\n\r\n",
    "conflicting lengths": HEAD + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "length list": HEAD + b"Content-Length: 2, 3\r\n\r\n{}",
    "gzip": HEAD + b"Transfer-Encoding: gzip\r\n\r\n",
    "chunked not last": HEAD + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "length and chunked": HEAD
    + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bad chunk size": HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "bad chunk end": HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}xx0\r\n\r\n",
    "raw non-ASCII path": b"GET /services/\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",
    "percent-encoded non-UTF-8 path": b"GET /services/%ff HTTP/1.1\r\nHost: a\r\n\r\n",
    "obs-fold": b"GET /services HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
    "header without colon": b"GET /services HTTP/1.1\r\nHost: a\r\nX-A b\r\n\r\n",
    "space before colon": b"GET /services HTTP/1.1\r\nHost : a\r\n\r\n",
    "two hosts": b"GET /services HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "HTTP/1.2": b"GET /services HTTP/1.2\r\nHost: a\r\n\r\n",
    "TLS hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "leading blank line": b"\r\nGET /services HTTP/1.1\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_requests_get_400_and_a_closed_connection(
    server: TopChefServer, data: bytes
) -> None:
    """A 400 with the reason, Connection: close; the request never reaches the API,
    and a request pipelined after it is never read (no smuggling)."""
    smuggled = b"DELETE /services HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
    answer = exchange(server, data + smuggled)
    assert 400 == status_of(answer)
    assert b"\r\nConnection: close\r\n" in answer
    assert 1 == answer.count(b"HTTP/1.1 ")
    assert [] == server.requests


def test_an_incomplete_request_then_end_of_input_gets_400(server: TopChefServer) -> None:
    with connect(server) as sock:
        sock.sendall(HEAD + b"Content-Length: 10\r\n\r\n{}")
        sock.shutdown(socket.SHUT_WR)
        assert 400 == status_of(read_until_closed(sock))


def test_a_valid_chunked_request_still_works_and_keeps_the_connection(
    server: TopChefServer,
) -> None:
    body = b'{"name": "n", "description": "d", "job_registration_schema": {}, '
    body2 = b'"job_result_schema": {}}'
    chunks = b"%x\r\n%s\r\n%x;ext=1\r\n%s\r\n0\r\nX-T: 1\r\n\r\n" % (
        len(body),
        body,
        len(body2),
        body2,
    )
    with connect(server) as sock:
        sock.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunks)
        sock.sendall(b"GET /services HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        answer = read_until_closed(sock)
    assert [201, 200] == [
        status_of(part) for part in [answer, answer[answer.index(b"HTTP/1.1 200") :]]
    ]
    assert [201, 200] == [r.status for r in server.requests]


@pytest.fixture
def small() -> Iterator[TopChefServer]:
    """A server with small limits."""
    with TopChefServer(max_body=1000, max_header_bytes=4096, max_header_lines=20) as running:
        yield running


@pytest.mark.parametrize("expect", [b"", b"Expect: 100-continue\r\n"])
def test_a_body_over_the_limit_is_refused_before_it_is_sent(
    small: TopChefServer, expect: bytes
) -> None:
    """413 on the head alone: the 100 MB body is never sent, so it cannot have been
    read into memory; no 100 Continue either."""
    answer = exchange(small, HEAD + expect + b"Content-Length: 100000000\r\n\r\n")
    assert 413 == status_of(answer)
    assert b"\r\nConnection: close\r\n" in answer
    assert b"100 CONTINUE" not in answer


def test_a_chunked_body_over_the_limit_is_refused(small: TopChefServer) -> None:
    chunk = b"%x\r\n%s\r\n" % (600, b"x" * 600)
    answer = exchange(small, HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 2)
    assert 413 == status_of(answer)


def test_a_body_at_the_limit_is_read(small: TopChefServer) -> None:
    answer = exchange(
        small, HEAD + b"Content-Length: 1000\r\nConnection: close\r\n\r\n" + b" " * 1000
    )
    assert 400 == status_of(answer)  # TopChef's own 400: not JSON
    assert [400] == [r.status for r in small.requests]


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 21 + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nX-A: " + b"b" * 5000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nX-A: " + b"b" * 5000, 431),  # the head never ends
    ],
    ids=["request line", "header lines", "header bytes", "unending head"],
)
def test_header_limits(small: TopChefServer, data: bytes, status: int) -> None:
    answer = exchange(small, data)
    assert status == status_of(answer)
    assert b"\r\nConnection: close\r\n" in answer


def test_the_limits_are_options_of_serve_too() -> None:
    from topchef_worker.cli import build_parser

    args = build_parser().parse_args(
        ["serve", "--max-body", "5", "--max-connections", "3", "--idle-timeout", "1.5"]
    )
    assert (5, 3, 1.5) == (args.max_body, args.max_connections, args.idle_timeout)


def test_idle_and_slow_clients_cannot_starve_a_real_one() -> None:
    """100 idle connections and some slow-loris ones (a header byte now and then):
    a client's request still succeeds at once, the connection threads stay bounded,
    the slow ones get 408 after read_timeout and the idle ones are closed."""
    threads_before = threading.active_count()
    with TopChefServer(idle_timeout=1.0, read_timeout=1.0, max_connections=64) as server:
        idle = [connect(server) for _ in range(100)]
        slow = [connect(server) for _ in range(5)]
        for sock in slow:
            sock.sendall(b"GET /services HTTP/1.1\r\n")
        started = time.monotonic()
        with TopChefClient(server.url, timeout=5.0, retry=None) as client:
            assert [] == client.services()
        assert time.monotonic() - started < 3.0
        assert threading.active_count() <= threads_before + 64 + 2
        for sock in slow:
            assert 408 == status_of(slow_loris(sock, deadline=time.monotonic() + 5))
        for sock in idle:
            read_until_closed(sock)
            sock.close()
        for sock in slow:
            sock.close()


def slow_loris(sock: socket.socket, deadline: float) -> bytes:
    """Send a header byte whenever the server has been quiet for 0.2 s; return its
    answer once it gives one."""
    received = b""
    while time.monotonic() < deadline:
        sock.settimeout(0.2)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            try:
                sock.sendall(b"X")
            except OSError:
                return received
            continue
        except ConnectionResetError:
            return received
        if not data:
            return received
        received += data
    raise AssertionError("the server never answered the slow client")


def test_an_idle_keep_alive_connection_is_closed_after_idle_timeout() -> None:
    with TopChefServer(idle_timeout=0.5) as server, connect(server) as sock:
        sock.sendall(b"GET /services HTTP/1.1\r\nHost: a\r\n\r\n")
        answer = read_until_closed(sock, timeout=5.0)
    assert 200 == status_of(answer)
    assert b"Connection: close" not in answer


# -- schemas as the real server (jsonschema 2.6, Draft 4) validates them -------------


def validate(server: TopChefServer, schema: dict[str, Any], value: Any) -> int:
    """The status of /validator and of a job submission for {"x": value}."""
    instance = {"x": value}
    via_validator = requests.post(
        f"{server.url}/validator", json={"schema": schema, "object": instance}, timeout=5
    ).status_code
    service = requests.post(
        f"{server.url}/services",
        json={
            "name": "s",
            "description": "d",
            "job_registration_schema": schema,
            "job_result_schema": {},
        },
        timeout=5,
    )
    job = requests.post(
        f"{service.headers['Location']}/jobs", json={"parameters": instance}, timeout=5
    )
    submitted = 200 if job.status_code == 201 else job.status_code
    assert via_validator == submitted, (via_validator, submitted)
    return via_validator


def on_x(**keywords: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {"x": keywords}}


@pytest.mark.parametrize(
    ("schema", "value", "status"),
    [
        (on_x(exclusiveMinimum=0), -1, 200),  # Draft 6 numeric, alone: ignored
        (on_x(exclusiveMaximum=0), 1, 200),
        (on_x(minimum=0, exclusiveMinimum=0), 0, 200),  # 0 is false: inclusive
        (on_x(minimum=0, exclusiveMinimum=5), 0, 400),  # 5 is true: exclusive
        (on_x(minimum=0, exclusiveMinimum=5), 1, 200),  # ... of minimum, not of 5
        (on_x(minimum=0, exclusiveMinimum=True), 0, 400),
        (on_x(maximum=10, exclusiveMaximum=1), 10, 400),
        (on_x(maximum=10, exclusiveMaximum=0), 10, 200),
        (on_x(const=3, contains={}, propertyNames={"maxLength": 0}), 4, 200),
        ({"propertyNames": {"maxLength": 0}, "if": {}, "then": False}, 1, 200),
        (on_x(type="number", minimum=0), -1, 400),  # Draft 4 itself still applies
        (on_x(type="float"), 1, 500),  # an unknown type: the real server's 500 too
    ],
)
def test_draft6_keywords_are_treated_as_jsonschema_2_6_draft4(
    server: TopChefServer, schema: dict[str, Any], value: Any, status: int
) -> None:
    assert status == validate(server, schema, value)


def test_a_remote_ref_is_never_fetched(
    server: TopChefServer, ref_target: tuple[str, list[str]]
) -> None:
    """Unresolvable instead: Flask's 500 page, as the real server answers when its
    fetch fails; the schema's URL is never asked for."""
    url, hits = ref_target
    schema = on_x(**{"$ref": url})
    assert 500 == validate(server, schema, 1)
    page = requests.post(
        f"{server.url}/validator", json={"schema": schema, "object": {"x": 1}}, timeout=5
    )
    assert page.text.startswith("<!DOCTYPE HTML")
    assert [] == hits
