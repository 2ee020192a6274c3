"""Starting: what fails at once, and what is waited for in the background.

A configuration error fails ``start()`` at once with a message that says what to
fix: no URL, a URL that is not ``http(s)://host[:port]`` (an empty host, a port out
of range, a stray newline), a ledger file that cannot be opened.  Whether the
server answers is another matter: a service manager may start the worker before
the server, so the server is waited for in the background (with a WARNING that
repeats while it waits), and only an answer that repeating cannot change (an unknown
service id, say) ends the start as a configuration error.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import attrs
import requests

from ._arguments import check_base_url, redact
from ._client import TopChefClient
from ._context import Context
from ._handlers import HandlerSpec
from ._health import HealthMonitor
from ._ledger import Journal, LedgerError, Outbox, Outcome
from ._models import Service
from ._retry import RetryPolicy
from ._scheduler import Scheduler
from ._services import resolve
from ._session import make_session
from ._settings import Settings
from ._tasks import Launcher
from .events import Event
from .exceptions import ConfigurationError, NotFoundError, TopChefError, is_transient

__all__ = ["Left", "open_context", "resolve_all", "retry_until_answered"]

#: What an earlier run left: outcomes in the outbox, open claims in the journal.
Left = tuple[list[Outcome], dict[str, str]]

#: Most threads the heartbeat and I/O pools get, whatever the number of services:
#: the server handles one request at a time, so more threads only add contention.
_HEARTBEAT_THREADS = 4
_IO_THREADS = 16

_log = logging.getLogger("topchef_worker")
_T = TypeVar("_T")

#: While waiting for the server, a WARNING at most this often (seconds).
_WARN_EVERY = 30.0


def retry_until_answered(
    fn: Callable[[], _T],
    *,
    what: str,
    url: str,
    retry: RetryPolicy,
    stop: threading.Event,
    rand: Callable[[], float],
) -> _T:
    """Call *fn* until the server answers, or *stop* is set (the last error is raised).

    An answer that is not transient is final: a 404 for a service becomes a
    :class:`ConfigurationError` that names it.
    """
    last_warning = [float("-inf")]

    def note(error: BaseException, attempt: int, delay: float) -> None:
        now = time.monotonic()
        if now - last_warning[0] >= _WARN_EVERY:
            last_warning[0] = now
            _log.warning(
                "starting: waiting for the TopChef server at %s to answer (%s; %s); "
                "retrying in %.2g s",
                url,
                what,
                error,
                delay,
            )

    try:
        return retry.call(fn, stop=stop, on_retry=note, rand=rand)
    except NotFoundError as error:
        raise ConfigurationError(f"{what}: {error}") from error
    except TopChefError as error:
        if is_transient(error) or isinstance(error, ConfigurationError):
            raise
        raise ConfigurationError(f"{what}: the server refused it: {error}") from error


def open_context(
    settings: Settings,
    *,
    services: int,
    client: TopChefClient | None,
    session: requests.Session | None,
    cond: threading.Condition,
    clock: Callable[[], float],
    rand: Callable[[], float],
    counts: Counter[str],
    emit: Callable[[Event], None],
    health: HealthMonitor,
) -> tuple[Context, Left, requests.Session | None]:
    """Check the settings, open the ledger files and make the clients and pools.

    Returns the context, what an earlier run left in the ledger files, and the
    session made here (None if one was given), to close at stop.
    """
    # One rule everywhere: a URL given in code, then the command line's --url (which
    # sets it when the code gave none), then the environment.
    env_url = os.environ.get("TOPCHEF_URL")
    url = client.base_url if client is not None else settings.url or env_url
    if env_url and url and env_url.rstrip("/") != url.rstrip("/"):
        _log.info("TOPCHEF_URL (%s) is not used: the worker's own URL wins", redact(env_url))
    if not url:
        raise ConfigurationError("no TopChef URL: pass Worker(url), use --url, or set TOPCHEF_URL")
    settings = attrs.evolve(settings, url=check_base_url(url))
    heartbeat_threads = min(services, _HEARTBEAT_THREADS)
    io_threads = min(services + settings.max_jobs, _IO_THREADS)
    outbox = None if settings.outbox is None else Outbox(settings.outbox)
    journal = None if settings.journal is None else Journal(settings.journal)
    try:
        left: Left = (
            outbox.open() if outbox is not None else [],
            journal.open() if journal is not None else {},
        )
    except LedgerError as error:
        if outbox is not None:
            outbox.close()
        if isinstance(error, ConfigurationError):  # LedgerLockedError
            raise
        raise ConfigurationError(str(error)) from error
    made = None
    if client is None:
        if session is None:
            session = made = make_session(url, heartbeat_threads + io_threads)
        client = TopChefClient(url, session=session, timeout=settings.request_timeout, retry=None)
    hurry_client = TopChefClient(
        client.base_url,
        session=client.session,
        timeout=settings.stop_timeout(),
        retry=None,
        max_response_bytes=client.max_response_bytes,
    )
    stopping = threading.Event()
    ctx = Context(
        stopping=stopping,
        cond=cond,
        settings=settings,
        client=client,
        hurry_client=hurry_client,
        clock=clock,
        rand=rand,
        counts=counts,
        emit=emit,
        scheduler=Scheduler(cond, clock),
        launcher=Launcher(cond, counts, on_refused=stopping.set),
        health=health,
        heartbeat_pool=ThreadPoolExecutor(heartbeat_threads, "topchef-heartbeat"),
        io_pool=ThreadPoolExecutor(io_threads, "topchef-io"),
        journal=journal,
        outbox=outbox,
    )
    return ctx, left, made


def resolve_all(ctx: Context, handlers: Sequence[HandlerSpec]) -> list[tuple[HandlerSpec, Service]]:
    """Find (or create) every handler's service, waiting for the server as needed."""
    resolved = []
    seen: dict[str, HandlerSpec] = {}
    for spec in handlers:
        service = retry_until_answered(
            lambda spec=spec: resolve(ctx.client, spec),  # type: ignore[misc]
            what=f"finding service {spec.label}",
            url=redact(ctx.settings.url or ""),
            retry=ctx.settings.retry,
            stop=ctx.stopping,
            rand=ctx.rand,
        )
        if service.id in seen:
            raise ConfigurationError(
                f"service {service.id} has two handlers "
                f"({_qualname(seen[service.id].fn)} and {_qualname(spec.fn)}); one per service"
            )
        seen[service.id] = spec
        resolved.append((spec, service))
    return resolved


def _qualname(fn: object) -> str:
    return str(getattr(fn, "__qualname__", fn))
