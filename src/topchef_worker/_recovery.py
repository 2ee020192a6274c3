"""Crash recovery: what an earlier run of the worker left unsettled.

Two files say what that is (see :mod:`topchef_worker._ledger`): the outbox holds
outcomes that run could not deliver, and the journal the jobs it claimed and never
settled (it crashed, or was killed).  At start, each outcome is delivered and each
such claim is put back in the queue (or ended ERROR, for a handler registered with
``on_orphan="error"``), but only if the job is still WORKING: in the meantime an
operator may have requeued it, or another worker finished it.  Delivery does the
sending, so these are retried like any other outcome while the worker runs.
"""

from __future__ import annotations

import logging

from ._delivery import Delivery
from ._ledger import Outcome
from ._models import JobStatus

__all__ = ["recover"]

_log = logging.getLogger("topchef_worker")


def recover(
    delivery: Delivery,
    *,
    outbox: list[Outcome],
    journal: dict[str, str],
    on_orphan: dict[str, str],
) -> None:
    """Deliver the outbox, then settle the journal's open claims.

    Args:
        outbox: Outcomes left in the outbox.
        journal: Open claims left in the journal: job id to service id.
        on_orphan: Per service id, ``"requeue"`` or ``"error"``.
    """
    for outcome in outbox:
        delivery.redeliver(outcome, reason="kept in the outbox by an earlier run", in_outbox=True)
    kept = {outcome.job_id for outcome in outbox}
    orphans = {job: service for job, service in journal.items() if job not in kept}
    if orphans:
        _log.warning(
            "%d job(s) were claimed by an earlier run that did not finish them; "
            "settling those still WORKING: %s",
            len(orphans),
            ", ".join(orphans),
        )
    for job_id, service_id in orphans.items():
        status = JobStatus.ERROR if on_orphan.get(service_id) == "error" else JobStatus.REGISTERED
        delivery.redeliver(
            Outcome(job_id=job_id, service_id=service_id, status=status),
            reason="claimed by an earlier run that did not finish it",
            in_outbox=False,
        )
