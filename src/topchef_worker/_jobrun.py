"""A claimed job's life, as one small state machine.

::

    CLAIMED ──► SUBMITTED ──► DECIDED ──► SETTLED
       └───────────────────────►┘

* CLAIMED: WORKING on the server, on its way to the job pool;
* SUBMITTED: a future on the job pool (queued or running);
* DECIDED: its outcome is chosen (results, a failure, or back to the queue) and
  being delivered;
* SETTLED: delivered, or given up on (kept in the outbox, or named in an ERROR
  log line).

Many things may try to decide a job's outcome at about the same time: its handler
returning, its deadline, ``stop()``'s timeout, its pool breaking.  :meth:`JobRun.decide`
is the one place where that race is settled: the first decision wins, later ones
are refused.  Whether the handler's call still runs is tracked beside the phase
(``call_ended``), since a call that overran its timeout runs on after its job is
decided and even settled.
"""

from __future__ import annotations

import enum
from concurrent.futures import Executor, Future
from typing import Any

import attrs

from ._capacity import Slot
from ._models import Job
from ._scheduler import Timer
from ._services import ServiceRun

__all__ = ["Decision", "IllegalTransitionError", "JobRun", "Phase"]


class Phase(enum.Enum):
    """Where a claimed job is in its life."""

    CLAIMED = 1
    SUBMITTED = 2
    DECIDED = 3
    SETTLED = 4


_MOVES = {
    Phase.CLAIMED: (Phase.SUBMITTED, Phase.DECIDED),
    Phase.SUBMITTED: (Phase.DECIDED,),
    Phase.DECIDED: (Phase.SETTLED,),
    Phase.SETTLED: (),
}


class IllegalTransitionError(RuntimeError):
    """A job's life was asked to go backwards: a bug in the worker."""


class Kind(enum.Enum):
    """What was decided for a job."""

    RESULT = "result"  # the handler returned a value
    FAILURE = "failure"  # it raised, timed out, or could not run
    REQUEUE = "requeue"  # back to REGISTERED: it did not run, or was interrupted


@attrs.frozen(kw_only=True)
class Decision:
    """A job's outcome, before it is delivered."""

    kind: Kind
    value: Any = attrs.field(default=None, repr=False)
    error: BaseException | None = None
    reason: str = ""
    started: bool = True  # a requeued job had started (it will not be taken again)

    @classmethod
    def result(cls, value: Any) -> Decision:
        return cls(kind=Kind.RESULT, value=value)

    @classmethod
    def failure(cls, error: BaseException) -> Decision:
        return cls(kind=Kind.FAILURE, error=error)

    @classmethod
    def requeue(cls, reason: str, *, started: bool) -> Decision:
        return cls(kind=Kind.REQUEUE, reason=reason, started=started)


@attrs.define(eq=False)
class JobRun:
    """One claimed job, from its claim until its outcome is settled."""

    job: Job
    service: ServiceRun
    slot: Slot
    phase: Phase = Phase.CLAIMED
    decision: Decision | None = None
    future: Future[Any] | None = None
    pool: Executor | None = None
    deadline: Timer | None = None
    started_at: float | None = None
    duration: float = 0.0
    call_ended: bool = True  # no handler call runs for it (yet, or any more)
    attempt: int = 1  # of the handler's call (see handler retries)
    retry_timer: Timer | None = None  # the next attempt is due then
    breaks: int = 0  # times its pool broke while it ran (see _crashes)

    @property
    def id(self) -> str:
        return self.job.id

    def move(self, phase: Phase) -> None:
        """Go to *phase*, or raise :class:`IllegalTransitionError`."""
        if phase not in _MOVES[self.phase]:
            raise IllegalTransitionError(f"job {self.id}: {self.phase.name} -> {phase.name}")
        self.phase = phase

    def decide(self, decision: Decision) -> bool:
        """Decide the job's outcome if nothing did before; True if this one won."""
        if self.phase in (Phase.DECIDED, Phase.SETTLED):
            return False
        self.move(Phase.DECIDED)
        self.decision = decision
        return True

    @property
    def overrun(self) -> bool:
        """Its outcome is decided but its handler's call still runs."""
        return self.phase in (Phase.DECIDED, Phase.SETTLED) and not self.call_ended
