"""Services the server lost: a 404 for a service the worker found at start.

TopChef keeps its services in its database and has no DELETE, so a service that
answers 404 after the worker found it was lost with the database: a server
restarted on an empty one (``topchef-worker serve`` always is), or pointed at
another.  Polling on would log 404s forever while the worker reports ready.

A service the worker registered by description is registered again the way the
start did (:func:`._services.resolve`, which finds it if another worker already
did) and served under its new id, so that jobs submitted to it run.  A service
given by id cannot be re-created (its id is what the clients submit to): it is
reported in the log and in health (DEGRADED, so not ready) until it answers again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ._context import Context
from ._models import Service
from ._services import ServiceRun, resolve
from .exceptions import ServiceNotFoundError, TopChefError

__all__ = ["LostServices"]

_log = logging.getLogger("topchef_worker")


class LostServices:
    """Notices services the server no longer has, and registers them again.

    Args:
        ctx: The worker's shared parts.
        rebind: Called (lock held) with a service registered again and its new
            record, to serve it under the new id.
    """

    def __init__(self, ctx: Context, *, rebind: Callable[[ServiceRun, Service], None]) -> None:
        self._ctx = ctx
        self._rebind = rebind
        self._lost: dict[str, str] = {}  # service id -> the health condition's name
        self._former: set[str] = set()  # ids a service had before it was registered again

    def report(self, svc: ServiceRun, error: BaseException) -> bool:
        """A request about *svc* failed with *error* (lock not held): if the server
        said the service does not exist, act on it.  Returns whether it did, so that
        the caller does not log the 404 again."""
        if not isinstance(error, ServiceNotFoundError):
            return False
        if error.service_id in self._former:
            return True  # a request sent before the service was registered again
        if error.service_id != svc.id:
            return False
        ctx = self._ctx
        described = svc.spec.service is not None
        with ctx.cond:
            if svc.id in self._lost:
                return True
            self._lost[svc.id] = name = f"lost service {svc.id}"
            if described:
                reason = f"service {svc.service.name!r} ({svc.id}) is gone; registering it again"
            else:
                reason = (
                    f"service {svc.id} does not exist on the server any more, and this "
                    "worker was given its id, so it cannot register it again"
                )
            ctx.health.condition(name, reason)
        _log.error(
            "service %s (%r) is gone from the server (restarted with an empty database?): %s",
            svc.id,
            svc.service.name,
            "registering it again from its handler's description"
            if described
            else "register it on the server again (then jobs run again), or correct the "
            "worker's service id",
            extra={"service_id": svc.id},
        )
        if described:
            ctx.launcher.launch(
                ctx.io_pool, f"registering service {svc.id} again", lambda: self._register(svc)
            )
        return True

    def answered(self, svc: ServiceRun) -> None:
        """A request about *svc* succeeded (lock held): it is not lost."""
        name = self._lost.pop(svc.id, None)
        if name is not None:
            self._ctx.health.condition(name, None)
            _log.warning("service %s answers again", svc.id, extra={"service_id": svc.id})

    def _register(self, svc: ServiceRun) -> None:
        ctx = self._ctx
        old = svc.id
        try:
            service = ctx.settings.retry.call(
                lambda: resolve(ctx.client, svc.spec), stop=ctx.stopping, rand=ctx.rand
            )
        except TopChefError as error:
            if not ctx.stopping.is_set():
                _log.error(
                    "could not register service %r again: %s; it stays unserved",
                    svc.service.name,
                    error,
                    extra={"service_id": old},
                )
            return
        with ctx.cond:
            name = self._lost.pop(old, None)
            if name is not None:
                ctx.health.condition(name, None)
            if service.id == old:  # a 404 that passed: the server has it after all
                _log.warning("service %s answers again", old, extra={"service_id": old})
                return
            if ctx.stopping.is_set():
                return
            self._former.add(old)
            self._rebind(svc, service)
        _log.warning(
            "service %r is served again, as %s (jobs submitted to %s were lost with it)",
            service.name,
            service.id,
            old,
            extra={"service_id": service.id},
        )
