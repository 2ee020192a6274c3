"""Fault injection for :class:`~topchef_worker.testing.TopChefServer`.

Faults are rules that match requests by method and path (a glob such as
``/services/*/jobs/next``) and are used up one matching request at a time, so a test
says exactly which requests fail: "the next two heartbeats get a 503", "the next
job PATCH is applied but its answer is lost".
"""

from __future__ import annotations

import enum
import fnmatch
import random
import threading
from collections.abc import Sequence

import attrs

__all__ = ["Action", "Fault", "Faults"]


class Action(enum.Enum):
    """What a fault does to the request it matches."""

    RESPOND = "respond"
    """Answer with the fault's status and body instead of handling the request."""
    DROP_BEFORE = "drop_before"
    """Close the connection without handling the request: nothing is applied."""
    DROP_AFTER = "drop_after"
    """Handle the request, then close the connection without answering."""


@attrs.frozen(kw_only=True)
class Fault:
    """One injected fault: which requests it matches and what it does."""

    action: Action
    method: str | None = None
    path: str | None = None
    status: int = 500
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def matches(self, method: str, path: str) -> bool:
        """Tell whether this fault applies to a request."""
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path is None or fnmatch.fnmatchcase(path, self.path)


@attrs.define
class _Pending:
    fault: Fault
    remaining: int


@attrs.frozen
class _Latency:
    seconds: float
    where: Fault


@attrs.define
class _Random:
    failure_rate: float
    drop_rate: float
    status: int
    rng: random.Random
    where: Fault


_FLASK_500 = (
    b'<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">\n'
    b"<title>500 Internal Server Error</title>\n<h1>Internal Server Error</h1>\n"
    b"<p>The server encountered an internal error and was unable to complete your "
    b"request. Either the server is overloaded or there is an error in the "
    b"application.</p>\n"
)


class Faults:
    """The faults a :class:`TopChefServer` will inject, in the order they were added.

    All methods are thread-safe and may be called while the server runs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._latency: list[_Latency] = []
        self._random: _Random | None = None

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        body: bytes | str | None = None,
        content_type: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next *n* matching requests with *status* instead of handling them.

        By default the answer is Flask's HTML error page, as the real server sends for
        an unhandled error; pass *body* and *content_type* for anything else (a 200
        with HTML, JSON of the wrong shape, ...).  *headers* are added as given, for
        example ``[("Retry-After", "2")]``.
        """
        if body is None:
            body, content_type = _FLASK_500, content_type or "text/html"
        raw = body.encode() if isinstance(body, str) else body
        fault = Fault(
            action=Action.RESPOND,
            method=method,
            path=path,
            status=status,
            body=raw,
            content_type=content_type,
            headers=tuple(headers),
        )
        self._add(fault, n)

    def drop_next(
        self,
        n: int = 1,
        *,
        after_apply: bool = False,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Close the connection of the next *n* matching requests without answering.

        With ``after_apply=True`` the server first handles the request (a claim or a
        result is stored) and only the answer is lost, which is the case a client
        cannot tell from a request that never arrived.
        """
        action = Action.DROP_AFTER if after_apply else Action.DROP_BEFORE
        self._add(Fault(action=action, method=method, path=path), n)

    def add_latency(
        self,
        seconds: float,
        *,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Delay every matching request by *seconds* until :meth:`clear`.

        The delay is spent inside the server's one-request-at-a-time section, so, as
        on the real server, a slow request delays every other client too.
        """
        if seconds < 0:
            raise ValueError(f"latency must not be negative, got {seconds!r}")
        with self._lock:
            where = Fault(action=Action.RESPOND, method=method, path=path)
            self._latency.append(_Latency(seconds, where))

    def set_random(
        self,
        *,
        failure_rate: float = 0.0,
        drop_rate: float = 0.0,
        status: int = 500,
        seed: int | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Fail or drop a random share of matching requests, until :meth:`clear`.

        A *failure_rate* share is answered with *status* and Flask's HTML error page
        instead of being handled; a *drop_rate* share has its connection closed
        without an answer, half of them before the request is applied and half
        after.  Explicit faults (:meth:`fail_next`, :meth:`drop_next`) come first.
        *seed* makes the sequence repeatable.
        """
        if not (0 <= failure_rate and 0 <= drop_rate and failure_rate + drop_rate <= 1):
            raise ValueError(
                f"rates must be fractions adding up to at most 1, got {failure_rate!r} "
                f"and {drop_rate!r}"
            )
        where = Fault(action=Action.RESPOND, method=method, path=path)
        with self._lock:
            self._random = _Random(failure_rate, drop_rate, status, random.Random(seed), where)

    def clear(self) -> None:
        """Remove every pending fault, latency and random fault."""
        with self._lock:
            self._pending.clear()
            self._latency.clear()
            self._random = None

    @property
    def pending(self) -> int:
        """How many fault uses are left (latency not counted)."""
        with self._lock:
            return sum(pending.remaining for pending in self._pending)

    def _add(self, fault: Fault, n: int) -> None:
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n!r}")
        with self._lock:
            self._pending.append(_Pending(fault, n))

    def take(self, method: str, path: str) -> tuple[float, Fault | None]:
        """Return the latency for a request and use up the first fault it matches."""
        with self._lock:
            delay = sum(
                latency.seconds for latency in self._latency if latency.where.matches(method, path)
            )
            for pending in self._pending:
                if pending.fault.matches(method, path):
                    pending.remaining -= 1
                    if pending.remaining == 0:
                        self._pending.remove(pending)
                    return delay, pending.fault
            chance = self._random
            if chance is not None and chance.where.matches(method, path):
                draw = chance.rng.random()
                if draw < chance.failure_rate:
                    return delay, Fault(
                        action=Action.RESPOND,
                        status=chance.status,
                        body=_FLASK_500,
                        content_type="text/html",
                    )
                if draw < chance.failure_rate + chance.drop_rate:
                    after = chance.rng.random() < 0.5
                    return delay, Fault(action=Action.DROP_AFTER if after else Action.DROP_BEFORE)
            return delay, None
