"""How many requests per second TopChefServer answers on one keep-alive connection.

The figures that matter for later benchmarks are the server's rates for the two
requests a worker sends most: ``GET /services/<id>/jobs/next`` (the poll) and a bare
``PATCH /services/<id>`` (the heartbeat).  They are measured in this process with:

* ``http.client`` on one keep-alive connection: the cheapest Python client, so the
  figure is close to the server's own limit (client and server share the machine and
  the GIL, as they do in every test and benchmark);
* ``TopChefClient`` (requests) on one session: what the worker will see;

and reported as ratios to a baseline measured the same way in the same run: a bare
``http.server`` handler on the same threading server class that answers 204 without
any TopChef logic, the floor of a pure-Python HTTP server.

Run: ``python benchmarks/server_rate.py [--requests N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import http.client
import socketserver
import statistics
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

from topchef_worker import TopChefClient
from topchef_worker.testing import TopChefServer


class _Bare(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.wfile.write(b"HTTP/1.1 204 NO CONTENT\r\nServer: bare\r\n\r\n")

    do_GET = do_PATCH = _answer  # noqa: N815 - the http.server naming convention

    def log_message(self, format: str, *args: object) -> None:
        pass


class _BareServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = False
    block_on_close = False


def _rate(send: Callable[[], object], requests: int, repeat: int) -> float:
    """Median requests per second over *repeat* runs of *requests* sends."""
    for _ in range(min(200, requests)):  # warm up connections and caches
        send()
    rates = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(requests):
            send()
        rates.append(requests / (time.perf_counter() - start))
    return statistics.median(rates)


def _http_client_sender(port: int, method: str, path: str) -> Callable[[], object]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def send() -> object:
        connection.request(method, path)
        response = connection.getresponse()
        return response.read()

    return send


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n, r = args.requests, args.repeat

    bare = _BareServer(("127.0.0.1", 0), _Bare)
    thread = threading.Thread(target=bare.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        baseline = _rate(_http_client_sender(bare.server_address[1], "GET", "/"), n, r)
    finally:
        bare.shutdown()
        bare.server_close()
        thread.join()

    with TopChefServer(log_size=1000) as server:
        client = TopChefClient(server.url)
        sid = client.create_service(
            name="bench", description="d", job_registration_schema={}, job_result_schema={}
        ).id
        busy = client.create_service(
            name="busy", description="d", job_registration_schema={}, job_result_schema={}
        ).id
        client.submit_job(busy, {"x": 1})
        rows = [
            ("bare http.server 204 (baseline)", baseline),
            (
                "http.client  GET jobs/next (204)",
                _rate(_http_client_sender(server.port, "GET", f"/services/{sid}/jobs/next"), n, r),
            ),
            (
                "http.client  GET jobs/next (200)",
                _rate(_http_client_sender(server.port, "GET", f"/services/{busy}/jobs/next"), n, r),
            ),
            (
                "http.client  PATCH heartbeat",
                _rate(_http_client_sender(server.port, "PATCH", f"/services/{sid}"), n, r),
            ),
            ("TopChefClient next_job (204)", _rate(lambda: client.next_job(sid), n, r)),
            ("TopChefClient next_job (200)", _rate(lambda: client.next_job(busy), n, r)),
            ("TopChefClient check_in", _rate(lambda: client.check_in(sid), n, r)),
        ]
        client.close()

    print(f"{'request':36} {'req/s':>8} {'x baseline':>11}")
    for name, rate in rows:
        print(f"{name:36} {rate:8.0f} {rate / baseline:11.2f}")


if __name__ == "__main__":
    main()
