"""A worker for the Adder service: run it with the command line.

    topchef-worker serve --port 5000 &
    topchef-worker run examples/app.py:worker --url http://127.0.0.1:5000
    topchef-worker submit SERVICE_ID '{"a": 1, "b": 2}' --url http://127.0.0.1:5000

The service is found by name and schemas, or created, when the worker starts.
"""

from __future__ import annotations

from typing import Any

from topchef_worker import Worker

worker = Worker(max_jobs=4)


@worker.handler(
    name="Adder",
    description="adds a and b",
    job_registration_schema={
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    },
    job_result_schema={
        "type": "object",
        "properties": {"sum": {"type": "number"}},
        "required": ["sum"],
    },
)
def add(parameters: dict[str, Any]) -> dict[str, Any]:
    """Add a and b."""
    return {"sum": parameters["a"] + parameters["b"]}
