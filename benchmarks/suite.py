"""The benchmark suite: how fast, how cheap, how far the worker scales.

Every scenario runs its contenders in this one process, against the same server,
alternating, several times, and reports medians and ratios to a baseline measured in
the same run (absolute numbers are context only: the machine is shared and noisy).
Where the worker's own cost is measured (idle cost, memory), the server runs in a
separate process (``topchef-worker serve``) so that it is not counted.

Contenders: the worker with default and with tuned settings; the *ideal loop* (one
keep-alive session: GET next, PATCH WORKING, PATCH COMPLETED per job, nothing else);
and the *classic two-thread service* from TopChef's documentation, written correctly
for the real API (a daemon thread heartbeating every 30 s, another polling every 3 s
or 0.1 s and running each job inline).

Run: ``python benchmarks/suite.py [--quick] [--only 1,2] [--docs]``.  Writes
``benchmarks/results/results.json``, ``results.md`` and PNG plots; with ``--docs``
also ``docs/benchmarks.md`` and its plots.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import platform
import random
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import bench_handlers
import requests

from topchef_worker import TopChefClient, Worker
from topchef_worker.events import Event, JobClaimed
from topchef_worker.testing import CostModel, TopChefServer
from topchef_worker.testing._app import AppRequest

HERE = Path(__file__).parent
RESULTS = HERE / "results"
DOCS = HERE.parent / "docs"
JSON = {"Content-Type": "application/json"}


# -- setting up -------------------------------------------------------------------------


def new_service(client: TopChefClient, name: str = "bench", timeout: int | None = None) -> str:
    return client.create_service(
        name=name,
        description="benchmark",
        job_registration_schema={},
        job_result_schema={},
        timeout=timeout,
    ).id


def seed(server: TopChefServer, service_id: str, count: int, parameters: dict[str, Any]) -> None:
    """Submit jobs straight into the server's state, without HTTP (fast, same result)."""
    body = json.dumps({"parameters": parameters}).encode()
    request = AppRequest(
        method="POST",
        path=f"/services/{service_id}/jobs",
        headers={"content-type": "application/json"},
        body=body,
    )
    with server._lock:
        for _ in range(count):
            server.app.handle(request, "bench")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


# -- contenders ---------------------------------------------------------------------------


def worker_rate(
    url: str,
    service_id: str,
    jobs: int,
    handler: Callable[[dict[str, Any]], Any],
    **settings: Any,
) -> float:
    """Jobs/s of a Worker processing *jobs* queued jobs until the queue is empty."""
    worker = Worker(url, **settings)
    worker.handler(service_id)(handler)
    start = time.perf_counter()
    worker.run(until_idle=True)
    elapsed = time.perf_counter() - start
    done = worker.stats().completed
    assert done == jobs, (done, jobs)
    return done / elapsed


def ideal_rate(url: str, service_id: str, jobs: int) -> float:
    """The client-side limit for one poller."""
    session = requests.Session()
    start = time.perf_counter()
    done = 0
    while True:
        response = session.get(f"{url}/services/{service_id}/jobs/next", timeout=30)
        if response.status_code == 204:
            break
        job_url = f"{url}/jobs/{response.json()['data']['id']}"
        session.patch(job_url, data='{"status": "WORKING"}', headers=JSON, timeout=30)
        session.patch(
            job_url, data='{"status": "COMPLETED", "results": {}}', headers=JSON, timeout=30
        )
        done += 1
    elapsed = time.perf_counter() - start
    session.close()
    assert done == jobs
    return done / elapsed


def classic_rate(url: str, service_id: str, poll_every: float, window: float) -> float:
    """The documentation's two daemon threads, fixed for the real API, for *window* s."""
    stop = threading.Event()
    done = [0]
    service_url = f"{url}/services/{service_id}"

    def heartbeat() -> None:
        session = requests.Session()
        while not stop.is_set():
            session.patch(service_url, timeout=30)
            stop.wait(30)

    def poll() -> None:
        session = requests.Session()
        while not stop.is_set():
            response = session.get(f"{service_url}/jobs/next", timeout=30)
            if response.status_code == 200:
                job = response.json()["data"]
                job_url = f"{url}/jobs/{job['id']}"
                session.patch(job_url, json={"status": "WORKING"}, timeout=30)
                results = bench_handlers.noop(job["parameters"])
                session.patch(job_url, json={"status": "COMPLETED", "results": results}, timeout=30)
                done[0] += 1
            stop.wait(poll_every)

    threads = [threading.Thread(target=f, daemon=True) for f in (heartbeat, poll)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    stop.wait(window)
    stop.set()
    for thread in threads:
        thread.join()
    return done[0] / (time.perf_counter() - start)


TUNED = {"max_jobs": 8, "poll_interval": 0.2, "min_poll_interval": 0.002}


# -- scenarios ---------------------------------------------------------------------------


def throughput(quick: bool) -> dict[str, Any]:
    """1. No-op jobs per second, and 7a. requests per completed job."""
    jobs, repeat = (300, 2) if quick else (2000, 3)
    contenders: dict[str, Callable[[str, str], float]] = {
        "ideal loop": lambda url, sid: ideal_rate(url, sid, jobs),
        "worker max_jobs=1": lambda url, sid: worker_rate(
            url, sid, jobs, bench_handlers.noop, max_jobs=1
        ),
        "worker default (max_jobs=4)": lambda url, sid: worker_rate(
            url, sid, jobs, bench_handlers.noop
        ),
        "worker tuned (max_jobs=8)": lambda url, sid: worker_rate(
            url, sid, jobs, bench_handlers.noop, **TUNED
        ),
    }
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    requests_per_job: list[float] = []
    with TopChefServer(log_size=None) as server, TopChefClient(server.url) as client:
        for _ in range(repeat):
            for name, run in contenders.items():
                sid = new_service(client)
                seed(server, sid, jobs, {})
                server.clear_requests()
                rates[name].append(run(server.url, sid))
                if name.startswith("worker default"):
                    requests_per_job.append(len(server.requests) / jobs)
        classic = {}
        for label, every, window in (
            ("classic, polls every 0.1 s", 0.1, 3.0 if quick else 6.0),
            ("classic, polls every 3 s", 3.0, 6.0 if quick else 12.0),
        ):
            sid = new_service(client)
            seed(server, sid, 1000, {})
            classic[label] = classic_rate(server.url, sid, every, window)
    ideal = median(rates["ideal loop"])
    table = {name: median(values) for name, values in rates.items()} | classic
    return {
        "jobs": jobs,
        "repeat": repeat,
        "jobs_per_s": table,
        "ratio_to_ideal": {name: rate / ideal for name, rate in table.items()},
        "requests_per_job_default_worker": median(requests_per_job),
    }


def scaling(quick: bool) -> dict[str, Any]:
    """2. 50 ms jobs at max_jobs 1..64: jobs/s and efficiency vs perfect scaling."""
    sizes = [1, 2, 4, 8, 16, 32, 64]
    rates: dict[int, list[float]] = {size: [] for size in sizes}
    repeat = 1 if quick else 2
    with TopChefServer() as server, TopChefClient(server.url) as client:
        for _ in range(repeat):
            for size in sizes:
                jobs = max(20, 6 * size) if quick else max(40, 12 * size)
                sid = new_service(client)
                seed(server, sid, jobs, {})
                rates[size].append(
                    worker_rate(server.url, sid, jobs, bench_handlers.sleep_50ms, max_jobs=size)
                )
    base = median(rates[1])
    return {
        "jobs_per_s": {size: median(rates[size]) for size in sizes},
        "speedup": {size: median(rates[size]) / base for size in sizes},
        "efficiency": {size: median(rates[size]) / (base * size) for size in sizes},
    }


def cpu_pools(quick: bool) -> dict[str, Any]:
    """3. CPU-bound jobs: a process pool against threads, and the cores each uses."""
    jobs = 24 if quick else 60
    results: dict[str, dict[str, float]] = {}
    context = multiprocessing.get_context("spawn")
    with TopChefServer() as server, TopChefClient(server.url) as client:
        for label in ("threads (2)", "processes (2)", "threads (2)", "processes (2)"):
            sid = new_service(client)
            seed(server, sid, jobs, {"n": 300_000})
            pool: Any = (
                ProcessPoolExecutor(2, mp_context=context)
                if label.startswith("processes")
                else ThreadPoolExecutor(2)
            )
            with pool:
                pool.submit(int).result()  # start the processes before the clock
                before = resource.getrusage(resource.RUSAGE_SELF)
                children = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                rate = worker_rate(
                    server.url, sid, jobs, bench_handlers.burn, max_jobs=2, job_pool=pool
                )
                wall = time.perf_counter() - start
                after = resource.getrusage(resource.RUSAGE_SELF)
            children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) + (
                children_after.ru_utime
                + children_after.ru_stime
                - children.ru_utime
                - children.ru_stime
            )
            entry = results.setdefault(label, {"jobs_per_s": 0.0, "cores_busy": 0.0})
            entry["jobs_per_s"] = max(entry["jobs_per_s"], rate)
            entry["cores_busy"] = max(entry["cores_busy"], cpu / wall)
    return results | {
        "speedup": results["processes (2)"]["jobs_per_s"] / results["threads (2)"]["jobs_per_s"]
    }


def pickup_latency(quick: bool) -> dict[str, Any]:
    """4. Submission to WORKING, idle (after a long empty spell) and busy."""
    samples = 8 if quick else 25
    burst = 100 if quick else 300
    out: dict[str, Any] = {}
    with TopChefServer() as server, TopChefClient(server.url) as client:
        for label, settings in (("default", {}), ("tuned", TUNED)):
            idle, busy = _latencies(server, client, label, settings, samples, burst)
            out[label] = {
                name: {
                    "p50": percentile(values, 0.5),
                    "p95": percentile(values, 0.95),
                    "p99": percentile(values, 0.99),
                    "samples": values,
                }
                for name, values in (("idle", idle), ("busy", busy))
            }
    return out


def _latencies(
    server: TopChefServer,
    client: TopChefClient,
    label: str,
    settings: dict[str, Any],
    samples: int,
    burst: int,
) -> tuple[list[float], list[float]]:
    sid = new_service(client, name=label)
    submitted: dict[str, float] = {}
    claimed: dict[str, float] = {}
    seen = threading.Condition()

    def record(event: Event) -> None:
        if isinstance(event, JobClaimed):
            with seen:
                claimed[event.job_id] = time.time()
                seen.notify_all()

    worker = Worker(server.url, **settings)
    worker.add_listener(record)
    worker.handler(sid)(bench_handlers.noop)
    rng = random.Random(4)
    with worker:
        threading.Event().wait(3.0)  # long enough for polling to back off fully
        idle = []
        for _ in range(samples):
            threading.Event().wait(rng.uniform(0.3, 1.5))
            start = time.time()
            job_id = client.submit_job(sid, {}).id
            submitted[job_id] = start
            with seen:
                seen.wait_for(lambda job_id=job_id: job_id in claimed, 30)
            idle.append(claimed[job_id] - start)
        busy_ids = []
        for _ in range(burst):
            start = time.time()
            job_id = client.submit_job(sid, {}).id
            submitted[job_id] = start
            busy_ids.append(job_id)
        with seen:
            seen.wait_for(lambda: all(j in claimed for j in busy_ids), 60)
    return idle, [claimed[j] - submitted[j] for j in busy_ids]


class CountingSession(requests.Session):
    """Counts requests, and remembers when each service was checked in."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.count = 0
        self.beats: dict[str, list[float]] = {}

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        with self.lock:
            self.count += 1
            if (
                request.method == "PATCH"
                and "/services/" in (request.url or "")
                and not request.body
            ):
                self.beats.setdefault(str(request.url), []).append(time.monotonic())
        return super().send(request, **kwargs)


class ServerProcess:
    """``topchef-worker serve`` in a separate process, so its cost is not ours."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "topchef_worker", "serve", "--port", str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.process.stdout.readline()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        assert self.process.stdout is not None
        self.process.stdout.close()


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def idle_cost(quick: bool) -> dict[str, Any]:
    """5. CPU and requests per minute while idle; threads; heartbeat punctuality."""
    window, warm_up = (12.0, 3.0) if quick else (25.0, 12.0)
    out: dict[str, Any] = {}
    for services in (1, 200):
        server = ServerProcess()
        try:
            client = TopChefClient(server.url)
            ids = [new_service(client, f"s{i}") for i in range(services)]  # timeout 30 s
            session = CountingSession()
            worker = Worker(server.url, session=session)
            for sid in ids:
                worker.handler(sid)(bench_handlers.noop)
            threads_before = threading.active_count()
            with worker:
                threading.Event().wait(warm_up)  # past start-up and the poll backoff
                session.beats.clear()
                count, cpu = session.count, time.process_time()
                threading.Event().wait(window)
                requests_made = session.count - count
                cpu_used = time.process_time() - cpu
                threads = threading.active_count() - threads_before
                gaps = [
                    max(b - a for a, b in itertools.pairwise(times))
                    for times in session.beats.values()
                    if len(times) > 1
                ]
            out[f"{services} service(s)"] = {
                "cpu_s_per_min": cpu_used * 60 / window,
                "requests_per_min": requests_made * 60 / window,
                "threads": threads,
                "worst_heartbeat_gap_s": max(gaps) if gaps else None,
                "service_timeout_s": 30,
            }
            client.close()
        finally:
            server.close()
    return out


def memory(quick: bool) -> dict[str, Any]:
    """6. RSS of the worker's process after 1k and after 20k jobs."""
    first, total = (200, 2000) if quick else (1000, 20000)
    server = ServerProcess()
    try:
        client = TopChefClient(server.url)
        sid = new_service(client)
        readings = {}
        done = 0
        for target in (first, total):
            for _ in range(target - done):
                client.submit_job(sid, {})
            worker_rate(server.url, sid, target - done, bench_handlers.noop)
            done = target
            readings[target] = rss_mib()
        client.close()
    finally:
        server.close()
    growth = (readings[total] - readings[first]) / ((total - first) / 1000)
    return {"rss_mib": readings, "growth_mib_per_1k_jobs": growth}


def finish_history(server: TopChefServer, service_id: str, count: int) -> None:
    """Give a service *count* finished jobs, straight into the server's state."""
    seed(server, service_id, count, {})
    done = json.dumps({"status": "COMPLETED", "results": {}}).encode()
    with server._lock:
        for job in list(server.app.services[service_id].jobs):
            request = AppRequest(
                method="PATCH",
                path=f"/jobs/{job.id}",
                headers={"content-type": "application/json"},
                body=done,
            )
            server.app.handle(request, "bench")


def big_service(quick: bool) -> dict[str, Any]:
    """7. Services with 1,000 and 10,000 finished jobs, on a server that costs what
    the real one does: every poll (jobs/next or /queue) and detail loads the whole
    history (CostModel: a poll 25 ms at 1,000 jobs, 228 ms at 10,000)."""
    out: dict[str, dict[str, float]] = {}
    sizes = ((1000, 20), (10_000, 10)) if quick else ((1000, 200), (10_000, 40))
    with TopChefServer(cost=CostModel()) as server, TopChefClient(server.url) as client:
        for history, jobs in sizes:
            contenders: dict[str, Callable[[str], float]] = {
                "ideal loop": lambda sid, jobs=jobs: ideal_rate(server.url, sid, jobs),
                "worker default (max_jobs=4)": lambda sid, jobs=jobs: worker_rate(
                    server.url, sid, jobs, bench_handlers.noop
                ),
                "worker max_jobs=10": lambda sid, jobs=jobs: worker_rate(
                    server.url, sid, jobs, bench_handlers.noop, max_jobs=10
                ),
            }
            rates = {}
            for label, run in contenders.items():
                sid = new_service(client)
                finish_history(server, sid, history)
                seed(server, sid, jobs, {})
                rates[label] = run(sid)
            out[str(history)] = rates
    return {"jobs_per_s": out}


SCENARIOS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "1": throughput,
    "2": scaling,
    "3": cpu_pools,
    "4": pickup_latency,
    "5": idle_cost,
    "6": memory,
    "7": big_service,
}


# -- reporting ----------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    lines = [f"Measured {results['when']} on {results['machine']}.", ""]
    if "1" in results:
        r = results["1"]
        lines += [
            f"**1. Throughput, no-op jobs** ({r['jobs']} jobs, median of {r['repeat']} runs)",
            "",
            "| contender | jobs/s | x ideal loop |",
            "|---|---:|---:|",
        ]
        for name, rate in r["jobs_per_s"].items():
            lines.append(f"| {name} | {rate:.1f} | {r['ratio_to_ideal'][name]:.2f} |")
        per_job = r["requests_per_job_default_worker"]
        lines += ["", f"Requests per completed job (default worker): {per_job:.2f}", ""]
    if "2" in results:
        r = results["2"]
        lines += [
            "**2. Scaling, 50 ms jobs**",
            "",
            "| max_jobs | jobs/s | speed-up | efficiency |",
            "|---:|---:|---:|---:|",
        ]
        for size, rate in r["jobs_per_s"].items():
            lines.append(
                f"| {size} | {rate:.1f} | {r['speedup'][size]:.1f}x | {r['efficiency'][size]:.0%} |"
            )
        lines += ["", "![scaling](img/scaling.png)", ""]
    if "3" in results:
        r = results["3"]
        lines += [
            "**3. CPU-bound jobs, 2 workers**",
            "",
            "| pool | jobs/s | cores busy |",
            "|---|---:|---:|",
        ]
        for name in ("threads (2)", "processes (2)"):
            lines.append(f"| {name} | {r[name]['jobs_per_s']:.1f} | {r[name]['cores_busy']:.2f} |")
        lines += ["", f"Process pool speed-up: {r['speedup']:.2f}x", ""]
    if "4" in results:
        r = results["4"]
        lines += [
            "**4. Pickup latency** (submission to WORKING)",
            "",
            "| settings | when | p50 | p95 | p99 |",
            "|---|---|---:|---:|---:|",
        ]
        for label, entry in r.items():
            for when in ("idle", "busy"):
                e = entry[when]
                p50, p95, p99 = (e[p] * 1000 for p in ("p50", "p95", "p99"))
                lines.append(f"| {label} | {when} | {p50:.0f} ms | {p95:.0f} ms | {p99:.0f} ms |")
        lines += ["", "![latency](img/latency.png)", ""]
    if "5" in results:
        r = results["5"]
        lines += [
            "**5. Idle cost** (server in another process)",
            "",
            "| services | CPU s/min | requests/min | threads | worst check-in gap (timeout 30 s) |",
            "|---|---:|---:|---:|---:|",
        ]
        for label, e in r.items():
            gap = (
                "n/a"
                if e["worst_heartbeat_gap_s"] is None
                else f"{e['worst_heartbeat_gap_s']:.2f} s"
            )
            cpu, rate = e["cpu_s_per_min"], e["requests_per_min"]
            lines.append(f"| {label} | {cpu:.2f} | {rate:.0f} | {e['threads']} | {gap} |")
        lines.append("")
    if "6" in results:
        r = results["6"]
        rss = ", ".join(f"{n} jobs: {mib:.1f} MiB" for n, mib in r["rss_mib"].items())
        lines += [
            "**6. Memory**",
            "",
            f"RSS after {rss}; growth {r['growth_mib_per_1k_jobs']:.3f} MiB per 1k jobs.",
            "",
        ]
    if "7" in results:
        r = results["7"]["jobs_per_s"]
        lines += [
            (
                "**7. Services with a long history** (the real server's cost modelled: a "
                "poll 25 ms at 1,000 jobs, 228 ms at 10,000)"
            ),
            "",
            "| finished jobs | contender | jobs/s | x ideal loop |",
            "|---:|---|---:|---:|",
        ]
        for history, rates in r.items():
            ideal = rates["ideal loop"]
            lines += [
                f"| {int(history):,} | {name} | {rate:.1f} | {rate / ideal:.2f} |"
                for name, rate in rates.items()
            ]
        lines.append("")
    return "\n".join(lines)


def plots(results: dict[str, Any], directory: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots", file=sys.stderr)
        return
    directory.mkdir(parents=True, exist_ok=True)
    if "2" in results:
        sizes = [int(size) for size in results["2"]["jobs_per_s"]]
        rates = list(results["2"]["jobs_per_s"].values())
        figure, axis = plt.subplots(figsize=(6, 4))
        axis.plot(sizes, rates, "o-", label="worker")
        axis.plot(sizes, [rates[0] * s for s in sizes], "--", label="perfect scaling")
        axis.set(xscale="log", yscale="log", xlabel="max_jobs", ylabel="jobs/s (50 ms jobs)")
        axis.set_xticks(sizes, [str(s) for s in sizes])
        axis.legend()
        figure.tight_layout()
        figure.savefig(directory / "scaling.png", dpi=100)
        plt.close(figure)
    if "4" in results:
        figure, axis = plt.subplots(figsize=(6, 4))
        for label, entry in results["4"].items():
            for when in ("idle", "busy"):
                values = sorted(v * 1000 for v in entry[when]["samples"])
                axis.plot(
                    values,
                    [(i + 1) / len(values) for i in range(len(values))],
                    label=f"{label}, {when}",
                )
        axis.set(xscale="log", xlabel="submission to WORKING (ms)", ylabel="fraction of jobs")
        axis.legend()
        figure.tight_layout()
        figure.savefig(directory / "latency.png", dpi=100)
        plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small runs, for a smoke test")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="e.g. 1,2")
    parser.add_argument("--docs", action="store_true", help="also write docs/benchmarks.md")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} cores, Python {platform.python_version()}",
        "quick": args.quick,
    }
    for key in args.only.split(","):
        print(
            f"scenario {key}: {SCENARIOS[key].__doc__.splitlines()[0]}", file=sys.stderr, flush=True
        )
        started = time.perf_counter()
        results[key] = SCENARIOS[key](args.quick)
        print(f"  done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps(results, indent=2, default=str))
    table = markdown(results)
    (RESULTS / "results.md").write_text(table)
    plots(results, RESULTS / "img")
    if args.docs:
        intro = (
            (DOCS / "benchmarks.intro.md").read_text()
            if (DOCS / "benchmarks.intro.md").exists()
            else ""
        )
        (DOCS / "benchmarks.md").write_text(intro + table + "\n")
        plots(results, DOCS / "img")
    print(table)


if __name__ == "__main__":
    main()
