"""A fleet: W worker processes serving one service, and what one of them dying does.

TopChef has no atomic claim, so workers polling one service can run the same job.
This measures, for each W, how many executions the jobs took (from a log every
execution appends to; see ``tests/scripts/fleet_worker.py``), how many jobs ran more
than once, whether every job ended COMPLETED, and the throughput, with its ratio to
W=1's in the same run (absolute figures are context only: the machine is shared).

Two scenarios, each its own flag, W=2: ``--kill`` kills -9 the process that executes
jobs (service timeout 5 s) and ``--sigterm`` stops it cleanly; both measure the
seconds until the other process starts a job, and count the jobs run twice.

Run: ``python benchmarks/fleet.py [--workers 1 2 4] [--jobs 200] [--max-jobs 4]
[--job-seconds 0.02] [--shared] [--cost] [--kill] [--sigterm] [--json PATH]
[--markdown PATH] [--check]``.  With ``--kill`` or ``--sigterm`` and no ``--workers``,
only the scenarios run.  ``--check`` exits 1 unless the active/standby targets hold
(see :func:`missed_targets`).
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import attrs

from topchef_worker import TopChefClient
from topchef_worker.testing import CostModel, LoggedRequest, TopChefServer

SCRIPT = Path(__file__).resolve().parent.parent / "tests" / "scripts" / "fleet_worker.py"
TERMINAL = frozenset({"COMPLETED", "ERROR"})
#: How many jobs must be COMPLETED before a scenario signals the executing process.
BEFORE_SIGNAL = 4
#: The service timeout in the kill -9 scenario: a standby takes over after it.
KILL_TIMEOUT = 5


@attrs.frozen
class Run:
    """One execution of a job; ``end`` is None when its process died mid-job."""

    job_id: str
    pid: int
    start: float
    end: float | None


def read_runs(path: Path) -> list[Run]:
    """The executions in the log, pairing each ``end`` with its ``start``."""
    if not path.exists():
        return []
    runs: list[Run] = []
    open_runs: defaultdict[tuple[str, int], list[int]] = defaultdict(list)
    for line in path.read_text().splitlines():
        kind, job_id, pid, stamp = line.split()
        key = (job_id, int(pid))
        if kind == "start":
            open_runs[key].append(len(runs))
            runs.append(Run(job_id, int(pid), float(stamp), None))
        else:
            index = open_runs[key].pop(0)
            runs[index] = attrs.evolve(runs[index], end=float(stamp))
    return runs


def duplicated(runs: list[Run]) -> dict[str, int]:
    """The jobs executed more than once, and how many times."""
    return {job: n for job, n in Counter(run.job_id for run in runs).items() if n > 1}


class Fleet:
    """A fresh server with one service of *jobs* queued jobs, and worker processes."""

    def __init__(self, args: argparse.Namespace, jobs: int, timeout: int | None) -> None:
        self.args = args
        self.tmp = tempfile.TemporaryDirectory(prefix="fleet-")
        self.log = Path(self.tmp.name) / "runs.log"
        # A short request log: the waits below copy it after every request.
        self.server = TopChefServer(log_size=16, cost=CostModel() if args.cost else None)
        self.server.start()
        self.client = TopChefClient(self.server.url)
        self.service_id = self.client.create_service(
            name="fleet",
            description="fleet benchmark",
            job_registration_schema={"type": "object"},
            job_result_schema={"type": "object"},
        ).id
        self.timeout = 30 if timeout is None else timeout  # the server's default is 30 s
        if timeout is not None:
            self.client.update_service(self.service_id, timeout=timeout)
        for n in range(jobs):
            self.client.submit_job(self.service_id, {"n": n})
        self.processes: list[subprocess.Popen[bytes]] = []

    def launch(self, count: int, job_seconds: float) -> float:
        """Start *count* workers at once; return the Unix time of the launch."""
        launched = time.time()
        for i in range(count):
            command = [sys.executable, str(SCRIPT), self.server.url, self.service_id]
            command += [str(self.log), f"--max-jobs={self.args.max_jobs}"]
            command += [f"--job-seconds={job_seconds}", *(["--shared"] if self.args.shared else [])]
            out = Path(self.tmp.name) / f"worker-{i}"
            with open(f"{out}.out", "wb") as stdout, open(f"{out}.err", "wb") as stderr:
                self.processes.append(subprocess.Popen(command, stdout=stdout, stderr=stderr))
        return launched

    def statuses(self) -> dict[str, int]:
        return dict(Counter(str(job.status) for job in self.client.jobs(self.service_id)))

    def wait(self, condition: str, timeout: float, stall: float) -> dict[str, int]:
        """Wait until every job is COMPLETED or ERROR (*condition* "done"), or until
        BEFORE_SIGNAL are COMPLETED and a full batch is WORKING ("started": a signal
        then catches jobs mid-run, not between two batches); give up after *timeout* s,
        or once no job changed status for *stall* s.  Returns the jobs' statuses."""
        jobs = self.server.app.services[self.service_id].jobs

        def holds(_: list[LoggedRequest]) -> bool:
            # Called by wait_for_requests with the server's lock held: read the state
            # directly, and take no lock here (it is not reentrant).
            if condition == "started":
                status = Counter(job.status for job in jobs)
                busy = min(self.args.max_jobs, len(jobs) - status["COMPLETED"] - status["ERROR"])
                return status["COMPLETED"] >= BEFORE_SIGNAL and status["WORKING"] >= busy
            return all(job.status in TERMINAL for job in jobs)

        deadline = time.monotonic() + timeout
        seen: dict[str, int] | None = None
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                self.server.wait_for_requests(holds, min(stall, remaining))
                break
            except TimeoutError:
                now = self.statuses()
                if now == seen:
                    break
                seen = now
        return self.statuses()

    def pid_executing(self) -> int:
        """The process to signal: one mid-job if any, the busiest first."""
        runs = read_runs(self.log)
        if not runs:
            raise RuntimeError("no job ran before the signal; see the workers' exit codes")
        busy = Counter(run.pid for run in runs)
        mid_job = {run.pid for run in runs if run.end is None}
        return max(busy, key=lambda pid: (pid in mid_job, busy[pid]))

    def close(self) -> list[int | None]:
        """SIGTERM the workers still running, wait for them; return the exit codes.
        A worker that failed (exit code above 0) has its log's tail shown."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for i, process in enumerate(self.processes):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.returncode > 0:
                tail = (Path(self.tmp.name) / f"worker-{i}.err").read_text()[-2000:]
                print(f"worker {process.pid} exited {process.returncode}:\n{tail}", file=sys.stderr)
        self.client.close()
        self.server.stop()
        self.tmp.cleanup()
        return [process.returncode for process in self.processes]


def sweep_one(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    """W workers on a fresh server: executions, duplicates, throughput."""
    fleet = Fleet(args, args.jobs, None)
    try:
        launched = fleet.launch(workers, args.job_seconds)
        statuses = fleet.wait("done", max(60.0, 4 * args.jobs * args.job_seconds), 10.0)
        wall = time.time() - launched
        runs = read_runs(fleet.log)
    finally:
        codes = fleet.close()
    twice = duplicated(runs)
    ends = [run.end for run in runs if run.end is not None]
    span = max(ends) - min(run.start for run in runs) if ends else 0.0
    jobs_done = len({run.job_id for run in runs if run.end is not None})
    return {
        "workers": workers,
        "executions": len(runs),
        "jobs_run_more_than_once": len(twice),
        "max_runs_of_a_job": max(twice.values(), default=1 if runs else 0),
        "processes_executing": len({run.pid for run in runs}),
        "all_completed": statuses == {"COMPLETED": args.jobs},
        "statuses": statuses,
        "jobs_per_s": jobs_done / span if span > 0 else 0.0,
        "wall_s": wall,
        "exit_codes": codes,
    }


def scenario(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """W=2; once jobs ran, kill -9 (``kill``) or SIGTERM (``sigterm``) the process
    executing jobs; the seconds until the other one starts a job, and duplicates."""
    kill = kind == "kill"
    fleet = Fleet(args, args.scenario_jobs, KILL_TIMEOUT if kill else None)
    stall = fleet.timeout + 15.0  # longer than any takeover should take
    try:
        fleet.launch(2, 0.5)
        fleet.wait("started", 60.0, stall)
        victim = fleet.pid_executing()
        process = next(p for p in fleet.processes if p.pid == victim)
        signalled = time.time()
        if kill:
            process.kill()
            process.wait()
        else:
            process.send_signal(signal.SIGTERM)
        statuses = fleet.wait("done", 120.0 + args.scenario_jobs, stall)
        runs = read_runs(fleet.log)
    finally:
        codes = fleet.close()
    in_flight = {
        r.job_id
        for r in runs
        if r.pid == victim and r.start < signalled and (r.end is None or r.end > signalled)
    }
    after = [r.start - signalled for r in runs if r.pid != victim and r.start > signalled]
    twice = duplicated(runs)
    return {
        "scenario": kind,
        "processes_executing_before": len({r.pid for r in runs if r.start < signalled}),
        "in_flight_at_signal": len(in_flight),
        "takeover_s": min(after, default=None),
        "all_completed": statuses == {"COMPLETED": args.scenario_jobs},
        "statuses": statuses,
        "jobs_run_more_than_once": len(twice),
        "of_which_in_flight_at_signal": len(set(twice) & in_flight),
        "exit_codes": codes,
    }


def table(rows: list[dict[str, Any]], columns: dict[str, str]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:.2f}"
        return "-" if value is None else str(value)

    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[key]) for key in columns) + " |" for row in rows]
    return "\n".join(lines)


def missed_targets(out: dict[str, Any]) -> list[str]:
    """The active/standby targets: W workers together run every job once, with at
    least 0.9x one worker's throughput; after kill -9 the other serves within the
    service timeout plus a few seconds and only the jobs running at the kill run
    again; after SIGTERM it serves within 5 s and nothing runs twice."""
    missed = []
    for row in out.get("fleet", []):
        w = row["workers"]
        if row["jobs_run_more_than_once"] or not row["all_completed"]:
            missed.append(f"W={w}: {row['jobs_run_more_than_once']} jobs ran more than once")
        if row["ratio"] < 0.9:
            missed.append(f"W={w}: throughput {row['ratio']:.2f}x one worker's (< 0.9x)")
    for row in out.get("scenarios", []):
        kind, took = row["scenario"], row["takeover_s"]
        bound = KILL_TIMEOUT + 5.0 if kind == "kill" else 5.0
        if took is None or took > bound:
            missed.append(f"{kind}: the other worker served after {took} s (> {bound:g} s)")
        if not row["all_completed"]:
            missed.append(f"{kind}: not every job ended COMPLETED: {row['statuses']}")
        again = row["jobs_run_more_than_once"] - row["of_which_in_flight_at_signal"]
        if again or (kind == "sigterm" and row["jobs_run_more_than_once"]):
            missed.append(f"{kind}: {row['jobs_run_more_than_once']} jobs ran more than once")
    return missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=None)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--max-jobs", type=int, default=4)
    parser.add_argument("--job-seconds", type=float, default=0.02)
    parser.add_argument("--shared", action="store_true", help="workers get exclusive=False")
    parser.add_argument("--cost", action="store_true", help="the server costs what TopChef does")
    parser.add_argument("--kill", action="store_true", help="the kill -9 scenario")
    parser.add_argument("--sigterm", action="store_true", help="the SIGTERM scenario")
    parser.add_argument("--scenario-jobs", type=int, default=40, help="jobs of 0.5 s")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 unless the active/standby targets hold"
    )
    args = parser.parse_args()
    workers = args.workers or ([] if args.kill or args.sigterm else [1, 2, 4])

    out: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    tables: list[str] = []
    sweep = [sweep_one(args, w) for w in workers]
    if sweep:
        base = next((row for row in sweep if row["workers"] == 1), sweep[0])
        for row in sweep:
            row["ratio"] = row["jobs_per_s"] / base["jobs_per_s"] if base["jobs_per_s"] else 0.0
        columns = {
            "workers": "W",
            "executions": "executions",
            "jobs_run_more_than_once": "jobs run >1",
            "max_runs_of_a_job": "max runs of a job",
            "processes_executing": "processes executing",
            "all_completed": "all COMPLETED",
            "jobs_per_s": "jobs/s (first start → last end)",
            "wall_s": "wall s (launch → done)",
            "ratio": f"ratio to W={base['workers']}",
        }
        tables.append(table(sweep, columns))
        out["fleet"] = sweep
    scenarios = [scenario(args, kind) for kind in ("kill", "sigterm") if getattr(args, kind)]
    if scenarios:
        columns = {
            "scenario": "W=2",
            "processes_executing_before": "processes executing before",
            "in_flight_at_signal": "jobs in flight at signal",
            "takeover_s": "s until the other starts a job",
            "all_completed": "all COMPLETED",
            "jobs_run_more_than_once": "jobs run >1",
            "of_which_in_flight_at_signal": "of which in flight at signal",
            "exit_codes": "exit codes",
        }
        tables.append(table(scenarios, columns))
        out["scenarios"] = scenarios
    text = "\n\n".join(tables) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    if args.check:
        missed = missed_targets(out)
        for line in missed:
            print(f"target missed: {line}", file=sys.stderr)
        if missed:
            sys.exit(1)
        print("every target holds")


if __name__ == "__main__":
    main()
