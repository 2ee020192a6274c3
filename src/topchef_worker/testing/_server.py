"""The HTTP side of :class:`TopChefServer`: its options, faults and the log.

Each connection gets a thread (HTTP/1.1 keep-alive, so a client reuses it), but every
request is handled under one lock, because the real server handles one request at a
time and clients must be tested against that.  Stopping the server closes every
connection and joins every thread; starting it again binds the same port and keeps
the state, which is how tests simulate a server restart.  How connections are read,
bounded and timed out is in :mod:`._connection`; how requests are parsed, in
:mod:`._http`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import attrs

from topchef_worker._ids import parse_id

from ._app import AppRequest, AppResponse, Clock, TopChefApp
from ._connection import HTTPServer
from ._cost import CostModel
from ._faults import Action, Faults
from ._http import Limits

__all__ = ["LoggedRequest", "TopChefServer"]


#: Headers whose values are credentials: shown as ``***`` in a request's ``repr``.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


def _shown(headers: dict[str, str]) -> dict[str, str]:
    return {k: "***" if k.lower() in _SECRET_HEADERS else v for k, v in headers.items()}


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
    headers: dict[str, str] = attrs.field(hash=False, repr=lambda h: repr(_shown(h)))
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
            Requests the server refuses (below) are logged too, with the reason.
        max_body: The largest request body, in bytes (10 MiB); a larger one is
            answered 413 before any of it is read (before ``100 Continue``).
        max_header_bytes: The largest request head (request line and headers), in
            bytes (64 KiB); beyond it 431, or 414 while still in the request line.
        max_header_lines: The most header lines a request may have (100); else 431.
        max_connections: How many connections are served at once, a thread each
            (64).  At the bound a new connection closes an idle keep-alive one, or
            else waits in the listen queue for a thread to finish.
        idle_timeout: Seconds a connection may wait between requests (5) before the
            server closes it.
        read_timeout: Seconds a request may take to arrive, from its first byte to
            the end of its body (10); else 408.  Also how long an answer may take to
            send.

    A request that is not HTTP/1.1 as RFC 9112 has it (or is ambiguous: both
    ``Content-Length`` and ``Transfer-Encoding``, a ``Transfer-Encoding`` other than
    ``chunked``, obs-fold, a path that is not UTF-8 once percent-decoded, ...) is
    answered 400.  Every refusal closes the connection, and is not in
    :attr:`requests`, which holds what reached the TopChef API.

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
        max_body: int = 10 * 1024 * 1024,
        max_header_bytes: int = 64 * 1024,
        max_header_lines: int = 100,
        max_connections: int = 64,
        idle_timeout: float = 5.0,
        read_timeout: float = 10.0,
    ) -> None:
        if min(max_body, max_header_bytes, max_header_lines) < 0 or max_connections < 1:
            raise ValueError("limits must not be negative; max_connections at least 1")
        if idle_timeout <= 0 or read_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self.limits = Limits(max_body, max_header_bytes, max_header_lines)
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.read_timeout = read_timeout
        self.host = host
        self.log_requests = log_requests
        self.cost = cost
        self._port = port
        self.app = TopChefApp(clock)
        self.faults = Faults()
        self._lock = threading.Lock()
        self._logged = threading.Condition(self._lock)
        self._log: deque[LoggedRequest] = deque(maxlen=log_size)
        self._httpd: HTTPServer | None = None
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
        httpd = HTTPServer((self.host, self._port), self)
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
        # Connections first: it also frees an accept loop waiting for a thread slot.
        httpd.close_connections()
        httpd.shutdown()
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
