"""What the real TopChef server's requests cost, for benchmarks that want it.

The stand-in answers in microseconds whatever a service's history.  The real server
loads **every** job of a service for each poll (``GET .../jobs/next`` and
``GET .../queue`` alike) and for a service's detail, so those requests cost more with
every job ever submitted.  Measured on the real server: a poll takes about 2.5 ms with
one job, 25 ms with 1,000 and 228 ms with 10,000; a detail about 60 ms with 1,000.
:class:`CostModel` spends that time inside the server's one-request-at-a-time
section, as the real server does, so that a benchmark shows what polling costs.
It is off unless given: tests stay fast.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import attrs

__all__ = ["CostModel"]

_POLL = re.compile(r"^/services/([^/]+)/(?:jobs/next|queue)$")
_HISTORY = re.compile(r"^/services/([^/]+)(?:/jobs)?$")


@attrs.frozen(kw_only=True)
class CostModel:
    """Seconds a request takes on the real server, from the service's history.

    Attributes:
        poll_base: A poll (``jobs/next`` or ``queue``) of a service with no jobs.
        poll_per_job: What each job of the service's history adds to a poll.
        history_per_job: What each job adds to a service's detail and job list.
    """

    poll_base: float = 0.0025
    poll_per_job: float = 0.0000226  # 228 ms at 10,000 jobs
    history_per_job: float = 0.00006  # 60 ms at 1,000 jobs

    def seconds(self, method: str, path: str, history: Callable[[str], int]) -> float:
        """The delay for one request; *history* gives a service id's job count."""
        if method != "GET":
            return 0.0
        poll = _POLL.match(path)
        if poll:
            return self.poll_base + self.poll_per_job * history(poll.group(1))
        detail = _HISTORY.match(path)
        if detail:
            return self.history_per_job * history(detail.group(1))
        return 0.0
