"""One active worker per service: a lease built from what the server offers.

TopChef has no atomic claim: ``GET .../jobs/next`` does not claim, and the PATCH to
WORKING succeeds for everyone.  Two workers polling one service run nearly every job
twice.  So by default one worker per service claims (it is *active*) and any other
waits (a *standby*) until the active one is gone.  The server offers three things to
build that on, and nothing that says who wrote what:

* ``has_timed_out``: true once no ``PATCH /services/<id>`` (a check-in) arrived for
  the service's ``timeout`` seconds.  Only check-ins refresh it, so it is the lease,
  and a standby must never send one (every PATCH on a service is a check-in).
* the ``description``, which any PATCH may set; the server applies one request at a
  time, so the last writer wins.  The holder's *marker* is kept at its end:
  ``[topchef-worker 3f2a9c1b7d0e on host-a, pid 4242: active]``.  ``released``
  instead of ``active`` says that the holder stopped cleanly.
* ``is_available``, which no server logic reads: set while a worker serves the
  service, cleared when it releases it, for people and dashboards.

The protocol (a write, a wait, a read back: Fischer's mutual exclusion, with the
server as the shared register):

1. A standby reads the marker (``GET /services``, cheap) every :data:`CHECK`
   seconds.  The lease is *free* when there is no marker, when it says
   ``released``, or when it is this worker's own and this worker knows that no
   other process of its own runs (a restart with the same journal, or a lease it
   lost to an outage).  When the marker names another holder, the standby reads the
   service's detail (its ``has_timed_out``) at most every :func:`detail_interval`
   seconds, a period that grows with what the detail costs the server; a holder seen
   timed out for :data:`GRACE` seconds is gone.
2. A candidate writes its marker (and ``is_available``) in one PATCH, then waits
   :data:`SETTLE` seconds and reads the marker back.  If it is still its own, it is
   active; otherwise another candidate wrote later and won.  A candidate whose
   read-then-write took longer than :data:`SETTLE` could have overwritten a winner
   that already read its own marker back, so it never becomes active on that write.
3. The active worker checks in every third of the timeout and reads the marker after
   each check-in: a marker that is not its own is evidence of another active worker,
   and it steps down at once (it claims nothing more; running jobs finish).  It stops
   claiming, too, when it has not checked in for two thirds of the timeout (an outage
   may let a standby take over), and competes again when the server answers.
4. A clean stop writes the ``released`` marker, so that a standby is serving within
   :data:`CHECK` + :data:`SETTLE` seconds, not a whole timeout later.

A worker that takes the lease from a holder that timed out (or from its own earlier,
crashed run) returns the service's WORKING jobs to the queue: only the active worker
claims, so they are that holder's.  See ``docs/scaling.md`` for the failure cases.
"""

from __future__ import annotations

import enum
import logging
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from ._client import TopChefClient
from ._models import Service
from .exceptions import ServiceNotFoundError, TopChefError

if TYPE_CHECKING:
    from ._identity import Identity

__all__ = [
    "CHECK",
    "GRACE",
    "SETTLE",
    "Lease",
    "Listing",
    "Marker",
    "ServiceRole",
    "detail_interval",
    "parse",
]

_log = logging.getLogger("topchef_worker")

#: Seconds between a standby's reads of the marker.
CHECK = 1.0
#: Seconds a candidate waits between writing its marker and reading it back; also
#: the longest a candidate's read-then-write may take for it to become active.
SETTLE = 1.0
#: Seconds a standby must see the holder timed out before taking over.  The holder
#: itself takes its lease back at once when the server answers again (after an
#: outage every holder has timed out), so that it is not robbed of running jobs.
GRACE = 3.0
#: Most of the server's time one standby's detail reads may take.
DETAIL_SHARE = 0.05

_MARKER = re.compile(
    r"(?:\n\n)?\[topchef-worker (?P<id>[0-9a-f]{6,32}) on (?P<host>[^\s,\]]*), "
    r"pid (?P<pid>\d+): (?P<state>active|released)\]\Z"
)


class ServiceRole(str, enum.Enum):
    """How a worker serves one service.

    ACTIVE: it checks in and claims.  STANDBY: another worker does, and this one
    waits to take over.  SHARED: the handler was registered with
    ``exclusive=False``, so this worker claims alongside any others.
    """

    ACTIVE = "active"
    STANDBY = "standby"
    SHARED = "shared"

    def __str__(self) -> str:
        return self.value


@attrs.frozen
class Marker:
    """The holder named at the end of a service's description."""

    id: str
    host: str
    pid: int
    released: bool = False

    def __str__(self) -> str:
        state = "released" if self.released else "active"
        return f"[topchef-worker {self.id} on {self.host}, pid {self.pid}: {state}]"

    @property
    def who(self) -> str:
        """The holder, for log lines."""
        return f"worker {self.id} on {self.host} (pid {self.pid})"


def parse(description: str) -> tuple[str, Marker | None]:
    """Split a description into the user's text and the marker at its end."""
    found = _MARKER.search(description)
    if found is None:
        return description, None
    marker = Marker(
        id=found["id"],
        host=found["host"],
        pid=int(found["pid"]),
        released=found["state"] == "released",
    )
    return description[: found.start()], marker


def marked(text: str, marker: Marker) -> str:
    """The user's *text* with *marker* at its end."""
    return f"{text}\n\n{marker}" if text else str(marker)


def detail_interval(cost: float, share: float = DETAIL_SHARE) -> float:
    """Seconds between a standby's detail reads, when one took *cost* seconds.

    The detail lists every job the service ever had, and the server answers one
    request at a time, so a standby reads it at most *share* of the time (every
    second while it is cheap; every 12 s at 10,000 jobs of history).  A worker with
    several exclusive services divides :data:`DETAIL_SHARE` among them.
    """
    return max(CHECK, cost / share)


class Listing:
    """``GET /services``, shared by every lease of one worker.

    Each lease finds its own service's marker in the list, so a worker standing by
    for 200 services sends one such request a second, not 200.  A read is reused
    by any lease that asks for one sent no earlier than it needs (a read back after
    the settle time needs one sent after it).
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # one read at a time; the others reuse it
        self._asked_at: float | None = None
        self._descriptions: dict[str, str] = {}

    def description(
        self, client: TopChefClient, service_id: str, *, sent_after: float
    ) -> str | None:
        """*service_id*'s description from a read sent after *sent_after* (None:
        the server does not list it).  A read that does not list it is not reused: it
        may be older than the service (registered again under a new id)."""
        with self._lock:
            stale = self._asked_at is None or self._asked_at <= sent_after
            if stale or service_id not in self._descriptions:
                asked_at = self._clock()
                listed = {summary.id: summary.description for summary in client.services()}
                self._asked_at, self._descriptions = asked_at, listed
            return self._descriptions.get(service_id)


@attrs.frozen
class View:
    """What one read of the lease saw."""

    text: str  # the description without the marker
    marker: Marker | None
    timed_out: bool | None  # None: a cheap read, which does not say
    service: Service | None = None  # the detail, when read


class Lease:
    """One service's lease, as one worker sees it.

    Not thread-safe: the worker runs one step of a service's lease at a time.  Every
    method may raise :class:`~topchef_worker.exceptions.TopChefError` from a request;
    the caller retries the step.

    Args:
        service_id: The service.
        identity: This worker process.
        clock: Monotonic seconds (injectable for tests).
        timeout: The service's timeout in seconds.
    """

    def __init__(
        self,
        service_id: str,
        identity: Identity,
        clock: Callable[[], float],
        timeout: float,
        *,
        settle: float = SETTLE,
        listing: Listing | None = None,
        detail_share: float = DETAIL_SHARE,
    ) -> None:
        self.service_id = service_id
        self.settle = settle
        self._listing = listing or Listing(clock)
        self._detail_share = detail_share
        self.identity = identity
        self._clock = clock
        self.timeout = timeout
        self.role = ServiceRole.STANDBY
        #: The other holder this standby waits for (None: not seen yet, or none).
        self.holder: Marker | None = None
        #: The marker seen before this worker took the lease.
        self.previous: Marker | None = None
        #: Clock time of the last successful check-in (while active).
        self.renewed_at: float | None = None
        self._text = ""  # the user's description, as last read
        self._mine = identity.stable  # an active marker with my id is mine to take
        self._gave_up_at: float | None = None  # a write too slow to be safe, then
        self._candidate_since: float | None = None  # my marker was written then
        self._timed_out_since: float | None = None
        self._detail_at: float | None = None
        self._detail_cost = 0.0

    def __repr__(self) -> str:
        return f"<Lease of service {self.service_id} {self.role.value}>"

    # -- standby and candidate ------------------------------------------------------

    def step(self, client: TopChefClient) -> float:
        """Do what is due for a standby: read the lease, and write or verify this
        worker's claim to it.  Returns the seconds until the next step; afterwards
        ``role`` is ACTIVE if the lease is now this worker's."""
        if self.role is ServiceRole.ACTIVE:
            return CHECK
        if self._candidate_since is not None:
            return self._verify(client)
        asked_at = self._clock()
        view = self._read(client, detail=self._detail_due(self.holder))
        free, why = self._free(view, self._clock())
        if not free and view.timed_out is None and self._detail_due(view.marker):
            view = self._read(client, detail=True)  # a new holder: does it check in?
            free, why = self._free(view, self._clock())
        now = self._clock()
        if not free:
            if view.marker is not None and view.marker != self.holder:
                _log.info(
                    "service %s is served by %s: standing by (%s)",
                    self.service_id,
                    view.marker.who,
                    why,
                    extra={"service_id": self.service_id},
                )
            self.holder = view.marker
            if self._timed_out_since is not None:
                return max(0.0, self._timed_out_since + GRACE - now)
            return CHECK
        self.previous = view.marker
        self.renewed_at = self._clock()  # the write is a check-in
        try:
            self._write(client, view.text, active=True)
        finally:
            # A write that failed may have landed all the same: it is verified like
            # one that succeeded, if its outcome came as quickly.
            self._wrote(self._clock() - asked_at)
        return self.settle

    def _wrote(self, took: float) -> None:
        """This worker's marker was written (or may have been), *took* seconds after
        the read that found the lease free."""
        if took > self.settle:
            # Too slow to be safe: a candidate that read after this one's read may
            # have read its own marker back already.  The marker may now name this
            # worker without it being active; it is not taken as this worker's own
            # again, so everyone waits for it to time out.
            self._mine = False
            self._gave_up_at = self._clock()
            _log.warning(
                "service %s: writing this worker's claim to the lease took %.3g s "
                "(over %g s); not taking the lease on it",
                self.service_id,
                took,
                self.settle,
                extra={"service_id": self.service_id},
            )
            return
        # Read back SETTLE after the write was answered: a later write by a
        # candidate that read before this one landed took it more than SETTLE.
        self._candidate_since = self._clock()

    def _verify(self, client: TopChefClient) -> float:
        written_at = self._candidate_since
        assert written_at is not None
        wait = written_at + self.settle - self._clock()
        if wait > 0:
            return wait
        # Sent after the settle time (failed: verified at the next step).
        view = self._read(client, detail=False, fresh=self._clock() - written_at - self.settle)
        self._candidate_since = None
        if view.marker == self.identity.marker():
            self.role = ServiceRole.ACTIVE
            self.holder = None
            self._mine = True
            self._timed_out_since = None
            return CHECK
        self.holder = view.marker
        _log.info(
            "service %s: %s took the lease first; standing by",
            self.service_id,
            "another worker" if view.marker is None else view.marker.who,
            extra={"service_id": self.service_id},
        )
        return CHECK

    def _free(self, view: View, now: float) -> tuple[bool, str]:
        """Whether this worker may write its claim, and why not."""
        marker = view.marker
        if marker is None or marker.released:
            return True, ""
        if marker.id == self.identity.id:
            if self._mine:
                return True, ""
            if self._gave_up_at is not None and now - self._gave_up_at >= self.timeout:
                # Any worker active on a lease this marker overwrote has read it by
                # now (it does after every check-in) and stepped down.
                self._gave_up_at = None
                self._mine = True
                return True, ""
        if view.timed_out is None:
            return False, "it holds the lease"
        if not view.timed_out:
            self._timed_out_since = None
            return False, "it checks in"
        if self._timed_out_since is None:
            self._timed_out_since = now
        if now - self._timed_out_since < GRACE:
            return False, f"it has not checked in for its timeout; taking over in {GRACE:g} s"
        return True, ""

    def _detail_due(self, marker: Marker | None) -> bool:
        """Whether to read the service's detail: only to learn whether another
        holder, *marker*, timed out, and not more often than it costs."""
        if marker is None or marker.released:
            return False
        if marker != self.holder or self._timed_out_since is not None:
            return True
        if self._detail_at is None:
            return True
        return self._clock() - self._detail_at >= detail_interval(
            self._detail_cost, self._detail_share
        )

    @property
    def candidate(self) -> bool:
        """Whether this worker's marker was written and is not read back yet."""
        return self._candidate_since is not None

    def waits(self) -> bool:
        """Whether this standby waits for another worker that holds the lease."""
        holder = self.holder
        return (
            self.role is ServiceRole.STANDBY
            and holder is not None
            and not holder.released
            and holder.id != self.identity.id
        )

    # -- active ---------------------------------------------------------------------

    def renew(self, client: TopChefClient) -> str | None:
        """Check in, then read the marker: None while it is still this worker's,
        else why the lease is not (``holder`` then names the one found, if any).

        A failed check-in raises; a failed read after a successful check-in does not
        (the next check-in reads again).
        """
        sent_at = self._clock()
        client.check_in(self.service_id)
        try:
            view = self._read(client, detail=False, fresh=self._clock() - sent_at)
        except ServiceNotFoundError:
            raise
        except TopChefError as error:
            _log.debug(
                "service %s: reading the lease failed (read again after the next check-in): %s",
                self.service_id,
                error,
            )
            self.renewed_at = sent_at  # no sign of another holder
            return None
        if view.marker == self.identity.marker():
            # Renewed only now: a worker resumed after a pause must not claim on the
            # strength of a check-in before it knows the lease is still its own.
            self.renewed_at = sent_at
            return None
        self.holder = view.marker
        if view.marker is None:
            return "its marker was removed from the service's description"
        if view.marker.released:
            return f"{view.marker.who} marked the service released"
        return f"{view.marker.who} took the lease"

    def claimable(self, now: float) -> bool:
        """Whether this worker may claim now: active, and checked in within two
        thirds of the timeout (a standby takes over only after a whole one)."""
        return (
            self.role is ServiceRole.ACTIVE
            and self.renewed_at is not None
            and now - self.renewed_at < self.timeout * 2 / 3
        )

    def step_down(self, *, lapsed: bool) -> None:
        """Become a standby: another holder was found, or (*lapsed*) the lease
        lapsed in an outage, and this worker takes it back, without waiting, when
        the server answers."""
        self.role = ServiceRole.STANDBY
        self.renewed_at = None
        self._candidate_since = None
        self._timed_out_since = None
        self._gave_up_at = None
        self._mine = lapsed

    def release(self, client: TopChefClient) -> bool:
        """Write the ``released`` marker and clear ``is_available`` (a clean stop),
        if the marker is still this worker's: a release must not undo another
        worker's claim.  Returns whether it was written."""
        if self.role is not ServiceRole.ACTIVE and not self.candidate:
            return False
        view = self._read(client, detail=False, fresh=0.0)
        self._candidate_since = None
        if view.marker == self.identity.marker():
            self._write(client, view.text, active=False)
        self.role = ServiceRole.STANDBY  # (a failure above leaves it active)
        return view.marker == self.identity.marker()

    # -- reads and writes -----------------------------------------------------------

    def _read(self, client: TopChefClient, *, detail: bool, fresh: float = CHECK / 2) -> View:
        if detail:
            started = self._clock()
            service = client.service(self.service_id)
            self._detail_at = self._clock()
            self._detail_cost = self._detail_at - started
            self.timeout = service.timeout
            text, marker = parse(service.description)
            view = View(text=text, marker=marker, timed_out=service.has_timed_out, service=service)
        else:
            # Fresh enough for a standby's watch; a read back must be sent after the
            # settle time, and a release's after now.
            description = self._listing.description(
                client, self.service_id, sent_after=self._clock() - fresh
            )
            if description is None:
                raise ServiceNotFoundError(
                    f"service {self.service_id} is not listed by the server",
                    service_id=self.service_id,
                    method="GET",
                    path="/services",
                    status_code=200,
                )
            text, marker = parse(description)
            view = View(text=text, marker=marker, timed_out=None)
        self._text = view.text
        return view

    def _write(self, client: TopChefClient, text: str, *, active: bool) -> None:
        marker = self.identity.marker(released=not active)
        service = client.update_service(
            self.service_id, description=marked(text, marker), is_available=active
        )
        self.timeout = service.timeout
