"""A Flask application that also serves a TopChef service (see docs/embedding.md).

Run it with ``flask --app embed_flask run`` (or ``flask --app embed_flask --debug run``:
the worker starts in the serving process only).  The environment configures it:

- ``TOPCHEF_URL``: the TopChef server (the worker reads it when it starts);
- ``THERMOMETER_SERVICE``: the service's name (default ``thermometer``), found or
  created on the server;
- ``STOP_TIMEOUT``: seconds running measurements may finish at exit (default 30).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import random
from typing import Any

from flask import Flask
from werkzeug.serving import is_running_from_reloader

from topchef_worker import Worker

PARAMETERS = {
    "type": "object",
    "properties": {"seconds": {"type": "number", "minimum": 0}},
    "required": ["seconds"],
}
RESULTS = {
    "type": "object",
    "properties": {"celsius": {"type": "number"}, "seconds": {"type": "number"}},
    "required": ["celsius"],
}

log = logging.getLogger(__name__)


async def measure(parameters: dict[str, Any]) -> dict[str, Any]:
    """A slow measurement: the thermometer integrates for ``seconds``.

    A coroutine, so that the worker can cancel it when the stop timeout expires:
    Python waits for a function handler's thread before it runs atexit hooks.
    """
    await asyncio.sleep(parameters["seconds"])  # stands for: await probe.acquire(...)
    return {"celsius": round(random.gauss(21.5, 0.1), 2), "seconds": parameters["seconds"]}


def make_worker() -> Worker:
    worker = Worker(max_jobs=4)  # no URL in code: $TOPCHEF_URL gives it at start()
    worker.handler(
        name=os.environ.get("THERMOMETER_SERVICE", "thermometer"),
        description="reads the lab thermometer",
        job_registration_schema=PARAMETERS,
        job_result_schema=RESULTS,
        concurrency=1,  # one probe: one measurement at a time
    )(measure)
    return worker


def create_app() -> Flask:
    # The application configures logging; the library only adds a NullHandler.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )
    app = Flask(__name__)
    worker = make_worker()
    app.extensions["topchef_worker"] = worker

    if app.debug and not is_running_from_reloader():
        # `flask --debug run` imports the app twice: here, in the reloader's watcher
        # process, which never serves; and again in the child it starts (and restarts
        # on every code change), which serves.  Start the worker there only.
        log.info("reloader watcher (pid %d): the serving process runs the worker", os.getpid())
    else:
        worker.start()  # returns at once; the worker connects in the background
        # Flask has no shutdown hook: stop at interpreter exit.  Jobs still running
        # after STOP_TIMEOUT go back to the queue.
        atexit.register(worker.stop, float(os.environ.get("STOP_TIMEOUT", "30")))

    @app.get("/health")
    def health() -> tuple[dict[str, Any], int]:
        report = worker.health()
        return report.to_dict(), 200 if report.ready else 503

    @app.get("/stats")
    def stats() -> dict[str, Any]:
        return worker.stats().to_dict()

    return app
