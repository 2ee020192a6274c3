"""What the journal and the outbox cost per job: JSON-lines logs against SQLite.

Per job the worker writes its journal twice (``claimed``, then ``done``) and, when it
keeps each outcome in the outbox until the server has it, its outbox twice (``put``,
then ``discard``).  Every write is durable before it returns.  The contenders:

- ``jsonl``: ``topchef_worker._ledger`` as shipped: one line appended and
  ``fdatasync``'d per change, compaction by atomic rewrite (counted in the time);
- ``sqlite-wal``: one table per file, WAL journal, ``synchronous=FULL`` (the setting
  under which a commit is durable), one statement per change in autocommit;
- ``sqlite-rollback``: the same with SQLite's default rollback journal;
- ``sqlite-wal-normal``: WAL with ``synchronous=NORMAL``, which survives a process
  crash but may lose the last commits on power loss: for reference only.

Each contender runs ``--jobs`` jobs in a fresh directory, the contenders alternate
(in a rotating order), ``--rounds`` times, and the median microseconds per job is
reported with its ratio to ``jsonl``.  Absolute figures depend on the disk and on
what else writes to it: run it where the files will live (``--dir``).

Run: ``python benchmarks/ledger_cost.py [--jobs 2000] [--rounds 5] [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from topchef_worker import JobStatus
from topchef_worker._ledger import Journal, Outbox, Outcome

SERVICE = str(uuid.uuid4())
#: A modest result, about 500 bytes as JSON.
RESULTS: dict[str, Any] = {"sum": 3, "spectrum": [round(0.1 * i, 6) for i in range(60)]}


class SqliteJournal:
    """The journal on SQLite: claims in one table, a row per open claim."""

    def __init__(self, path: Path, journal_mode: str, synchronous: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute(f"PRAGMA journal_mode={journal_mode}")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS claims"
            " (job_id TEXT PRIMARY KEY, service_id TEXT NOT NULL) WITHOUT ROWID"
        )

    def claimed(self, job_id: str, service_id: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?)", (job_id, service_id))

    def done(self, job_id: str) -> None:
        self.db.execute("DELETE FROM claims WHERE job_id = ?", (job_id,))

    def close(self) -> None:
        self.db.close()


class SqliteOutbox:
    """The outbox on SQLite: an outcome's JSON per row."""

    def __init__(self, path: Path, journal_mode: str, synchronous: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute(f"PRAGMA journal_mode={journal_mode}")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS outcomes"
            " (job_id TEXT PRIMARY KEY, record TEXT NOT NULL) WITHOUT ROWID"
        )

    def put(self, outcome: Outcome) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO outcomes VALUES (?, ?)", (outcome.job_id, outcome.to_json())
        )

    def discard(self, job_id: str) -> None:
        self.db.execute("DELETE FROM outcomes WHERE job_id = ?", (job_id,))

    def close(self) -> None:
        self.db.close()


def jsonl(directory: Path) -> tuple[Any, Any]:
    journal, outbox = Journal(directory / "journal.jsonl"), Outbox(directory / "outbox.jsonl")
    journal.open()
    outbox.open()
    return journal, outbox


def sqlite(journal_mode: str, synchronous: str) -> Callable[[Path], tuple[Any, Any]]:
    def make(directory: Path) -> tuple[Any, Any]:
        return (
            SqliteJournal(directory / "journal.db", journal_mode, synchronous),
            SqliteOutbox(directory / "outbox.db", journal_mode, synchronous),
        )

    return make


CONTENDERS: dict[str, Callable[[Path], tuple[Any, Any]]] = {
    "jsonl": jsonl,
    "sqlite-wal": sqlite("WAL", "FULL"),
    "sqlite-rollback": sqlite("DELETE", "FULL"),
    "sqlite-wal-normal": sqlite("WAL", "NORMAL"),
}


def one_round(
    make: Callable[[Path], tuple[Any, Any]], root: Path, jobs: int
) -> tuple[float, float]:
    """Microseconds per job for the journal pair and for the outbox pair."""
    ids = [str(uuid.uuid4()) for _ in range(jobs)]
    outcomes = [
        Outcome(job_id=job_id, service_id=SERVICE, status=JobStatus.COMPLETED, results=RESULTS)
        for job_id in ids
    ]
    with tempfile.TemporaryDirectory(dir=root) as directory:
        journal, outbox = make(Path(directory))
        start = time.perf_counter()
        for job_id in ids:
            journal.claimed(job_id, SERVICE)
            journal.done(job_id)
        middle = time.perf_counter()
        for outcome in outcomes:
            outbox.put(outcome)
            outbox.discard(outcome.job_id)
        end = time.perf_counter()
        journal.close()
        outbox.close()
    return (middle - start) / jobs * 1e6, (end - middle) / jobs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where the files go")
    parser.add_argument("--json", action="store_true", help="print the medians as JSON")
    args = parser.parse_args()
    root = args.dir or Path(tempfile.gettempdir())
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in CONTENDERS}
    names = list(CONTENDERS)
    for number in range(args.rounds):
        # A different contender goes first each round, so that none always meets the
        # disk right after a tempdir was made or another contender's files went away.
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(one_round(CONTENDERS[name], root, args.jobs))
    medians = {
        name: (
            statistics.median(journal for journal, _ in rounds),
            statistics.median(outbox for _, outbox in rounds),
        )
        for name, rounds in times.items()
    }
    if args.json:
        print(json.dumps(medians, indent=2))
        return
    base_journal, base_outbox = medians["jsonl"]
    print(f"{args.jobs} jobs x {args.rounds} rounds in {root}; median µs per job")
    print(f"{'contender':<20}{'journal pair':>14}{'ratio':>8}{'outbox pair':>14}{'ratio':>8}")
    for name, (journal, outbox) in medians.items():
        print(
            f"{name:<20}{journal:>14.0f}{journal / base_journal:>8.2f}"
            f"{outbox:>14.0f}{outbox / base_outbox:>8.2f}"
        )


if __name__ == "__main__":
    main()
