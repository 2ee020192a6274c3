"""Error classification and the exception tree's promises."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from topchef_worker import ErrorEntry, is_transient
from topchef_worker.exceptions import (
    ClientError,
    InvalidRequestError,
    JobNotFoundError,
    RejectedError,
    RequestTimeoutError,
    ResponseError,
    ServerError,
    ServiceNotFoundError,
    TopChefError,
    TransportError,
    UnexpectedResponseError,
)


def _response_error(cls: type[ResponseError], status: int) -> ResponseError:
    return cls("boom", method="GET", path="/x", status_code=status)


@given(st.integers(min_value=500, max_value=599))
def test_every_5xx_is_transient(status: int) -> None:
    """A failing server may recover: 5xx answers are worth retrying."""
    assert is_transient(_response_error(ServerError, status))


@given(st.integers(min_value=400, max_value=499).filter(lambda s: s != 429))
def test_4xx_other_than_429_is_not_transient(status: int) -> None:
    """A wrong request stays wrong: 4xx (but 429) is reported, not retried."""
    assert not is_transient(_response_error(ClientError, status))


def test_429_is_transient() -> None:
    """Too Many Requests asks the client to come back later."""
    assert is_transient(_response_error(ClientError, 429))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TransportError("refused", method="GET", path="/"), True),
        (RequestTimeoutError("slow", method="GET", path="/"), True),
        (_response_error(UnexpectedResponseError, 200), False),
        (InvalidRequestError("bad id"), False),
        (ValueError("not ours"), False),
        (TopChefError("root"), False),
    ],
)
def test_transience_of_other_errors(error: BaseException, expected: bool) -> None:
    """No answer is transient; a malformed answer or a bad argument is not."""
    assert expected == is_transient(error)


def test_errors_pickle_with_their_context() -> None:
    """Exceptions cross process pools with every attribute intact."""
    entry = ErrorEntry(status_code=400, title="JSONSchema Validation Error", detail="x")
    errors = [
        RejectedError(
            "rejected",
            method="PATCH",
            path="/jobs/1",
            status_code=400,
            errors=[entry],
            body_excerpt="b",
            retry_after=2.0,
        ),
        JobNotFoundError("gone", job_id="j", method="GET", path="/jobs/j", status_code=404),
        ServiceNotFoundError("gone", service_id="s", method="GET", path="/s", status_code=404),
        TransportError("refused", method="GET", path="/"),
        InvalidRequestError("bad"),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(error) is type(copy)
        assert str(error) == str(copy)
        assert error.__dict__ == copy.__dict__


def test_invalid_request_is_a_value_error() -> None:
    """Bad arguments can be caught as the ValueError they are."""
    assert issubclass(InvalidRequestError, ValueError)
    assert issubclass(InvalidRequestError, TopChefError)
