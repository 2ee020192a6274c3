"""The HTTP side of :class:`TopChefServer`: sockets, threads, faults and the log.

Each connection gets a thread (HTTP/1.1 keep-alive, so a client reuses it), but every
request is handled under one lock, because the real server handles one request at a
time and clients must be tested against that.  Stopping the server closes every
connection and joins every thread; starting it again binds the same port and keeps
the state, which is how tests simulate a server restart.
"""

from __future__ import annotations

import contextlib
import email.utils
import http
import logging
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from urllib.parse import unquote

import attrs

from topchef_worker._ids import parse_id

from ._app import AppRequest, AppResponse, Clock, TopChefApp
from ._cost import CostModel
from ._faults import Action, Faults

__all__ = ["LoggedRequest", "TopChefServer"]

_REASONS = {status.value: status.phrase.upper() for status in http.HTTPStatus}

#: Where a server made with ``log_requests=True`` logs each request, at INFO.
_access_log = logging.getLogger("topchef_worker.testing.requests")


@attrs.frozen(kw_only=True)
class LoggedRequest:
    """A request the server received and what became of it.

    ``method`` is the verb on the wire; an ``X-HTTP-Method-Override`` header, if
    any, is in ``headers`` (names are lower case).  ``status`` is the status the
    server answered, or would have answered had the connection not been ``dropped``
    after handling; it is None for a request dropped before handling.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str] = attrs.field(hash=False)
    body: bytes
    status: int | None
    dropped: bool = False


class TopChefServer:
    """A faithful, in-memory TopChef server on loopback, for tests and demos.

    Args:
        host: The address to bind; loopback by default.
        port: The port; 0 picks a free one.  Kept across :meth:`stop` and
            :meth:`start`, so a restarted server is at the same URL.
        clock: Returns the current time as an aware UTC datetime; see
            :class:`ManualClock`.
        log_size: How many requests :attr:`requests` keeps (the newest); None for all.
        cost: Make requests take as long as on the real server (see
            :class:`CostModel`), for benchmarks; off by default.
        sleep: How latency and cost are spent (tests record them instead).
        log_requests: Log each request at INFO on the
            ``topchef_worker.testing.requests`` logger, as an access log: client
            address, method, path, status and time taken, e.g.
            ``127.0.0.1 GET /services/<id>/jobs/next 204 1.2 ms``.  Off by default,
            so that a test's log shows what the code under test logs; ``topchef-worker
            serve`` turns it on.  When off it costs one attribute read per request.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with TopChefServer() as server:
            client = TopChefClient(server.url)
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
        log_size: int | None = 10_000,
        cost: CostModel | None = None,
        sleep: Callable[[float], None] = time.sleep,
        log_requests: bool = False,
    ) -> None:
        self.host = host
        self.log_requests = log_requests
        self.cost = cost
        self._port = port
        self.app = TopChefApp(clock)
        self.faults = Faults()
        self._lock = threading.Lock()
        self._logged = threading.Condition(self._lock)
        self._log: deque[LoggedRequest] = deque(maxlen=log_size)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._sleep = sleep

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<TopChefServer {self.url} {state}>"

    @property
    def port(self) -> int:
        """The bound port (0 before the first start with ``port=0``)."""
        return self._port

    @property
    def url(self) -> str:
        """The base URL, without a trailing slash."""
        return f"http://{self.host}:{self._port}"

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._httpd is not None

    def start(self) -> TopChefServer:
        """Start serving (again, on the same port, with the same state)."""
        if self._httpd is not None:
            return self
        httpd = _HTTPServer((self.host, self._port), self)
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"topchef-server-{self._port}",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: close the listening socket and every connection, join threads.

        Clients with a request in flight see the connection drop.  The state is kept.
        """
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._httpd = self._thread = None
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        thread.join()

    def __enter__(self) -> TopChefServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def requests(self) -> list[LoggedRequest]:
        """The requests received so far, oldest first (at most ``log_size``)."""
        with self._lock:
            return list(self._log)

    def wait_for_requests(
        self, predicate: Callable[[list[LoggedRequest]], bool], timeout: float = 10.0
    ) -> list[LoggedRequest]:
        """Block until *predicate* holds for the request log, and return the log.

        The predicate is checked now and after every request the server handles, so
        a test waits exactly as long as it must, e.g. for the next heartbeat::

            server.wait_for_requests(lambda log: len(log) > before)

        Raises :class:`TimeoutError` if it does not hold within *timeout* seconds.
        """
        deadline = time.monotonic() + timeout
        with self._logged:
            while True:
                log = list(self._log)
                if predicate(log):
                    return log
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"the request log did not satisfy the condition within {timeout:g} s "
                        f"({len(log)} requests logged)"
                    )
                self._logged.wait(remaining)

    def clear_requests(self) -> None:
        """Forget the requests received so far."""
        with self._lock:
            self._log.clear()

    def _history(self, service_id: str) -> int:
        """How many jobs a service ever had (0 for an unknown one)."""
        service = self.app.services.get(parse_id(service_id) or "")
        return 0 if service is None else len(service.jobs)

    def process(self, request: AppRequest, query: str, host: str) -> AppResponse | None:
        """Handle one request under the server lock; None means drop the connection."""
        with self._lock:
            delay, fault = self.faults.take(request.method, request.path)
            if self.cost is not None:
                delay += self.cost.seconds(request.method, request.path, self._history)
            if delay:
                self._sleep(delay)
            response: AppResponse | None = None
            if fault is None or fault.action is Action.DROP_AFTER:
                response = self.app.handle(request, host)
            elif fault.action is Action.RESPOND:
                response = AppResponse(fault.status, fault.content_type, fault.body, fault.headers)
            dropped = fault is not None and fault.action is not Action.RESPOND
            self._log.append(
                LoggedRequest(
                    method=request.method,
                    path=request.path,
                    query=query,
                    headers=request.headers,
                    body=request.body,
                    status=None if response is None else response.status,
                    dropped=dropped,
                )
            )
            self._logged.notify_all()
            return None if dropped else response


class _HTTPServer(socketserver.ThreadingTCPServer):
    # Plain TCPServer rather than http.server.HTTPServer, whose server_bind looks up
    # the host's FQDN: a DNS query on every start.
    allow_reuse_address = True
    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], owner: TopChefServer) -> None:
        self.owner = owner
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._closing = False
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket) -> bool:
        """Register a connection; False if the server is already closing."""
        with self._connections_lock:
            if self._closing:
                return False
            self._connections.add(connection)
            return True

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            self._closing = True
            connections = list(self._connections)
        for connection in connections:
            _shutdown(connection)


def _shutdown(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the peer
        connection.shutdown(socket.SHUT_RDWR)


class _Handler(socketserver.StreamRequestHandler):
    """HTTP/1.1 with keep-alive, parsed by hand.

    http.server's parser goes through the email package and cost half of the
    server's time per request; TopChef clients send small, well-formed requests, so
    a plain line parser serves them at a fraction of that.
    """

    disable_nagle_algorithm = True
    server: _HTTPServer
    close_connection: bool
    command: str
    headers: dict[str, str]

    def setup(self) -> None:
        super().setup()
        if not self.server.track(self.connection):
            _shutdown(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def handle(self) -> None:
        self.close_connection = False
        while not self.close_connection:
            self.handle_one_request()

    def _read_head(self) -> bool:
        """Read the request line and headers; False to close the connection."""
        line = self.rfile.readline(65537)
        if not line or len(line) > 65536:
            return False
        words = line.decode("latin-1").split()
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            self.wfile.write(b"HTTP/1.1 400 BAD REQUEST\r\nContent-Length: 0\r\n\r\n")
            return False
        self.command, self.path, version = words
        headers: dict[str, str] = {}
        for _ in range(200):
            raw = self.rfile.readline(65537)
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            return False
        self.headers = headers
        connection = headers.get("connection", "").lower()
        self.close_connection = connection == "close" or (
            version == "HTTP/1.0" and connection != "keep-alive"
        )
        if headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 CONTINUE\r\n\r\n")
        return True

    def handle_one_request(self) -> None:
        try:
            if not self._read_head():
                self.close_connection = True
                return
            body = self._read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        owner = self.server.owner
        started = time.perf_counter() if owner.log_requests else 0.0
        path, _, query = self.path.partition("?")
        request = AppRequest(
            method=self.command, path=unquote(path), headers=self.headers, body=body
        )
        host = self.headers.get("host") or f"{owner.host}:{owner.port}"
        response = owner.process(request, query, host)
        if response is None:
            self.close_connection = True
            _shutdown(self.connection)
        else:
            try:
                self.wfile.write(self._encode(response))
            except OSError:
                self.close_connection = True
        if owner.log_requests:
            self._log_request(response, started)

    def _log_request(self, response: AppResponse | None, started: float) -> None:
        """One access-log line, written outside the server lock, after the answer."""
        _access_log.info(
            "%s %s %s %s %.1f ms",
            self.client_address[0],
            self.command,
            self.path,
            "dropped" if response is None else response.status,
            (time.perf_counter() - started) * 1000,
        )

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return b"".join(self._chunks())
        length = int(self.headers.get("content-length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        return self.rfile.read(length) if length else b""

    def _chunks(self) -> Iterator[bytes]:
        while True:
            size = int(self.rfile.readline(1024).split(b";", 1)[0], 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            yield self.rfile.read(size)
            self.rfile.readline(1024)

    def _encode(self, response: AppResponse) -> bytes:
        status = response.status
        body = b"" if self.command == "HEAD" else response.body
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'UNKNOWN')}",
            "Server: topchef",
            f"Date: {email.utils.formatdate(usegmt=True)}",
        ]
        if response.content_type is not None:
            lines.append(f"Content-Type: {response.content_type}")
        if status != 204:
            lines.append(f"Content-Length: {len(body)}")
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
