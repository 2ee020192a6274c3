"""The worker's pure decisions: poll backoff, heartbeat period, what to report."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from topchef_worker import JobStatus
from topchef_worker._policy import (
    MESSAGE_LIMIT,
    Report,
    default_error_results,
    error_reports,
    heartbeat_delay,
    poll_delay,
    success_reports,
)
from topchef_worker.exceptions import HandlerError, InvalidResultsError, JobTimeoutError

fractions = st.floats(min_value=0, max_value=1, exclude_max=True)


@given(
    st.integers(min_value=-5, max_value=10_000),
    st.floats(min_value=1e-4, max_value=1.0),
    st.floats(min_value=1.0, max_value=3600.0),
    st.floats(min_value=0, max_value=0.99),
    fractions,
)
def test_poll_delay_bounds(
    empty: int, minimum: float, maximum: float, jitter: float, draw: float
) -> None:
    """Never negative, never above poll_interval, zero right after a job was found."""
    delay = poll_delay(empty, minimum=minimum, maximum=maximum, jitter=jitter, rand=lambda: draw)
    assert 0.0 <= delay <= maximum
    assert math.isfinite(delay)
    if empty <= 0:
        assert 0.0 == delay
    else:
        assert delay >= min(maximum, minimum) * (1 - jitter)


@given(st.integers(min_value=1, max_value=60))
def test_poll_delay_doubles_until_capped(empty: int) -> None:
    """Without jitter the delay doubles from the minimum up to the maximum."""
    delay = poll_delay(empty, minimum=0.01, maximum=1.0, jitter=0.0, rand=lambda: 0.5)
    assert min(1.0, 0.01 * 2 ** (empty - 1)) == pytest.approx(delay)


@given(st.floats(min_value=0.001, max_value=1e6), st.floats(0, 0.99), fractions)
def test_heartbeat_delay_never_longer_than_the_interval(
    interval: float, jitter: float, draw: float
) -> None:
    """Jitter only shortens the period, by at most the jitter fraction."""
    delay = heartbeat_delay(interval, jitter=jitter, rand=lambda: draw)
    assert interval * (1 - jitter) <= delay <= interval


def test_success_reports_completed_with_results() -> None:
    """A dict that can be sent becomes one COMPLETED report."""
    assert (Report(JobStatus.COMPLETED, {"sum": 3}),) == success_reports(
        {"sum": 3}, job_id="j", service_id="s", check=None
    )
    assert {"status": "COMPLETED", "results": {"sum": 3}} == Report(
        JobStatus.COMPLETED, {"sum": 3}
    ).body()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ([1], "returned list, expected a dict"),
        (None, "returned NoneType"),
        ({"x": float("nan")}, "not JSON-serialisable"),
        ({"x": object()}, "not JSON-serialisable"),
    ],
)
def test_unsendable_results_become_an_error(value: Any, reason: str) -> None:
    """Non-dicts and non-JSON values are an InvalidResultsError naming the problem."""
    outcome = success_reports(value, job_id="j", service_id="s", check=None)
    assert isinstance(outcome, InvalidResultsError)
    assert reason in str(outcome)
    assert ("j", "s") == (outcome.job_id, outcome.service_id)


def test_results_failing_the_local_check() -> None:
    """The local schema check's messages are the reasons."""
    outcome = success_reports({"sum": "x"}, job_id="j", service_id="s", check=lambda _: ["bad"])
    assert isinstance(outcome, InvalidResultsError)
    assert ("bad",) == outcome.reasons


def test_error_reports_without_error_results_send_the_type_and_message() -> None:
    """By default the exception's type and message go with ERROR, and ERROR alone,
    the one report the server cannot reject, follows as the fallback."""
    assert (
        (Report(JobStatus.ERROR, {"error": "x", "error_type": "ValueError"}), bare()),
        (),
    ) == error_reports(ValueError("x"), error_results=None, check=None)


def test_default_error_results_the_schema_rejects_leave_bare_error_unremarked() -> None:
    """A result schema that does not accept them (say, ``required: [sum]``) leaves
    ERROR alone, with no note: the handler's author asked for nothing."""
    assert ((bare(),), ()) == error_reports(
        ValueError("x"), error_results=None, check=lambda value: ["'sum' is a required property"]
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (KeyError("points"), {"error": "'points'", "error_type": "KeyError"}),
        (RuntimeError(), {"error": "RuntimeError", "error_type": "RuntimeError"}),
        (
            HandlerError("boom", type_name="lab.InstrumentError"),
            {"error": "boom", "error_type": "lab.InstrumentError"},
        ),
        (
            ValueError("v" * 5000),
            {"error": "v" * (MESSAGE_LIMIT - 3) + "...", "error_type": "ValueError"},
        ),
    ],
    ids=["key-error", "no-message", "unpicklable-in-a-child", "long-message"],
)
def test_default_error_results(error: BaseException, expected: dict[str, str]) -> None:
    """An empty message is the type's name; an exception that could not travel from
    a child process keeps its own type's name; a long message is cut."""
    assert expected == default_error_results(error)


def bare() -> Report:
    return Report(JobStatus.ERROR)


def test_error_results_are_sent_with_error_and_fall_back_to_bare() -> None:
    """A usable dict from error_results goes first; bare ERROR follows as fallback."""
    seen: list[BaseException] = []

    def explain(error: BaseException) -> dict[str, Any]:
        seen.append(error)
        return {"message": str(error)}

    error = JobTimeoutError("too slow", job_id="j", service_id="s", seconds=1.0)
    reports, notes = error_reports(error, error_results=explain, check=None)
    assert (Report(JobStatus.ERROR, {"message": "too slow"}), Report(JobStatus.ERROR)) == reports
    assert () == notes
    assert [error] == seen


@pytest.mark.parametrize(
    ("callback", "note"),
    [
        (lambda e: 1 / 0, "error_results raised ZeroDivisionError"),
        (lambda e: ["x"], "error_results: the handler returned list"),
        (lambda e: {"x": 1}, "error_results: no"),
    ],
)
def test_unusable_error_results_fall_back_to_bare_error(callback: Any, note: str) -> None:
    """A raising, non-dict or schema-failing error_results leaves bare ERROR, noted."""
    reports, notes = error_reports(ValueError("x"), error_results=callback, check=lambda _: ["no"])
    assert (Report(JobStatus.ERROR),) == reports
    assert note in notes[0]


def test_error_results_may_decline() -> None:
    """Returning None means: send ERROR alone, nothing to note."""
    assert ((Report(JobStatus.ERROR),), ()) == error_reports(
        ValueError("x"), error_results=lambda e: None, check=None
    )
