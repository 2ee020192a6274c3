"""Who a worker process is, as lease markers name it, and what it remembers of them.

Without a journal, a worker is a new identity every time it starts.  With one, its
identity lives in a small file next to the journal, ``<journal>.lease``, made once
with a random id: the journal's lock means one process at a time uses it, so a
restarted worker recognises its own marker (and knows its earlier run is gone),
while two workers never share an id, even with equal host names and journal paths
(containers on separate volumes).

The file also records the services this worker released at its last clean stop.
The jobs it journaled for those are its own to settle at the next start whoever
serves the service now: a worker that takes over from a release puts nothing back.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import tempfile
from pathlib import Path

import attrs

from ._lease import Marker

__all__ = ["Identity", "Memory", "load"]

_log = logging.getLogger("topchef_worker")
_ID = re.compile(r"\A[0-9a-f]{12}\Z")


@attrs.frozen
class Identity:
    """This worker process, as its marker names it; ``stable`` when it survives a
    restart (it has a journal)."""

    id: str
    host: str
    pid: int
    stable: bool = False

    def marker(self, *, released: bool = False) -> Marker:
        return Marker(id=self.id, host=self.host, pid=self.pid, released=released)


class Memory:
    """The services a worker released at its last clean stop, kept in its lease
    file (none without a journal)."""

    def __init__(self, path: Path | None, identity: str, released: set[str]) -> None:
        self._path = path
        self._id = identity
        #: Released by the earlier run, as read at start.
        self.released_before = frozenset(released)
        self._released = set(released)

    def note(self, service_id: str, *, released: bool) -> None:
        """Record that this worker released (or serves again) *service_id*."""
        if (service_id in self._released) == released or self._path is None:
            return
        if released:
            self._released.add(service_id)
        else:
            self._released.discard(service_id)
        try:
            _write(self._path, {"id": self._id, "released": sorted(self._released)})
        except OSError as error:
            _log.warning("could not update %s: %s", self._path, error)


def load(journal: Path | None) -> tuple[Identity, Memory]:
    """This process's identity and memory: kept next to *journal*, if there is one."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:63] or "unknown"
    fresh = Identity(id=secrets.token_hex(6), host=host, pid=os.getpid())
    if journal is None:
        return fresh, Memory(None, fresh.id, set())
    path = journal.with_name(journal.name + ".lease")
    try:
        state = json.loads(path.read_text())
        identity, released = state["id"], set(state["released"])
        if not isinstance(identity, str) or not _ID.match(identity):
            raise ValueError(f"not an id: {identity!r}")
    except FileNotFoundError:
        identity, released = fresh.id, set()
        try:
            _write(path, {"id": identity, "released": []})
        except OSError as error:
            _log.warning(
                "could not write %s (%s): this worker will not recognise its own lease "
                "markers after a restart",
                path,
                error,
            )
            return fresh, Memory(None, fresh.id, set())
    except (OSError, ValueError, KeyError, TypeError) as error:
        _log.warning("could not read %s (%s): this worker starts with a new identity", path, error)
        return fresh, Memory(None, fresh.id, set())
    return (
        Identity(id=identity, host=host, pid=os.getpid(), stable=True),
        Memory(path, identity, {str(service) for service in released}),
    )


def _write(path: Path, state: dict[str, object]) -> None:
    """Replace *path* atomically, readable by its owner only."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
