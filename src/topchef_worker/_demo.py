"""The demo: a simulated NMR free-induction-decay measurement as a TopChef service.

Each job waits out an acquisition (as an instrument would), simulates a decaying,
noisy signal at a given frequency, transforms it with a radix-2 FFT and reports the
spectrum's peak: a small but real computation, with a schema for parameters and
results.  A job whose point count is not a power of two fails in the handler, to
show how failures are reported: the exception's type and message become the job's
results on the server.
"""

from __future__ import annotations

import cmath
import math
import random
import statistics
import sys
import threading
import time
from typing import IO, Any

from ._client import TopChefClient
from ._worker import Worker
from .events import Event, JobCompleted, JobFailed

__all__ = ["FID_PARAMETERS", "FID_RESULTS", "fid", "run_demo"]

FID_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "frequency_hz": {"type": "number"},
        "t2_ms": {"type": "number", "minimum": 0.1},
        "points": {"type": "integer", "minimum": 16, "maximum": 4096},
        "dwell_us": {"type": "number", "minimum": 1},
        "noise": {"type": "number", "minimum": 0},
        "seed": {"type": "integer"},
        "acquisition_ms": {"type": "number", "minimum": 0, "maximum": 10000},
    },
    "required": ["frequency_hz", "t2_ms", "points", "dwell_us"],
}
FID_RESULTS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "peak_hz": {"type": "number"},
        "amplitude": {"type": "number"},
        "snr": {"type": "number"},
        "points": {"type": "integer"},
        "error": {"type": "string"},
        "error_type": {"type": "string"},
    },
}


def _fft(values: list[complex]) -> list[complex]:
    n = len(values)
    if n == 1:
        return values
    even, odd = _fft(values[0::2]), _fft(values[1::2])
    twiddled = [cmath.exp(-2j * math.pi * k / n) * odd[k] for k in range(n // 2)]
    return [even[k] + twiddled[k] for k in range(n // 2)] + [
        even[k] - twiddled[k] for k in range(n // 2)
    ]


def fid(parameters: dict[str, Any]) -> dict[str, Any]:
    """Simulate a free induction decay and report its spectrum's peak."""
    time.sleep(parameters.get("acquisition_ms", 0) / 1000.0)  # the instrument's time
    points = parameters["points"]
    if points & (points - 1):
        raise ValueError(f"points must be a power of two for the FFT, got {points}")
    dwell = parameters["dwell_us"] * 1e-6
    t2 = parameters["t2_ms"] * 1e-3
    frequency = parameters["frequency_hz"]
    rng = random.Random(parameters.get("seed", 0))
    noise = parameters.get("noise", 0.05)
    signal = [
        cmath.exp(2j * math.pi * frequency * k * dwell) * math.exp(-k * dwell / t2)
        + complex(rng.gauss(0, noise), rng.gauss(0, noise))
        for k in range(points)
    ]
    magnitudes = [abs(value) for value in _fft(signal)]
    peak = max(range(points), key=magnitudes.__getitem__)
    floor = statistics.median(magnitudes) or 1e-12
    bin_hz = 1.0 / (points * dwell)
    peak_hz = peak * bin_hz if peak < points // 2 else (peak - points) * bin_hz
    return {
        "peak_hz": round(peak_hz, 3),
        "amplitude": round(magnitudes[peak] / points, 6),
        "snr": round(magnitudes[peak] / floor, 3),
        "points": points,
    }


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def run_demo(
    url: str,
    *,
    jobs: int = 200,
    max_jobs: int = 4,
    acquisition_ms: float = 60.0,
    out: IO[str] | None = None,
) -> dict[str, Any]:
    """Register the FID service on *url*, submit *jobs* jobs (each acquiring for
    *acquisition_ms*), run a worker until they are done, print progress and a
    summary to *out*, and return the summary."""
    out = out or sys.stdout
    # The server is on this machine: a short lease_settle (see Worker) is plenty.
    worker = Worker(url, max_jobs=max_jobs, poll_interval=0.2, lease_settle=0.1)
    worker.handler(
        name="FID",
        description="Simulated free induction decay: peak of the spectrum",
        job_registration_schema=FID_PARAMETERS,
        job_result_schema=FID_RESULTS,
        service_timeout=30,
    )(fid)
    finished: dict[str, float] = {}
    failures: list[str] = []
    lock = threading.Condition()  # listeners run on a thread of their own: wait for them

    def record(event: Event) -> None:
        if isinstance(event, (JobCompleted, JobFailed)):
            with lock:
                lock.notify_all()
                finished[event.job_id] = event.time
                if isinstance(event, JobFailed):
                    failures.append(event.error)

    worker.add_listener(record)
    client = TopChefClient(url)
    print(
        f"{jobs} jobs, each a {acquisition_ms:g} ms acquisition and an FFT; the worker "
        f"runs up to max_jobs={max_jobs} at once.\n'in flight' counts the jobs it has "
        f"claimed and not yet reported (at most {max_jobs}); every 25th job fails on "
        "purpose.",
        file=out,
        flush=True,
    )
    with worker:
        progress = _Progress(out, jobs, worker, finished, failures, lock, time.time())
        progress.start()
        try:
            return _submit_and_run(
                worker, client, jobs, acquisition_ms, out, finished, failures, progress
            )
        finally:
            progress.stop()
            client.close()


def _submit_and_run(
    worker: Worker,
    client: TopChefClient,
    jobs: int,
    acquisition_ms: float,
    out: IO[str],
    finished: dict[str, float],
    failures: list[str],
    progress: _Progress,
) -> dict[str, Any]:
    if not worker.wait_ready(timeout=30):
        raise RuntimeError("the worker did not start within 30 s")
    (service,) = worker.services
    rng = random.Random(2017)
    submitted: dict[str, float] = progress.submitted
    start = time.time()
    failed_job = None
    for index in range(jobs):
        points = 256 if index % 25 else 200  # every 25th job cannot be transformed
        job = client.submit_job(
            service.id,
            {
                "frequency_hz": round(rng.uniform(-2000, 2000), 1),
                "t2_ms": round(rng.uniform(5, 50), 2),
                "points": points,
                "dwell_us": 100,
                "noise": 0.05,
                "seed": index,
                "acquisition_ms": acquisition_ms,
            },
        )
        submitted[job.id] = time.time()
        failed_job = failed_job or (job.id if points == 200 else None)
    worker.wait_for(lambda stats: stats.completed + stats.failed >= jobs, timeout=3600)
    elapsed = time.time() - start
    with progress.lock:  # the last events may still be on their way to the listener
        progress.lock.wait_for(lambda: len(finished) >= jobs, timeout=5.0)
    progress.stop()
    latencies = [finished[job] - submitted[job] for job in submitted if job in finished]
    summary: dict[str, Any] = {
        "service": service.id,
        "jobs": jobs,
        "completed": worker.stats().completed,
        "failed": worker.stats().failed,
        "seconds": elapsed,
        "throughput": len(finished) / elapsed if elapsed else 0.0,
        "p50": _percentile(latencies, 0.50),
        "p95": _percentile(latencies, 0.95),
        "p99": _percentile(latencies, 0.99),
    }
    print(
        f"jobs: {summary['jobs']}  completed: {summary['completed']}  "
        f"failed: {summary['failed']}  in {elapsed:.2f} s  "
        f"({summary['throughput']:.0f} jobs/s with max_jobs={worker.max_jobs})\n"
        f"latency from submission to outcome: p50 {summary['p50'] * 1000:.0f} ms, "
        f"p95 {summary['p95'] * 1000:.0f} ms, p99 {summary['p99'] * 1000:.0f} ms",
        file=out,
    )
    if failed_job is not None:
        failed = client.job(failed_job)
        print(f"a failed job on the server: {failed.status.value} {failed.results}", file=out)
    return summary


class _Progress:
    """Live progress on a terminal; a plain line every second elsewhere."""

    def __init__(
        self,
        out: IO[str],
        total: int,
        worker: Worker,
        finished: dict[str, float],
        failures: list[str],
        lock: threading.Condition,
        start: float,
    ) -> None:
        self.out, self.total, self.worker = out, total, worker
        self.finished, self.failures, self.lock, self.start_time = finished, failures, lock, start
        self.submitted: dict[str, float] = {}  # job id -> when it was submitted
        self.tty = hasattr(out, "isatty") and out.isatty()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="topchef-demo-progress")

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        if self.done.is_set():
            return
        self.done.set()
        self.thread.join()
        self._show(final=True)

    def _loop(self) -> None:
        self._show()
        while not self.done.wait(0.1 if self.tty else 1.0):
            self._show()

    def _show(self, final: bool = False) -> None:
        with self.lock:
            done, failed = len(self.finished), len(self.failures)
        elapsed = max(time.time() - self.start_time, 1e-9)
        line = (
            f"submitted {len(self.submitted)}/{self.total}  done {done}/{self.total}  "
            f"failed {failed}  in flight {self.worker.stats().in_flight}/{self.worker.max_jobs}"
            f"  rate {done / elapsed:.0f}/s"
        )
        if self.tty:
            print("\r" + line, end="\n" if final else "", file=self.out, flush=True)
        else:
            print(line, file=self.out, flush=True)
