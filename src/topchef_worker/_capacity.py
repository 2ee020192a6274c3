"""Capacity: the slots a worker has for jobs, reserved before a poll is sent.

A poll takes a :class:`Slot` first, so the worker never claims a job it cannot start
at once and never has more jobs WORKING on the server than ``max_jobs``.  The slot
passes to the job the poll claims (or is given back if it claims none) and is given
back exactly once, whatever happens to the job.

A slot has two parts, released separately: its share of ``max_jobs`` (free once the
job's outcome is decided and its call has ended, or at its timeout), and its share of
the handler's ``concurrency`` (free only when the call has really ended: an
instrument is busy until its handler returns).  A call still running past its
timeout is an *overrun*; once ``max_overrun`` of them run, no slot is handed out.

Every method is called with the worker's lock held.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Capacity", "Slot"]


class Slot:
    """One job's share of the worker's capacity; each part is released once."""

    __slots__ = ("_capacity", "_holds_global", "_holds_service", "_overrun", "service_id")

    def __init__(self, capacity: Capacity, service_id: str) -> None:
        self._capacity = capacity
        self.service_id = service_id
        self._holds_global = True
        self._holds_service = True
        self._overrun = False

    def release_global(self, *, overrun: bool = False) -> None:
        """Give back the share of ``max_jobs``; *overrun*: the call runs on."""
        if self._holds_global:
            self._holds_global = False
            if overrun and self._holds_service:
                self._overrun = True
                self._capacity.overruns += 1
            self._capacity._give_back(self.service_id, global_part=True)

    def release(self) -> None:
        """Give back every part still held (the call has ended)."""
        self.release_global()
        if self._holds_service:
            self._holds_service = False
            if self._overrun:
                self._overrun = False
                self._capacity.overruns -= 1
            self._capacity._give_back(self.service_id, global_part=False)


class Capacity:
    """Counts slots in use, overall and per service."""

    def __init__(
        self,
        max_jobs: int,
        max_overrun: int,
        limits: dict[str, int | None],
        on_release: Callable[[str], None],
    ) -> None:
        self.max_jobs = max_jobs
        self.max_overrun = max_overrun
        self._limits = limits
        self._used = 0
        self._per_service = dict.fromkeys(limits, 0)
        self._renamed: dict[str, str] = {}  # an old service id -> its new one
        self.overruns = 0
        self._on_release = on_release

    @property
    def overloaded(self) -> bool:
        """Too many calls run past their timeout: claim nothing until they end."""
        return self.overruns > 0 and self.overruns >= self.max_overrun

    def has_room(self, service_id: str | None = None) -> bool:
        """Whether a slot (for *service_id*, if given) can be reserved now."""
        if self._used >= self.max_jobs or self.overloaded:
            return False
        if service_id is None:
            return True
        limit = self._limits[service_id]
        return limit is None or self._per_service[service_id] < limit

    def room(self, service_id: str) -> int:
        """How many slots *service_id* could reserve now."""
        if self.overloaded:
            return 0
        free = self.max_jobs - self._used
        limit = self._limits[service_id]
        if limit is not None:
            free = min(free, limit - self._per_service[service_id])
        return max(0, free)

    def reserve(self, service_id: str) -> Slot | None:
        """Take a slot for one job of *service_id*, or None if there is no room."""
        if not self.has_room(service_id):
            return None
        self._used += 1
        self._per_service[service_id] += 1
        return Slot(self, service_id)

    def rename(self, old: str, new: str) -> None:
        """A service is served under a new id (registered again): its limit and its
        slots go with it, and slots taken under the old id are given back to it, since
        their handlers still run (on the one instrument a limit of 1 protects)."""
        if old == new or old not in self._per_service:
            return
        self._limits[new] = self._limits[old]
        self._per_service[new] = self._per_service.pop(old)
        self._renamed[old] = new
        self._renamed.pop(new, None)  # an id served before (the server came back): current

    def _give_back(self, service_id: str, *, global_part: bool) -> None:
        while service_id in self._renamed:
            service_id = self._renamed[service_id]
        if global_part:
            self._used -= 1
        else:
            self._per_service[service_id] -= 1
        self._on_release(service_id)
