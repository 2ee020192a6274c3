"""Test TopChef services without a TopChef server.

:class:`TopChefServer` is an in-memory, thread-safe implementation of the TopChef
HTTP API, served over real HTTP/1.1 on loopback, with fault injection
(:class:`Faults`), a request log and an injectable clock (:class:`ManualClock`)::

    from topchef_worker import TopChefClient
    from topchef_worker.testing import TopChefServer

    with TopChefServer() as server:
        client = TopChefClient(server.url)
        ...

It reproduces what a client of the real server can observe: status codes, bodies and
their envelopes, the ``Location`` header as the only place a new service's id appears,
204 with an empty body, the bare heartbeat answer and the bare job on a job PATCH,
Draft-4 validation with nothing applied when results are rejected, HTML pages for
unknown routes, wrong methods and unhandled errors, 404 for malformed ids, lenient id
parsing, the ``X-HTTP-Method-Override`` header, the strict ``>`` service timeout, FIFO
``jobs/next`` and unconditional status transitions.  Like the real server it handles
one request at a time.

Deliberate differences from the real server, none of which a client should rely on:

* ``date_submitted`` is each job's submission time from the server's clock.  The real
  server stamps every job with the time its process started (a default-argument bug).
  ``jobs/next`` still serves REGISTERED jobs in submission order, as the real one does
  on SQLite, and a job put back to REGISTERED keeps its place.
* ``jobs/next`` and ``queue`` cost O(log n) instead of O(jobs ever submitted); use
  :meth:`Faults.add_latency` to model a slow server.
* The ``meta`` JSON schemas are shortened (their keys are kept).  The real ones are
  generated and inaccurate, and the contract says not to validate against them.
* JSON bodies are compact rather than pretty-printed with sorted keys.
* A 204 keeps the connection open; the ``Connection: close`` seen on the real server
  comes from its WSGI container.  HEAD answers 405 without a Content-Length for the
  dropped body.
* The ``detail`` of a Deserialization Error for a bad status or a null field follows
  the documented template with marshmallow-style messages; only the template and
  title are part of the contract.
* jsonschema's error messages come from the installed jsonschema 4.x, not 2.6; the
  messages a client is likely to meet (type, required, maximum) read the same.
"""

from __future__ import annotations

from ._clock import ManualClock
from ._cost import CostModel
from ._faults import Action, Fault, Faults
from ._server import LoggedRequest, TopChefServer

__all__ = [
    "Action",
    "CostModel",
    "Fault",
    "Faults",
    "LoggedRequest",
    "ManualClock",
    "TopChefServer",
]
