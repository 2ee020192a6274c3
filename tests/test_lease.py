"""The lease protocol that keeps one worker active per service (issue 11).

Each test drives :class:`Lease` objects (one per would-be worker) against a real
:class:`TopChefServer`, on one injected clock: the server's :class:`ManualClock`,
read in seconds by the leases too, so that a test moves both at once and nothing
waits.  Where the race needs every candidate to read before any writes, each one
steps on a thread of its own through a client that holds its write at a barrier.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from topchef_worker import Service, TopChefClient
from topchef_worker._identity import Identity
from topchef_worker._lease import CHECK, GRACE, Lease, Marker, ServiceRole, marked, parse
from topchef_worker.testing import ManualClock, TopChefServer

pytestmark = pytest.mark.timeout(30)

SETTLE = 1.0


class HeldClient(TopChefClient):
    """A real client whose lease writes wait for *hold* first: a candidate's read
    and its write are then as far apart as the test wants."""

    def __init__(self, url: str, hold: Callable[[], object]) -> None:
        super().__init__(url, timeout=5.0, retry=None)
        self.hold = hold

    def update_service(self, service_id: str, **fields: Any) -> Service:
        self.hold()
        return super().update_service(service_id, **fields)


@pytest.fixture
def seconds(clock: ManualClock) -> Callable[[], float]:
    epoch = clock()
    return lambda: (clock() - epoch).total_seconds()


def leases(service: Service, seconds: Callable[[], float], n: int) -> list[Lease]:
    return [
        Lease(service.id, Identity(id=f"{i + 1:012x}", host="host", pid=i + 1), seconds, 30)
        for i in range(n)
    ]


def together(server: TopChefServer, candidates: Sequence[Lease]) -> None:
    """Step every candidate at once: all read the lease before any of them writes."""
    barrier = threading.Barrier(len(candidates), timeout=10)
    errors: list[BaseException] = []

    def step(lease: Lease) -> None:
        with HeldClient(server.url, barrier.wait) as held:
            try:
                lease.step(held)
            except BaseException as error:  # reported by the assertion below
                errors.append(error)

    threads = [threading.Thread(target=step, args=(lease,)) for lease in candidates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not errors
    assert not any(thread.is_alive() for thread in threads)


def holder_on(client: TopChefClient, service: Service) -> Marker | None:
    return parse(client.service(service.id).description)[1]


def active(candidates: Sequence[Lease]) -> list[Lease]:
    return [lease for lease in candidates if lease.role is ServiceRole.ACTIVE]


def elect(client: TopChefClient, clock: ManualClock, lease: Lease) -> None:
    lease.step(client)
    clock.advance(SETTLE)
    lease.step(client)
    assert lease.role is ServiceRole.ACTIVE


# -- the marker -------------------------------------------------------------------------


def test_the_marker_keeps_the_users_description() -> None:
    """The marker is added at the end and parsed off again; text that only looks
    like one in the middle is the user's."""
    marker = Marker(id="3f2a9c1b7d0e", host="host-a", pid=4242)
    text = "adds a and b\n[topchef-worker 3f2a9c1b7d0e on x, pid 1: active] in the text"
    assert (text, marker) == parse(marked(text, marker))
    released = Marker(id="3f2a9c1b7d0e", host="host-a", pid=4242, released=True)
    assert ("", released) == parse(marked("", released))
    assert (text, None) == parse(text)
    assert str(marker).endswith("on host-a, pid 4242: active]")


# -- electing one of many ---------------------------------------------------------------


def test_candidates_that_start_together_elect_exactly_one(
    client: TopChefClient, server: TopChefServer, clock: ManualClock, seconds: Any, adder: Service
) -> None:
    """Eight workers read a free lease before any of them writes: all write, and
    after the settle time only the last writer reads its own marker back."""
    candidates = leases(adder, seconds, 8)
    together(server, candidates)
    assert [] == active(candidates)  # nobody is active before reading back
    clock.advance(SETTLE)
    for lease in candidates:
        lease.step(client)

    [winner] = active(candidates)
    assert winner.identity.marker() == holder_on(client, adder)
    assert all(lease.waits() for lease in candidates if lease is not winner)
    service = client.service(adder.id)
    assert (True, "adds a and b") == (service.is_service_available, parse(service.description)[0])


def test_standbys_race_to_take_over_and_exactly_one_does(
    client: TopChefClient, server: TopChefServer, clock: ManualClock, seconds: Any, adder: Service
) -> None:
    """The holder stops checking in.  Six standbys see it timed out, wait GRACE, and
    then all try at once: one wins, and the old holder, should it come back, finds
    that it lost the lease."""
    holder, *standbys = leases(adder, seconds, 7)
    elect(client, clock, holder)
    for lease in standbys:
        lease.step(client)
    assert all(lease.waits() for lease in standbys)

    clock.advance(31)  # past the service's 30 s timeout: the holder is gone
    for lease in standbys:
        assert GRACE == lease.step(client)  # seen timed out: wait GRACE before acting
    assert holder.identity.marker() == holder_on(client, adder)
    clock.advance(GRACE)
    together(server, standbys)
    clock.advance(SETTLE)
    for lease in standbys:
        lease.step(client)

    [winner] = active(standbys)
    assert winner.previous == holder.identity.marker()
    assert f"worker {winner.identity.id} on host" in str(holder.renew(client))
    assert holder.identity.marker() != holder_on(client, adder)


def test_a_holder_that_checks_in_again_within_grace_keeps_its_lease(
    client: TopChefClient, clock: ManualClock, seconds: Any, adder: Service
) -> None:
    """A standby that saw the holder timed out does not take over if the holder
    checks in again within GRACE (after an outage, every holder has timed out)."""
    holder, standby = leases(adder, seconds, 2)
    elect(client, clock, holder)
    standby.step(client)
    clock.advance(31)
    standby.step(client)
    assert holder.renew(client) is None  # back: a check-in, and still its marker
    clock.advance(GRACE)
    standby.step(client)
    clock.advance(SETTLE)
    standby.step(client)

    assert (ServiceRole.ACTIVE, ServiceRole.STANDBY) == (holder.role, standby.role)
    assert holder.identity.marker() == holder_on(client, adder)


def test_a_candidate_whose_write_was_slow_never_becomes_active_on_it(
    client: TopChefClient, server: TopChefServer, clock: ManualClock, seconds: Any, adder: Service
) -> None:
    """Fischer's condition: C reads the free lease, then its write lands only after
    B wrote, read back its own marker and became active.  C must not become active
    on that write; B finds C's marker at its next check-in and steps down, and C
    takes the lease once a whole timeout has passed (no one can be active then)."""
    b, c = leases(adder, seconds, 2)
    c_read = threading.Event()
    release = threading.Event()

    def hold() -> None:
        c_read.set()
        assert release.wait(10)

    with HeldClient(server.url, hold) as slow:
        thread = threading.Thread(target=c.step, args=(slow,))
        thread.start()
        assert c_read.wait(10)  # C read the lease free and is about to write
        b.step(client)
        clock.advance(SETTLE + 0.5)
        b.step(client)
        assert ServiceRole.ACTIVE is b.role
        release.set()
        thread.join(10)

    assert c.identity.marker() == holder_on(client, adder)
    clock.advance(SETTLE)
    c.step(client)
    assert [b] == active([b, c])  # C gave up: its write took longer than SETTLE
    reason = b.renew(client)
    assert reason is not None
    assert c.identity.id in reason
    b.step_down(lapsed=False)
    assert [] == active([b, c])

    clock.advance(30)
    b.step(client)  # C's marker checked in 30 s ago: not timed out, B waits
    c.step(client)  # C's own marker, a whole timeout after its slow write: free
    clock.advance(SETTLE)
    b.step(client)
    c.step(client)
    assert [c] == active([b, c])


# -- handing over -----------------------------------------------------------------------


def test_a_released_lease_is_taken_at_once_without_waiting_for_a_timeout(
    client: TopChefClient, clock: ManualClock, seconds: Any, adder: Service
) -> None:
    holder, standby = leases(adder, seconds, 2)
    elect(client, clock, holder)
    standby.step(client)
    holder.release(client)
    service = client.service(adder.id)
    assert (False, False) == (service.is_service_available, service.has_timed_out)

    clock.advance(CHECK)  # the standby's next read of the marker
    elect(client, clock, standby)
    assert standby.previous is not None
    assert standby.previous.released


def test_a_restarted_worker_with_a_stable_identity_takes_its_lease_back_at_once(
    client: TopChefClient, clock: ManualClock, seconds: Any, adder: Service
) -> None:
    """With a journal, a worker's identity survives a restart (the journal's lock
    says no other process of it runs): its own active marker is not a live holder."""
    me = Identity(id="a1b2c3d4e5f6", host="host", pid=1, stable=True)
    elect(client, clock, Lease(adder.id, me, seconds, 30))
    other = Lease(adder.id, Identity(id="0f0f0f0f0f0f", host="host", pid=2), seconds, 30)
    other.step(client)
    restarted = Lease(adder.id, Identity(id=me.id, host="host", pid=3, stable=True), seconds, 30)

    elect(client, clock, restarted)
    other.step(client)
    assert restarted.previous == me.marker()
    assert (True, ServiceRole.STANDBY) == (other.waits(), other.role)


def test_a_foreign_marker_found_at_a_check_in_is_evidence_of_another_active_worker(
    client: TopChefClient, clock: ManualClock, seconds: Any, adder: Service
) -> None:
    [lease] = leases(adder, seconds, 1)
    elect(client, clock, lease)
    assert lease.renew(client) is None
    intruder = Marker(id="99aa99aa99aa", host="other", pid=7)
    client.update_service(adder.id, description=marked("adds a and b", intruder))

    reason = lease.renew(client)
    assert reason == "worker 99aa99aa99aa on other (pid 7) took the lease"
    assert lease.holder == intruder
