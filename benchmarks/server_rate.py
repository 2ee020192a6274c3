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

``--compare PATH`` also loads the ``TopChefClient`` of another copy of ``_client.py``
(say the one before a change) and measures it in the same run, each repeat
alternating the two clients, then prints what the change costs per request: in
microseconds, as a ratio, and as a share of a request to the real server
(``--real-ms``, 2.5 ms for its cheapest poll).

Run: ``python benchmarks/server_rate.py [--requests N] [--repeat R] [--compare PATH]``.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import importlib.util
import socketserver
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
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
    return _rates([send], requests, repeat)[0]


def _rates(sends: Sequence[Callable[[], object]], requests: int, repeat: int) -> list[float]:
    """Median requests per second of each sender, the senders taking turns each repeat.

    Taking turns, in alternating order, spreads drifts of the machine (frequency,
    other load) over all the contenders instead of charging them to one.
    """
    for send in sends:
        for _ in range(min(200, requests)):  # warm up connections and caches
            send()
    rates: list[list[float]] = [[] for _ in sends]
    turns = list(zip(sends, rates, strict=False))
    for round_ in range(repeat):
        for send, measured in turns if round_ % 2 == 0 else reversed(turns):
            start = time.perf_counter()
            for _ in range(requests):
                send()
            measured.append(requests / (time.perf_counter() - start))
    return [statistics.median(measured) for measured in rates]


def _load_client(path: str) -> type[TopChefClient]:
    """The TopChefClient class of another copy of ``_client.py``, imported beside ours.

    It is loaded as a submodule of ``topchef_worker`` so that its relative imports
    resolve to the installed package's other modules.
    """
    name = "topchef_worker._client_compared"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    client_class: type[TopChefClient] = module.TopChefClient
    return client_class


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
    parser.add_argument(
        "--compare",
        metavar="PATH",
        help="another _client.py whose TopChefClient is measured in the same run",
    )
    parser.add_argument(
        "--real-ms",
        type=float,
        default=2.5,
        help="milliseconds the real server takes for a request (default: 2.5, its cheapest poll)",
    )
    args = parser.parse_args()
    n, r = args.requests, args.repeat
    compared = None if args.compare is None else _load_client(args.compare)

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
        ]
        clients = [("TopChefClient", client)]
        if compared is not None:
            clients.append(("compared", compared(server.url)))
        calls: list[tuple[str, Callable[[TopChefClient], object]]] = [
            ("next_job (204)", lambda c: c.next_job(sid)),
            ("next_job (200)", lambda c: c.next_job(busy)),
            ("check_in", lambda c: c.check_in(sid)),
        ]
        by_call = {}
        for call, use in calls:
            senders = [functools.partial(use, each) for _, each in clients]
            by_call[call] = _rates(senders, n, r)
            rows.extend(
                (f"{label:13} {call}", rate)
                for (label, _), rate in zip(clients, by_call[call], strict=False)
            )
        for _, each in clients:
            each.close()

    print(f"{'request':36} {'req/s':>8} {'us/req':>8} {'x baseline':>11}")
    for name, rate in rows:
        print(f"{name:36} {rate:8.0f} {1e6 / rate:8.1f} {rate / baseline:11.2f}")
    if compared is not None:
        real_us = args.real_ms * 1000
        print()
        print(f"TopChefClient (this checkout) against {args.compare}, per request:")
        print(
            f"{'request':16} {'compared us':>11} {'this us':>8} {'diff us':>8} "
            f"{'this/compared':>13} {f'diff/{args.real_ms:g} ms':>12}"
        )
        for call, (this, other) in by_call.items():
            this_us, other_us = 1e6 / this, 1e6 / other
            diff = this_us - other_us
            print(
                f"{call:16} {other_us:11.1f} {this_us:8.1f} {diff:+8.1f} "
                f"{this_us / other_us:13.2f} {diff / real_us:+12.1%}"
            )


if __name__ == "__main__":
    main()
