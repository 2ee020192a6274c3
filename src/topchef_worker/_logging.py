"""Log configuration for the command line; the library itself only logs."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO

__all__ = ["JsonFormatter", "configure_logging", "job_extra"]

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
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
