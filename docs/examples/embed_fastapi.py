"""A FastAPI application that also serves a TopChef service (see docs/embedding.md).

Run it with ``uvicorn embed_fastapi:app`` (one process: see the guide on
``--workers``).  The environment configures it:

- ``TOPCHEF_URL``: the TopChef server (the worker reads it when it starts);
- ``THERMOMETER_SERVICE``: the service's name (default ``thermometer``), found or
  created on the server;
- ``STOP_TIMEOUT``: seconds running measurements may finish at shutdown (default 30).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

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
STOP_TIMEOUT = float(os.environ.get("STOP_TIMEOUT", "30"))

worker = Worker(max_jobs=4)  # no URL in code: $TOPCHEF_URL gives it at start()


@worker.handler(
    name=os.environ.get("THERMOMETER_SERVICE", "thermometer"),
    description="reads the lab thermometer",
    job_registration_schema=PARAMETERS,
    job_result_schema=RESULTS,
    concurrency=1,  # one probe: one measurement at a time
)
async def measure(parameters: dict[str, Any]) -> dict[str, Any]:
    """A slow measurement: the thermometer integrates for ``seconds``.  It runs on
    the worker's own event loop, not uvicorn's, and is cancelled if it is still
    running when the stop timeout expires (its job goes back to the queue)."""
    await asyncio.sleep(parameters["seconds"])  # stands for: await probe.acquire(...)
    return {"celsius": round(random.gauss(21.5, 0.1), 2), "seconds": parameters["seconds"]}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # uvicorn configures its own loggers only; the library's records need a handler.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )
    worker.start()  # returns at once; the worker connects in the background
    try:
        yield
    finally:
        # stop() blocks until running jobs finish or STOP_TIMEOUT passes: off the loop.
        await asyncio.to_thread(worker.stop, STOP_TIMEOUT)


app = FastAPI(lifespan=lifespan)


@app.get("/health")
def health() -> JSONResponse:
    report = worker.health()
    return JSONResponse(report.to_dict(), status_code=200 if report.ready else 503)


@app.get("/stats")
def stats() -> dict[str, Any]:
    return worker.stats().to_dict()
