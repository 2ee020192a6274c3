"""RetryPolicy's decisions, and the client retrying what is safe to retry."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from topchef_worker import RetryPolicy, Service, TopChefClient
from topchef_worker.exceptions import (
    ClientError,
    RejectedError,
    ServerError,
    TransportError,
)
from topchef_worker.testing import TopChefServer


def policies_with(attempts: st.SearchStrategy[int | None]) -> st.SearchStrategy[RetryPolicy]:
    return st.builds(
        RetryPolicy,
        initial=st.floats(0.001, 10),
        maximum=st.floats(0.001, 600),
        exp_base=st.floats(1, 10),
        jitter=st.floats(0, 0.99),
        attempts=attempts,
        deadline=st.none() | st.floats(0, 1e4),
        max_retry_after=st.floats(0, 600),
    )


policies = policies_with(st.none() | st.integers(1, 100))


class FakeTime:
    """A clock that moves only when the code under test sleeps (or a test moves it)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _server_error(status: int = 503, retry_after: float | None = None) -> ServerError:
    return ServerError("x", method="GET", path="/", status_code=status, retry_after=retry_after)


@given(policies, st.integers(1, 10_000), st.floats(0, 1, exclude_max=True))
def test_waits_are_bounded(policy: RetryPolicy, attempt: int, rand: float) -> None:
    """Every wait is between (1 - jitter) of the capped exponential and the cap."""
    wait = policy.wait(attempt, None, rand)
    assert 0 < wait <= policy.maximum
    base = min(policy.maximum, policy.initial * policy.exp_base ** min(attempt - 1, 256))
    assert wait >= base * (1 - policy.jitter) * (1 - 1e-9)


@given(policies, st.integers(1, 50))
def test_waits_never_shrink_without_jitter(policy: RetryPolicy, attempt: int) -> None:
    """Without the random part, each wait is at least the one before."""
    assert policy.wait(attempt + 1, None, 0.0) >= policy.wait(attempt, None, 0.0)


@given(policies, st.floats(0.001, 1e5))
def test_retry_after_is_respected_and_capped(policy: RetryPolicy, retry_after: float) -> None:
    """A server's Retry-After lengthens the wait, up to max_retry_after."""
    wait = policy.wait(1, _server_error(retry_after=retry_after), 0.0)
    assert wait >= min(retry_after, policy.max_retry_after)
    assert wait <= max(policy.maximum, policy.max_retry_after)


@given(policies, st.integers(1, 200), st.floats(0, 1e5), st.floats(0, 1e3))
def test_only_transient_errors_within_limits_are_retried(
    policy: RetryPolicy, attempt: int, elapsed: float, wait: float
) -> None:
    """Transient errors are retried while attempts remain and the next attempt would
    start before the deadline; a 4xx never."""
    within = (policy.attempts is None or attempt < policy.attempts) and (
        policy.deadline is None or elapsed + wait < policy.deadline
    )
    assert within == policy.retries(_server_error(), attempt, elapsed, wait)
    rejected = RejectedError("x", method="PATCH", path="/", status_code=400)
    assert policy.retries(rejected, attempt, elapsed, wait) is False


@given(policies, st.integers(1, 200), st.floats(0, 1e5))
def test_retries_counts_the_longest_wait_by_default(
    policy: RetryPolicy, attempt: int, elapsed: float
) -> None:
    """Without a wait, retries() assumes the policy's unjittered (longest) wait."""
    error = _server_error()
    longest = policy.wait(attempt, error, 0.0)
    assert policy.retries(error, attempt, elapsed, longest) == policy.retries(
        error, attempt, elapsed
    )


def test_a_wait_past_the_deadline_is_not_taken() -> None:
    """deadline=2 with waits of 1 s then 2 s: attempts start at 0 and 1 s, and the one
    that would start at 3 s is not made; the last error is raised at once."""
    fake = FakeTime()
    started: list[float] = []

    def failing() -> None:
        started.append(fake.now)
        raise _server_error()

    policy = RetryPolicy(initial=1.0, jitter=0.0, attempts=None, deadline=2.0)
    with pytest.raises(ServerError):
        policy.call(failing, sleep=fake.sleep, clock=fake.clock)
    assert [0.0, 1.0] == started
    assert [1.0] == fake.slept


def test_the_deadline_counts_the_wait_on_the_default_clock() -> None:
    """On the real clock too, a wait that would end past the deadline is not taken
    (the recorded waits take no time, far less than the 500 s margin)."""
    slept: list[float] = []
    calls: list[int] = []

    def failing() -> None:
        calls.append(1)
        raise _server_error()

    policy = RetryPolicy(initial=1000.0, maximum=1e4, jitter=0.0, attempts=5, deadline=1500.0)
    with pytest.raises(ServerError):
        policy.call(failing, sleep=slept.append)
    assert [1000.0] == slept
    assert 2 == len(calls)


@given(
    policies_with(st.integers(1, 20)),
    st.lists(st.floats(0, 100), min_size=20, max_size=20),
    st.floats(0, 1, exclude_max=True),
)
def test_call_decides_as_retries_does(
    policy: RetryPolicy, durations: list[float], rand: float
) -> None:
    """call() makes another attempt exactly when retries() says so, given the time the
    attempts took and the wait drawn, so no attempt starts past the deadline."""
    fake = FakeTime()
    started: list[float] = []
    ended: list[float] = []
    error = _server_error()

    def failing() -> None:
        started.append(fake.now)
        fake.now += durations[len(ended)]
        ended.append(fake.now)
        raise error

    with pytest.raises(ServerError):
        policy.call(failing, sleep=fake.sleep, clock=fake.clock, rand=lambda: rand)
    waits = [*fake.slept, policy.wait(len(ended), error, rand)]
    decisions = [
        policy.retries(error, attempt, elapsed, wait)
        for attempt, (elapsed, wait) in enumerate(zip(ended, waits, strict=True), start=1)
    ]
    assert [True] * (len(ended) - 1) + [False] == decisions
    assert policy.deadline is None or all(start < policy.deadline for start in started[1:])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": 0},
        {"maximum": -1},
        {"exp_base": 0.5},
        {"jitter": 1},
        {"attempts": 0},
        {"deadline": -1},
        {"max_retry_after": -1},
    ],
)
def test_nonsense_policies_are_refused(kwargs: dict[str, Any]) -> None:
    """Each bad parameter fails at construction, naming itself."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RetryPolicy(**kwargs)


def test_forever_never_gives_up() -> None:
    """The worker's policy has no attempt or time limit."""
    policy = RetryPolicy.forever()
    assert (None, None) == (policy.attempts, policy.deadline)
    assert policy.retries(_server_error(), 10**6, 10.0**9)


def test_call_retries_then_returns() -> None:
    """call() repeats a failing function and returns its first success."""
    outcomes: list[Any] = [_server_error(), _server_error(), "done"]
    slept: list[float] = []

    def flaky() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return str(outcome)

    policy = RetryPolicy(initial=1.0, jitter=0.0)
    assert "done" == policy.call(flaky, sleep=slept.append)
    assert [1.0, 2.0] == slept


def test_call_gives_up_after_the_attempts() -> None:
    """The last error is raised once the attempts are used up."""
    calls = []

    def failing() -> None:
        calls.append(1)
        raise _server_error()

    with pytest.raises(ServerError):
        RetryPolicy(attempts=3).call(failing, sleep=lambda s: None)
    assert 3 == len(calls)


def test_stop_event_cuts_the_wait_short() -> None:
    """Setting the stop event during a long wait ends the retries at once."""
    stop = threading.Event()
    attempted = threading.Event()
    raised: list[BaseException] = []

    def failing() -> None:
        attempted.set()
        raise _server_error()

    def retrying() -> None:
        try:
            RetryPolicy.forever(initial=30.0, jitter=0.0).call(failing, stop=stop)
        except ServerError as error:
            raised.append(error)

    thread = threading.Thread(target=retrying)
    thread.start()
    assert attempted.wait(5)
    stop.set()  # the policy is now in a 30 s wait
    thread.join(5)
    assert not thread.is_alive()
    assert [ServerError] == [type(e) for e in raised]


# -- the client -----------------------------------------------------------------------


def test_client_retries_transient_failures(server: TopChefServer, adder: Service) -> None:
    """Two 503s then success: the call succeeds after two waits."""
    slept: list[float] = []
    client = TopChefClient(server.url, retry=RetryPolicy(jitter=0.0), sleep=slept.append)
    server.faults.fail_next(2, status=503)
    assert adder.id == client.service(adder.id).id
    assert [503, 503, 200] == [r.status for r in server.requests[-3:]]
    assert [0.1, 0.2] == slept


def test_client_respects_retry_after(server: TopChefServer, adder: Service) -> None:
    """A Retry-After header sets the least wait."""
    slept: list[float] = []
    client = TopChefClient(server.url, sleep=slept.append)
    server.faults.fail_next(status=429, headers=[("Retry-After", "7")], body="busy")
    client.check_in(adder.id)
    assert [7.0] == slept


def test_client_does_not_retry_client_errors(server: TopChefServer, adder: Service) -> None:
    """A 4xx is reported at once."""
    client = TopChefClient(server.url, sleep=lambda s: None)
    server.clear_requests()
    with pytest.raises(ClientError):
        client.service("00000000-0000-0000-0000-000000000000")
    assert 1 == len(server.requests)


def test_client_gives_up_after_its_attempts(server: TopChefServer, adder: Service) -> None:
    """Past the policy's attempts the last error is raised."""
    client = TopChefClient(server.url, retry=RetryPolicy(attempts=2), sleep=lambda s: None)
    server.faults.fail_next(5)
    with pytest.raises(ServerError):
        client.next_job(adder.id)
    assert 3 == server.faults.pending


def test_a_post_that_may_have_been_applied_is_not_retried(
    server: TopChefServer, adder: Service
) -> None:
    """A submission whose answer was lost is not sent again: no duplicate job."""
    client = TopChefClient(server.url, sleep=lambda s: None)
    server.faults.drop_next(after_apply=True, method="POST")
    with pytest.raises(TransportError) as caught:
        client.submit_job(adder.id, {"a": 1, "b": 2})
    assert caught.value.request_sent
    assert 1 == len(client.jobs(adder.id))


def test_a_post_refused_with_503_is_retried(server: TopChefServer, adder: Service) -> None:
    """A 503 means not applied: the submission is retried and lands once."""
    client = TopChefClient(server.url, sleep=lambda s: None)
    server.faults.fail_next(status=503, method="POST")
    client.submit_job(adder.id, {"a": 1, "b": 2})
    assert 1 == len(client.jobs(adder.id))


def test_a_post_that_never_connected_is_retried(server: TopChefServer, adder: Service) -> None:
    """Connection refused means nothing was sent: retried once the server is back."""
    client = TopChefClient(server.url, sleep=lambda seconds: server.start())
    server.stop()
    job = client.submit_job(adder.id, {"a": 1, "b": 2})
    assert [job.id] == [j.id for j in client.jobs(adder.id)]
