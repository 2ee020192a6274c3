"""Outcomes that could not be delivered, and claims not yet settled, kept on disk.

Both files are JSON lines, written with the standard library only.  The outbox is
rewritten whole and atomically (a temporary file, fsync, rename, fsync of the
directory), so a crash leaves either the old or the new outbox, never half of one.
The journal is appended to and fsync'd record by record, so after a crash it names
every job the worker had claimed and not yet settled; a torn last line is ignored.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import attrs

from ._ids import parse_id
from ._models import JobStatus

__all__ = ["Journal", "Outbox", "Outcome", "write_atomically"]

_log = logging.getLogger("topchef_worker")


def write_atomically(path: Path, lines: Iterable[str]) -> None:
    """Replace *path* with *lines*, durably: the old content or the new, nothing else."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        file.writelines(lines)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    if hasattr(os, "O_DIRECTORY"):  # POSIX: make the rename itself durable
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


@attrs.frozen(kw_only=True)
class Outcome:
    """A job's outcome to deliver: the status (and results) to PATCH."""

    job_id: str
    service_id: str
    status: JobStatus
    results: dict[str, Any] | None = attrs.field(default=None, hash=False)

    def to_json(self) -> str:
        record = {
            "job_id": self.job_id,
            "service_id": self.service_id,
            "status": self.status.value,
            "results": self.results,
        }
        return json.dumps(record, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, line: str) -> Outcome:
        """Parse one outbox line; ValueError says what is wrong with it."""
        record = json.loads(line)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        job_id = parse_id(record.get("job_id"))
        if job_id is None:
            raise ValueError(f"no valid job_id: {record.get('job_id')!r:.60}")
        results = record.get("results")
        if results is not None and not isinstance(results, dict):
            raise ValueError("results is not an object")
        return cls(
            job_id=job_id,
            service_id=str(record.get("service_id", "")),
            status=JobStatus(str(record.get("status"))),
            results=results,
        )


class Outbox:
    """Outcomes the worker could not deliver before it stopped, for the next start."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> list[Outcome]:
        """Read the outbox; lines that cannot be parsed are logged and skipped."""
        if not self.path.exists():
            return []
        outcomes = []
        with open(self.path, encoding="utf-8") as file:
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                try:
                    outcomes.append(Outcome.from_json(line))
                except ValueError as error:
                    _log.error(
                        "outbox %s line %d is unreadable (%s): %r",
                        self.path,
                        number,
                        error,
                        line[:200],
                    )
        return outcomes

    def save(self, outcomes: Sequence[Outcome]) -> None:
        """Replace the outbox with *outcomes*; an empty outbox is removed."""
        if not outcomes:
            if self.path.exists():
                self.path.unlink()
            return
        write_atomically(self.path, (outcome.to_json() for outcome in outcomes))


class Journal:
    """Which jobs the worker claimed and has not settled, durable across a crash."""

    #: Rewrite the file down to the open claims after this many appended records,
    #: so that a worker running for months keeps a small journal.
    COMPACT_AFTER = 10_000

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._pending: dict[str, str] = {}
        self._appended = 0

    def open(self) -> dict[str, str]:
        """Return the claims an earlier run left unsettled (job id -> service id),
        compact the file to those, and start appending."""
        pending: dict[str, str] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8") as file:
                for line in file:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue  # a line torn by the crash
                    if not isinstance(record, dict):
                        continue
                    if isinstance(record.get("claimed"), str):
                        pending[record["claimed"]] = str(record.get("service_id", ""))
                    elif isinstance(record.get("done"), str):
                        pending.pop(record["done"], None)
        with self._lock:
            self._pending = dict(pending)
            self._compact()
        return pending

    def _compact(self) -> None:
        """Rewrite the file as the open claims only; called with the lock held."""
        if self._file is not None:
            self._file.close()
        write_atomically(
            self.path,
            (
                json.dumps({"claimed": job, "service_id": sid}) + "\n"
                for job, sid in self._pending.items()
            ),
        )
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._appended = 0

    def claimed(self, job_id: str, service_id: str) -> None:
        """Record a claim before it is sent."""
        self._append({"claimed": job_id, "service_id": service_id})

    def done(self, job_id: str) -> None:
        """Record that a claimed job is settled: its outcome delivered, or requeued."""
        self._append({"done": job_id})

    def _append(self, record: dict[str, str]) -> None:
        with self._lock:
            if self._file is None:
                return
            if "claimed" in record:
                self._pending[record["claimed"]] = record["service_id"]
            else:
                self._pending.pop(record["done"], None)
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._appended += 1
            if self._appended >= self.COMPACT_AFTER:
                self._compact()

    def close(self) -> None:
        """Compact the file to the claims still open, and close it."""
        with self._lock:
            if self._file is not None:
                self._compact()
                assert self._file is not None
                self._file.close()
                self._file = None
