"""What a worker owes across a crash: claims not yet settled, outcomes not yet delivered.

A :class:`Journal` names every job the worker claimed and has not settled; an
:class:`Outbox` holds every outcome the worker has yet to deliver.  Both are JSON-lines
logs kept by one :class:`_LogFile`, with the same rules:

- **One owner.**  ``open()`` takes an exclusive, non-blocking ``flock`` on a sidecar
  ``<name>.lock`` file, which the kernel releases when the process dies, even by
  ``kill -9``.  A second process gets :class:`LedgerLockedError` instead of
  interleaving its lines with the first one's.  The sidecar (not the log itself) is
  locked because compaction replaces the log by rename, and a lock on the old inode
  would not cover the new one.
- **Durable changes.**  Each change is one line appended and ``fdatasync``'d before
  the call returns.
- **Compaction.**  The log is rewritten down to what is still open (temporary file,
  fsync, rename, fsync of the directory) when it opens, when it closes, and whenever
  it has grown by as much again as it held after the last rewrite (at least
  :attr:`Journal.COMPACT_AFTER_BYTES`), so rewriting never costs more than appending
  did.  A rewrite that fails, on a full disk say, is logged and tried again later;
  the old file keeps taking appends meanwhile.
- **Damage is contained.**  A line that is not UTF-8, not JSON or not a record is
  skipped with an ERROR naming the file and the line number; a last line cut short
  by a crash is expected and skipped with a WARNING.
- **Failures are loud but not fatal.**  A write that fails raises
  :class:`LedgerError` naming the file and the OS error.  The change is kept in
  memory and reaches the file with the next rewrite, which the next change (or
  ``close()``) attempts, so space freed later loses nothing.

Files (and the temporary files of rewrites) are created with mode 0600: outcomes may
hold results the owner would not share.

Why not SQLite: ``benchmarks/ledger_cost.py`` measured it.  Both designs cost one
fsync per change, and SQLite with a WAL and ``synchronous=FULL`` (the setting under
which a commit is durable) cost the same to 15% less: about 0.45 ms per job for the
journal's claimed + done and 0.55 ms for the outbox's put + discard with either,
against 2.8 ms per no-op job at the worker's benchmarked rate.  Its default
rollback journal was four times dearer.  At about equal cost, JSON lines keep files
an operator can read and fix with an editor, the format earlier versions wrote,
damage confined to a line instead of a database that will not open, no
``-wal``/``-shm`` files, and correctness on the network volumes that hold state in
containers, where SQLite's WAL is not supported.

POSIX only: the lock needs ``fcntl.flock``.  On other platforms ``open()`` raises
:class:`LedgerError`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs

from ._ids import parse_id
from ._models import JobStatus
from .exceptions import ConfigurationError, TopChefError

if sys.platform != "win32":
    import fcntl

__all__ = ["Journal", "LedgerError", "LedgerLockedError", "Outbox", "Outcome"]

_log = logging.getLogger("topchef_worker")

# Appends need the data and the new size on disk, not the timestamps: fdatasync where
# it exists (not on macOS, where fsync is all there is).
_datasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


class LedgerError(TopChefError):
    """A journal or outbox file could not be opened, locked, read or written.

    ``path`` is the file; the OS error, if there was one, is the ``__cause__``.
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str]) -> None:
        super().__init__(message)
        self.path = Path(path)


class LedgerLockedError(LedgerError, ConfigurationError):
    """Another process has the journal or outbox open: two workers cannot share one."""


@attrs.frozen(kw_only=True)
class Outcome:
    """A job's outcome to deliver: the status (and results) to PATCH."""

    job_id: str
    service_id: str
    status: JobStatus
    results: dict[str, Any] | None = attrs.field(default=None, hash=False)

    def to_json(self) -> str:
        """Return the outcome as one JSON line, newline included."""
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
    """Outcomes the worker owes the server, durable across a crash.

    Each line is an outcome (which replaces any earlier one for its job) or
    ``{"discard": job_id}``; a compacted outbox is one outcome per line.  Thread-safe.
    """

    #: Compact once the file has grown by this many bytes, and by as much as it held
    #: after the last compaction.
    COMPACT_AFTER_BYTES = 1 << 20

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file = _LogFile(self.path, "outbox")
        self._outcomes: dict[str, Outcome] = {}
        self._lines: dict[str, str] = {}  # job id -> its outcome's line, for compaction

    def open(self) -> list[Outcome]:
        """Lock the file and return the outcomes an earlier run left, oldest first.

        Raises:
            LedgerLockedError: Another process has this outbox open.
            LedgerError: The directory does not exist, or the file cannot be read or
                written.
        """
        with self._lock:
            self._file.check_closed()
            self._outcomes.clear()
            self._lines.clear()
            try:
                self._file.open(self._apply, self._snapshot, self.COMPACT_AFTER_BYTES)
            except BaseException:
                self._outcomes.clear()
                self._lines.clear()
                raise
            return list(self._outcomes.values())

    def put(self, outcome: Outcome) -> None:
        """Add *outcome*, replacing any earlier one for its job, durably.

        Raises:
            LedgerError: The outbox is not open, the outcome cannot be written as
                JSON, or the write failed (the outcome is still kept, and written by
                the next successful compaction).
        """
        try:
            line = outcome.to_json()
            # Keep what the next start will read: the id canonical, the results a copy
            # that later changes to the caller's dict cannot reach.
            stored = Outcome.from_json(line)
        except (TypeError, ValueError) as error:
            raise LedgerError(
                f"outbox {self.path}: the outcome of job {outcome.job_id!r} cannot be "
                f"stored: {error}",
                path=self.path,
            ) from error
        with self._lock:
            self._file.check_open()
            self._outcomes[stored.job_id] = stored
            self._lines[stored.job_id] = line
            self._file.append(line, self._snapshot)

    def discard(self, job_id: str) -> None:
        """Remove the outcome of *job_id*, durably; nothing happens if there is none.

        Raises:
            LedgerError: The write failed (the outcome is forgotten all the same, and
                the next successful compaction drops it from the file).
        """
        with self._lock:
            if not self._file.is_open:
                return
            key = parse_id(job_id) or job_id
            if self._outcomes.pop(key, None) is None:
                return
            del self._lines[key]
            self._file.append(json.dumps({"discard": key}) + "\n", self._snapshot)

    def pending(self) -> list[Outcome]:
        """Return the outcomes still owed, oldest first."""
        with self._lock:
            return list(self._outcomes.values())

    def close(self) -> None:
        """Compact the file (an empty outbox removes it) and release the lock.

        Safe to call more than once.  Never raises: a failed compaction is logged, and
        the file as it is still says what is owed.
        """
        with self._lock:
            self._file.close(self._snapshot(), remove_if_empty=True)

    def _apply(self, text: str) -> None:
        record = json.loads(text)
        if isinstance(record, dict) and "discard" in record:
            key = parse_id(record["discard"])
            if key is None:
                raise ValueError(f"no valid job id to discard: {record['discard']!r:.60}")
            self._outcomes.pop(key, None)
            self._lines.pop(key, None)
            return
        outcome = Outcome.from_json(text)
        # Re-serialise so that a compacted file holds canonical lines only.
        self._outcomes[outcome.job_id] = outcome
        self._lines[outcome.job_id] = outcome.to_json()

    def _snapshot(self) -> list[str]:
        return list(self._lines.values())


class Journal:
    """Which jobs the worker claimed and has not settled, durable across a crash.

    Each line is ``{"claimed": job_id, "service_id": ...}`` or ``{"done": job_id}``;
    a compacted journal is one claim per line.  Thread-safe.
    """

    #: Compact once the file has grown by this many bytes, and by as much as it held
    #: after the last compaction.
    COMPACT_AFTER_BYTES = 1 << 20

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file = _LogFile(self.path, "journal")
        self._claims: dict[str, str] = {}  # job id -> service id

    def open(self) -> dict[str, str]:
        """Lock the file and return the claims an earlier run left unsettled.

        Returns:
            Job id -> service id, oldest claim first.

        Raises:
            LedgerLockedError: Another process has this journal open.
            LedgerError: The directory does not exist, or the file cannot be read or
                written.
        """
        with self._lock:
            self._file.check_closed()
            self._claims.clear()
            try:
                self._file.open(self._apply, self._snapshot, self.COMPACT_AFTER_BYTES)
            except BaseException:
                self._claims.clear()
                raise
            return dict(self._claims)

    def claimed(self, job_id: str, service_id: str) -> None:
        """Record a claim, durably, before it is sent.

        Raises:
            LedgerError: The journal is not open, or the write failed (the claim is
                still kept, and written by the next successful compaction).
        """
        with self._lock:
            self._file.check_open()
            self._claims[job_id] = service_id
            line = json.dumps({"claimed": job_id, "service_id": service_id}) + "\n"
            self._file.append(line, self._snapshot)

    def done(self, job_id: str) -> None:
        """Record that a claimed job is settled: its outcome delivered, or requeued.

        Nothing happens if the journal is closed or the job is not claimed.

        Raises:
            LedgerError: The write failed (the claim is forgotten all the same, and
                the next successful compaction drops it from the file).
        """
        with self._lock:
            if not self._file.is_open:
                return
            # Not in memory means not in the file either (or a rewrite is due that
            # drops it), so there is nothing to write.
            if self._claims.pop(job_id, None) is None:
                return
            self._file.append(json.dumps({"done": job_id}) + "\n", self._snapshot)

    def close(self) -> None:
        """Compact the file to the claims still open and release the lock.

        Safe to call more than once.  Never raises: a failed compaction is logged, and
        the file as it is still names every open claim.
        """
        with self._lock:
            self._file.close(self._snapshot(), remove_if_empty=False)

    def _apply(self, text: str) -> None:
        record = json.loads(text)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        if isinstance(record.get("claimed"), str):
            self._claims[record["claimed"]] = str(record.get("service_id", ""))
        elif isinstance(record.get("done"), str):
            self._claims.pop(record["done"], None)
        else:
            raise ValueError("neither a claim nor a settlement")

    def _snapshot(self) -> list[str]:
        return [
            json.dumps({"claimed": job_id, "service_id": service_id}) + "\n"
            for job_id, service_id in self._claims.items()
        ]


class _LogFile:
    """The file under a ledger: its lock, appends, and compaction.

    Not thread-safe: the ledger calls it with its own lock held.  The ledger keeps the
    state in memory; this class only needs it as lines (``snapshot``) to rewrite.
    """

    def __init__(self, path: Path, kind: str) -> None:
        self.path = path
        self.kind = kind  # "journal" or "outbox", for messages
        self._lock_path = path.with_name(path.name + ".lock")
        self._temporary = path.with_name(path.name + ".tmp")
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._threshold = 0  # the COMPACT_AFTER_BYTES of the ledger
        self._size = 0  # bytes of the file known to hold whole lines
        self._compact_at = 0  # compact once _size reaches this
        self._stale = False  # a change failed to reach the file: rewrite at the next one
        self._torn = False  # the file may end inside a line: start the next on a new one

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def check_open(self) -> None:
        if self._fd is None:
            raise LedgerError(f"{self.kind} {self.path} is not open", path=self.path)

    def check_closed(self) -> None:
        if self._fd is not None:
            raise LedgerError(f"{self.kind} {self.path} is already open", path=self.path)

    def open(
        self,
        apply: Callable[[str], None],
        snapshot: Callable[[], list[str]],
        compact_after_bytes: int,
    ) -> None:
        """Lock the file, feed its lines to *apply*, then compact it to *snapshot*."""
        self.check_closed()
        self._threshold = compact_after_bytes
        self._stale = False
        self._lock_file()
        try:
            data = self._read()
            self._parse(data, apply)
            try:
                self._compact(snapshot())
            except OSError as error:
                _log.warning(
                    "%s %s could not be compacted (%s); appending to it as it is",
                    self.kind,
                    self.path,
                    _describe(error),
                )
                if self._fd is None:  # else the new file is in place, only not synced
                    self._open_for_append(torn=bool(data) and not data.endswith(b"\n"))
        except BaseException:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._unlock_file()
            raise

    def append(self, line: str, snapshot: Callable[[], list[str]]) -> None:
        """Make one change durable: compact to *snapshot* (which already holds the
        change) when due, else append *line*."""
        if self._stale or self._size >= self._compact_at:
            try:
                self._compact(snapshot())
            except OSError as error:
                _log.log(
                    logging.ERROR if self._stale else logging.WARNING,
                    "%s %s could not be compacted (%s); appending to it as it is%s",
                    self.kind,
                    self.path,
                    _describe(error),
                    ", although it misses changes that failed to be written" if self._stale else "",
                )
                self._compact_at = self._size + max(self._threshold, self._size)
            else:
                return
        assert self._fd is not None
        data = (("\n" if self._torn else "") + line).encode("utf-8")
        try:
            _write_all(self._fd, data)
            _datasync(self._fd)
        except OSError as error:
            self._stale = True
            try:  # cut off whatever part of the line did get in
                os.ftruncate(self._fd, self._size)
            except OSError:
                self._torn = True
            raise LedgerError(
                f"cannot write {self.kind} {self.path}: {_describe(error)}", path=self.path
            ) from error
        self._size += len(data)
        self._torn = False

    def close(self, lines: list[str], *, remove_if_empty: bool) -> None:
        """Compact to *lines* (or remove the file if there are none and
        *remove_if_empty*), and release the lock.  Logs failures, never raises."""
        if self._fd is None:
            return
        try:
            if remove_if_empty and not lines:
                os.close(self._fd)
                self._fd = None
                self.path.unlink(missing_ok=True)
            else:
                self._compact(lines)
        except OSError as error:
            _log.error(
                "%s %s could not be %s at close (%s)%s",
                self.kind,
                self.path,
                "removed" if remove_if_empty and not lines else "compacted",
                _describe(error),
                "; it misses changes that failed to be written" if self._stale else "",
            )
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._unlock_file()

    # -- the lock -----------------------------------------------------------------------

    def _lock_file(self) -> None:
        # The lock file is removed at close, so a locker may open it just before it
        # goes and lock a file nobody else will ever open: retry until the locked
        # file is the one at the path.
        while True:
            fd = self._open_lock_file()
            try:
                _try_lock(fd)
            except OSError as error:
                holder = _read_pid(fd)
                os.close(fd)
                if error.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise LedgerLockedError(
                        f"{self.kind} {self.path} is in use by another process"
                        f"{f' (pid {holder})' if holder else ''}: two workers cannot share "
                        f"one {self.kind}; stop the other one or give each its own file",
                        path=self.path,
                    ) from None
                raise LedgerError(
                    f"cannot lock {self.kind} {self.path} (lock file {self._lock_path}): "
                    f"{_describe(error)}",
                    path=self.path,
                ) from error
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self._lock_path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._lock_fd = fd
        try:  # who holds it, for the message another process will show
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass

    def _open_lock_file(self) -> int:
        try:
            return os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            if not self.path.parent.is_dir():
                message = f"the directory {self.path.parent} does not exist"
            else:
                message = f"cannot create the lock file {self._lock_path}: {_describe(error)}"
            raise LedgerError(
                f"cannot open {self.kind} {self.path}: {message}", path=self.path
            ) from error

    def _unlock_file(self) -> None:
        assert self._lock_fd is not None
        # Removed while still locked, so that nobody can lock this inode in between.
        with contextlib.suppress(OSError):
            self._lock_path.unlink()
        os.close(self._lock_fd)  # releases the lock
        self._lock_fd = None

    # -- the log ------------------------------------------------------------------------

    def _read(self) -> bytes:
        try:
            with open(self.path, "rb") as file:
                return file.read()
        except FileNotFoundError:
            return b""
        except OSError as error:
            raise LedgerError(
                f"cannot read {self.kind} {self.path}: {_describe(error)}", path=self.path
            ) from error

    def _parse(self, data: bytes, apply: Callable[[str], None]) -> None:
        lines = data.split(b"\n")
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                apply(raw.decode("utf-8"))
            except (ValueError, TypeError, RecursionError) as error:
                if number == len(lines):  # no newline after it: a write cut short
                    _log.warning(
                        "%s %s line %d is incomplete, as a crash leaves it; ignored: %r",
                        self.kind,
                        self.path,
                        number,
                        raw[:200],
                    )
                else:
                    _log.error(
                        "%s %s line %d is unreadable and skipped (%s): %r",
                        self.kind,
                        self.path,
                        number,
                        error,
                        raw[:200],
                    )

    def _open_for_append(self, *, torn: bool) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as error:
            raise LedgerError(
                f"cannot open {self.kind} {self.path}: {_describe(error)}", path=self.path
            ) from error
        self._fd = fd
        self._size = os.fstat(fd).st_size
        self._torn = torn
        self._compact_at = self._size + self._threshold

    def _compact(self, lines: Iterable[str]) -> None:
        """Replace the file with *lines*, durably, and append to the new one from now.

        On an OSError before the rename, the old file is untouched and still appended
        to; after it, the new file is in use and only its durability is in doubt.
        """
        data = "".join(lines).encode("utf-8")
        fd = os.open(self._temporary, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, data)
            os.fsync(fd)
            os.replace(self._temporary, self.path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                self._temporary.unlink()
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._size = len(data)
        self._torn = False
        self._compact_at = self._size + max(self._threshold, self._size)
        try:
            _fsync_directory(self.path.parent)
        except OSError:
            self._stale = True  # the rename may not survive a crash: rewrite again
            raise
        self._stale = False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    """Make a rename or a new file in *directory* durable (POSIX)."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _try_lock(fd: int) -> None:
    """Lock *fd* exclusively, or raise OSError (EWOULDBLOCK) if another holds it."""
    if sys.platform == "win32":
        raise OSError(errno.ENOTSUP, "locking needs fcntl.flock, which Windows lacks")
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    except (OSError, ValueError, AttributeError):
        return None


def _describe(error: OSError) -> str:
    """``No space left on device (ENOSPC)``, or the error as it prints."""
    if error.errno is not None and error.errno in errno.errorcode and error.strerror:
        return f"{error.strerror} ({errno.errorcode[error.errno]})"
    return str(error)
