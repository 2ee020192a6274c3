"""The socket side of :class:`~topchef_worker.testing.TopChefServer`: connections.

People run the stand-in as a development server and tests run it under fault
injection, so it must hold up against clients that misbehave, on loopback:

* each connection has a thread, but at most ``max_connections`` of them; at that
  bound a new connection first closes an idle keep-alive one (one waiting for its
  next request), else waits for a thread to finish, so idle sockets cannot starve a
  client that has something to say;
* a connection idle for ``idle_timeout`` seconds is closed, and a request must
  arrive whole within ``read_timeout`` seconds of its first byte (else 408), so a
  slow-loris client holds a thread for a bounded time;
* a request is parsed by :mod:`._http` within :class:`~._http.Limits`, and one the
  server refuses (400, 408, 413, 414, 431) is answered with a short text body and
  ``Connection: close``, and nothing else on that connection is read as a request.
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
from typing import TYPE_CHECKING

from ._app import AppRequest, AppResponse
from ._http import (
    Head,
    HttpError,
    Limits,
    chunk_size,
    decode_target,
    find_head_end,
    find_trailers_end,
    parse_head,
)

if TYPE_CHECKING:
    from ._server import TopChefServer

__all__ = ["HTTPServer", "shutdown_socket"]

_REASONS = {status.value: status.phrase.upper() for status in http.HTTPStatus}
#: A chunk-size line longer than this is refused (h11 buffers 16 KiB at most).
_MAX_CHUNK_LINE = 16 * 1024
#: After a refusal, what is read and discarded (bytes, seconds) before closing, so
#: that the client, still sending, reads the answer instead of a reset.
_LINGER_BYTES = 1024 * 1024
_LINGER_SECONDS = 1.0

#: Where a server made with ``log_requests=True`` logs each request, at INFO.
access_log = logging.getLogger("topchef_worker.testing.requests")


class _Closed(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The client closed the connection (or it was closed under us)."""


class HTTPServer(socketserver.ThreadingTCPServer):
    """A threading TCP server with a bounded number of connection threads."""

    # Plain TCPServer rather than http.server.HTTPServer, whose server_bind looks up
    # the host's FQDN: a DNS query on every start.
    allow_reuse_address = True
    daemon_threads = False
    block_on_close = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: TopChefServer) -> None:
        self.owner = owner
        self._connections: dict[socket.socket, bool] = {}  # socket -> is idle
        self._changed = threading.Condition()
        self._closing = False
        super().__init__(address, _Handler)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: object
    ) -> None:
        """Take a thread slot (closing an idle connection for it if need be)."""
        assert isinstance(request, socket.socket)
        with self._changed:
            while not self._closing and len(self._connections) >= self.owner.max_connections:
                idle = next((conn for conn, is_idle in self._connections.items() if is_idle), None)
                if idle is not None:
                    self._connections[idle] = False  # evicted once
                    shutdown_socket(idle)
                self._changed.wait(0.05 if idle is None else 1.0)
            if self._closing:
                self.shutdown_request(request)
                return
            self._connections[request] = False
        super().process_request(request, client_address)

    def process_request_thread(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: object
    ) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._changed:
                self._connections.pop(request, None)  # type: ignore[arg-type]
                self._changed.notify_all()

    def set_idle(self, connection: socket.socket, idle: bool) -> None:
        with self._changed:
            if connection in self._connections:
                self._connections[connection] = idle

    def close_connections(self) -> None:
        """Refuse new connections and close every open one."""
        with self._changed:
            self._closing = True
            connections = list(self._connections)
            self._changed.notify_all()
        for connection in connections:
            shutdown_socket(connection)


def shutdown_socket(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the peer
        connection.shutdown(socket.SHUT_RDWR)


class _Handler(socketserver.BaseRequestHandler):
    """HTTP/1.1 with keep-alive on one connection, read with :mod:`._http`."""

    server: HTTPServer
    request: socket.socket

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self.buffer = bytearray()
        self.command = "-"
        self.target = "-"

    def handle(self) -> None:
        owner = self.server.owner
        while True:
            if not self.buffer and not self._wait_for_request(owner.idle_timeout):
                return
            deadline = time.monotonic() + owner.read_timeout
            try:
                head = self._read_head(owner.limits, deadline)
                path, query = decode_target(head.target)
                body = self._read_body(head, owner.limits, deadline)
            except HttpError as error:
                self._refuse(error)
                return
            except TimeoutError:
                self._refuse(HttpError(408, "the request was not received in time"))
                return
            except _Closed:
                self._refuse(HttpError(400, "the request ended before it was complete"))
                return
            except OSError:
                return
            if not self._answer(head, path, query, body):
                return

    def _wait_for_request(self, timeout: float) -> bool:
        """Wait for the first byte of a request; False if the connection is done."""
        self.server.set_idle(self.request, True)
        try:
            return self._fill(time.monotonic() + timeout)
        except (TimeoutError, OSError, _Closed):
            return False
        finally:
            self.server.set_idle(self.request, False)

    def _fill(self, deadline: float) -> bool:
        """Receive what the client sent next; raise _Closed at its end."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.request.settimeout(remaining)
        data = self.request.recv(65536)
        if not data:
            raise _Closed
        self.buffer += data
        return True

    def _read_head(self, limits: Limits, deadline: float) -> Head:
        buffer = self.buffer
        searched = 0
        while (end := find_head_end(buffer, searched)) < 0:
            if len(buffer) > limits.max_head:
                if b"\n" not in buffer:
                    raise HttpError(414, "request line too long")
                raise HttpError(431, "request header section too large")
            searched = len(buffer)
            self._fill(deadline)
        head = parse_head(buffer[:end], limits)
        del buffer[:end]
        self.command, self.target = head.method, head.target
        return head

    def _read_body(self, head: Head, limits: Limits, deadline: float) -> bytes:
        # The limit is checked before anything is read, or 100 Continue sent.
        length = head.length
        if length is not None and length > limits.max_body:
            raise HttpError(413, f"request body larger than {limits.max_body} bytes")
        if head.expect_continue and length != 0:
            self._send(b"HTTP/1.1 100 CONTINUE\r\n\r\n")
        if length is None:
            return self._read_chunks(limits, deadline)
        while len(self.buffer) < length:
            self._fill(deadline)
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return body

    def _read_chunks(self, limits: Limits, deadline: float) -> bytes:
        buffer, body = self.buffer, bytearray()
        while True:
            while (line_end := buffer.find(b"\r\n")) < 0:
                if len(buffer) > _MAX_CHUNK_LINE:
                    raise HttpError(400, "malformed chunk size")
                self._fill(deadline)
            size = chunk_size(buffer[: line_end + 2])
            del buffer[: line_end + 2]
            if size == 0:
                break
            if len(body) + size > limits.max_body:
                raise HttpError(413, f"request body larger than {limits.max_body} bytes")
            while len(buffer) < size + 2:
                self._fill(deadline)
            if buffer[size : size + 2] != b"\r\n":
                raise HttpError(400, "malformed chunk end")
            body += buffer[:size]
            del buffer[: size + 2]
        while (end := find_trailers_end(buffer, 0)) < 0:
            if len(buffer) > limits.max_head:
                raise HttpError(431, "trailer section too large")
            self._fill(deadline)
        del buffer[:end]
        return bytes(body)

    def _answer(self, head: Head, path: str, query: str, body: bytes) -> bool:
        """Have the app answer; False to close the connection."""
        owner = self.server.owner
        started = time.perf_counter() if owner.log_requests else 0.0
        request = AppRequest(method=head.method, path=path, headers=head.headers, body=body)
        host = head.headers.get("host") or f"{owner.host}:{owner.port}"
        response = owner.process(request, query, host)
        keep_alive = head.keep_alive and response is not None
        if response is None:
            shutdown_socket(self.request)
        else:
            try:
                self._send(self._encode(head.method, response, keep_alive))
            except OSError:
                keep_alive = False
        if owner.log_requests:
            status = "dropped" if response is None else str(response.status)
            self._log(status, started)
        return keep_alive

    def _send(self, data: bytes) -> None:
        self.request.settimeout(self.server.owner.read_timeout)
        self.request.sendall(data)

    def _refuse(self, error: HttpError) -> None:
        """Answer a request the server will not handle, and close the connection."""
        started = time.perf_counter()
        body = f"{error.reason}\n".encode()
        response = AppResponse(error.status, "text/plain; charset=utf-8", body)
        with contextlib.suppress(OSError):
            self._send(self._encode("GET", response, keep_alive=False))
            self.request.shutdown(socket.SHUT_WR)
            self._linger()
        if self.server.owner.log_requests:
            self._log(f"{error.status} ({error.reason})", started)

    def _linger(self) -> None:
        deadline = time.monotonic() + _LINGER_SECONDS
        discarded = 0
        while discarded < _LINGER_BYTES and (remaining := deadline - time.monotonic()) > 0:
            self.request.settimeout(remaining)
            data = self.request.recv(65536)
            if not data:
                return
            discarded += len(data)

    def _log(self, status: str, started: float) -> None:
        """One access-log line, written outside the server lock, after the answer."""
        access_log.info(
            "%s %s %s %s %.1f ms",
            self.client_address[0],
            self.command,
            self.target,
            status,
            (time.perf_counter() - started) * 1000,
        )

    @staticmethod
    def _encode(method: str, response: AppResponse, keep_alive: bool) -> bytes:
        status = response.status
        body = b"" if method == "HEAD" else response.body
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
        if not keep_alive:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
