"""The file under a journal or an outbox: its lock, its appends and its compaction.

:class:`LogFile` is the part of :mod:`topchef_worker._ledger` that touches the disk.
The rules it keeps (one owner per file, each change ``fdatasync``'d before the call
returns, compaction by rename, damage confined to a line, failures loud but not
fatal, mode 0600, POSIX only) are set out there, with the reasons for them.  It knows
nothing of claims or outcomes: the ledger keeps its state in memory, hands each change
over as one JSON line, and gives a snapshot of its state as lines whenever the file
is to be rewritten.  Kept apart because the two ledgers share it, and because the
order of locks, writes, fsyncs and renames is what makes them crash-safe and is best
read on its own.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from .exceptions import LedgerError, LedgerLockedError

if sys.platform != "win32":
    import fcntl

__all__ = ["LogFile"]

_log = logging.getLogger("topchef_worker")

# Appends need the data and the new size on disk, not the timestamps: fdatasync where
# it exists (not on macOS, where fsync is all there is).
_datasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


class LogFile:
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
