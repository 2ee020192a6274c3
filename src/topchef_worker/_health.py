"""Health: the worker's state, whether it is degraded, and the health report.

Each exchange with the server has a *source* (one service's heartbeats, one
service's polls, deliveries).  A source is failing from a transient failure until
its next success, and the worker is DEGRADED while any source fails, too many calls
overran their timeout, or its job pool cannot run jobs.  Since one source's success
does not clear another's failure, a service that keeps failing keeps the worker
DEGRADED steadily instead of flapping with every other service's poll.

The report separates three questions:

* ``alive`` (liveness, ``/healthz``): this process works: its scheduler thread runs
  and it is not stopped by a fault of its own.  A TopChef outage does not make a
  worker dead, so an orchestrator does not restart healthy pods during one.
* ``ready`` (readiness, ``/readyz``): it can take jobs now: started, its job pool
  usable, not over its overrun cap, and the server answering for at least one of
  its services (one broken queue out of forty does not make it unready).
* ``healthy``: RUNNING, and every service checked in within its timeout and (when it
  has room for a job) polled within a few of its own poll intervals.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ._stats import Health, ServiceHealth, WorkerState
from .events import Event, StateChanged

__all__ = ["ACTIVE", "HealthMonitor"]

_log = logging.getLogger("topchef_worker")

#: States in which the worker runs (or, as a standby, is ready to run) jobs.
ACTIVE = (WorkerState.RUNNING, WorkerState.STANDBY, WorkerState.DEGRADED)


class HealthMonitor:
    """Owns the worker's state and decides RUNNING versus DEGRADED.

    Args:
        cond: The worker's condition, notified on every change of state.
        emit: Queues an event for listeners.
    """

    def __init__(self, cond: threading.Condition, emit: Callable[[Event], None]) -> None:
        self._cond = cond
        self._emit = emit
        self.state = WorkerState.NEW
        self._failing: dict[str, str] = {}
        self._failing_services: dict[str, str] = {}  # source -> its service id
        self.answers = 0  # successful exchanges with the server, for delivery
        self._conditions: dict[str, str] = {}  # other reasons to be DEGRADED
        self._standby = False  # every service is served by another worker

    def set_state(self, state: WorkerState) -> None:
        """Move to *state* and tell listeners."""
        with self._cond:
            old, self.state = self.state, state
            self._cond.notify_all()
            if old is not state:
                self._emit(StateChanged(time=time.time(), old=old, new=state))

    def failed(self, source: str, error: BaseException, service_id: str | None = None) -> None:
        """Note a transient failure of *source* (one of *service_id*'s, if given)."""
        with self._cond:
            first = not self._failing
            self._failing[source] = str(error)
            if service_id is not None:
                self._failing_services[source] = service_id
            if first:
                self._update()

    def answered(self, source: str) -> None:
        """Note a success of *source*."""
        with self._cond:
            self.answers += 1
            self._failing_services.pop(source, None)
            if self._failing.pop(source, None) is not None and not self._failing:
                self._update()

    def forget(self, source: str) -> None:
        """Forget *source*'s failure: it will not be tried again for now."""
        with self._cond:
            self._failing_services.pop(source, None)
            if self._failing.pop(source, None) is not None and not self._failing:
                self._update()

    def unreachable(self, services: int) -> bool:
        """Whether every one of the *services* has an exchange failing now: the
        server is down for this worker, not one queue broken."""
        with self._cond:
            return services > 0 and len(set(self._failing_services.values())) >= services

    def condition(self, name: str, reason: str | None) -> None:
        """Set (a reason) or clear (None) another cause of DEGRADED."""
        with self._cond:
            if reason is None:
                changed = self._conditions.pop(name, None) is not None
            else:
                changed = self._conditions.get(name) != reason
                self._conditions[name] = reason
            if changed:
                self._update()

    def standing_by(self, standby: bool) -> None:
        """Say whether every service is served by another worker (STANDBY)."""
        with self._cond:
            if standby != self._standby:
                self._standby = standby
                self._update()

    def reasons(self) -> list[str]:
        """Why the worker is DEGRADED (empty when it is not)."""
        with self._cond:
            reasons = list(self._conditions.values())
            if self._failing:
                source, error = next(iter(self._failing.items()))
                reasons.append(f"the server does not answer ({source}: {error})")
            return reasons

    def _update(self) -> None:
        if self.state not in ACTIVE:
            return
        reasons = self.reasons()
        if reasons:
            state = WorkerState.DEGRADED
        else:
            state = WorkerState.STANDBY if self._standby else WorkerState.RUNNING
        if state is self.state:
            return
        old = self.state
        self.set_state(state)
        if state is WorkerState.DEGRADED:
            _log.warning("worker DEGRADED: %s", "; ".join(reasons))
        elif state is WorkerState.STANDBY:
            _log.info("worker STANDBY: every service is served by another worker")
        elif old is WorkerState.DEGRADED:
            _log.info("worker RUNNING again: the server answers and jobs can run")

    def report(
        self,
        *,
        alive: bool,
        in_flight: int,
        services: list[ServiceHealth],
        problems: list[str],
    ) -> Health:
        """The health report, from the parts' own findings.

        Ready means jobs can be taken now: RUNNING, or DEGRADED by some exchanges
        failing while the server still answers for at least one service; not with
        the job pool unusable or too many calls overrun.
        """
        with self._cond:
            reasons = []
            if self.state not in (WorkerState.RUNNING, WorkerState.STANDBY):
                reasons.append(f"worker is {self.state.value}")
            reasons += self.reasons() + problems
            return Health(
                state=self.state,
                alive=alive,
                healthy=not reasons,
                ready=(
                    self.state in ACTIVE
                    and not self._conditions
                    and not self.unreachable(len(services))
                ),
                in_flight=in_flight,
                services=tuple(services),
                reasons=tuple(dict.fromkeys(reasons)),
            )
