"""Log configuration: the command line's, and ``run()``'s when nobody configured any.

A library only logs: the application decides where records go.  Python's default
(no handler anywhere) shows nothing at all from a library that adds a
``NullHandler``, so a program whose main loop is ``worker.run()`` and that never
called ``logging.basicConfig`` would sit silent.  Command-line workers of other
frameworks (Celery, RQ, Dramatiq) print what they do; :func:`main_loop_logging`
does the same, only then, and only for the time ``run()`` runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO

__all__ = ["JsonFormatter", "configure_logging", "job_extra", "main_loop_logging"]

#: The text format, for the command line and for ``run()``'s own handler.
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

#: Fields of job-related records that the JSON format lifts out of the message.
FIELDS = ("service_id", "job_id", "status", "duration")


def job_extra(job_id: str, service_id: str) -> dict[str, str]:
    """The ``extra`` of a log record about one job, for the JSON format's fields."""
    return {"job_id": job_id, "service_id": service_id}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the job fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(
    level: str = "INFO", fmt: str = "text", stream: IO[str] | None = None
) -> None:
    """Send the root logger's records to *stream* (stderr) as text or JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())


def _configured(logger: logging.Logger) -> bool:
    """Whether the application set up logging: a handler on the root logger (what
    ``basicConfig``, ``dictConfig`` and test runners add), a real handler on the
    package's logger, or a level chosen for it."""
    if logging.getLogger().handlers or logger.level != logging.NOTSET:
        return True
    return any(not isinstance(handler, logging.NullHandler) for handler in logger.handlers)


@contextlib.contextmanager
def main_loop_logging(name: str = "topchef_worker") -> Iterator[bool]:
    """While the block runs, show the package's INFO records on stderr, if the block
    is the program's main loop (the main thread) and logging is not configured.

    Yields whether it did.  Only the package's logger gets the handler, and it is
    removed at the end.  A program that configures logging meanwhile (a handler on
    the root logger) takes over at once: the handler shows nothing more, and the
    logger's level is handed back, so no record shows twice.
    """
    logger = logging.getLogger(name)
    if threading.current_thread() is not threading.main_thread() or _configured(logger):
        yield False
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    ours = [True]  # whether the handler and the level on the logger still count

    def hand_over(record: logging.LogRecord) -> bool:
        # On the logger, so that it runs before any handler and before the record
        # goes up to the application's: one made at this function's level passes
        # only if the application's own level lets it.
        root = logging.getLogger()
        if ours[0] and root.handlers:
            ours[0] = False
            if logger.level == logging.INFO:
                logger.setLevel(logging.NOTSET)
            return record.levelno >= root.getEffectiveLevel()
        return True

    handler.addFilter(lambda record: ours[0])
    logger.addFilter(hand_over)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield True
    finally:
        logger.removeHandler(handler)
        logger.removeFilter(hand_over)
        if ours[0] and logger.level == logging.INFO:
            logger.setLevel(logging.NOTSET)
