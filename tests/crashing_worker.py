"""A worker process that claims one job and hangs in its handler, to be killed -9.

Usage: python crashing_worker.py URL SERVICE_ID JOURNAL.  Prints "started" when the
handler runs.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from topchef_worker import Worker


def hang(parameters: dict[str, Any]) -> dict[str, Any]:
    print("started", flush=True)
    threading.Event().wait()
    return {}


def main() -> None:
    url, service_id, journal = sys.argv[1:4]
    worker = Worker(url, max_jobs=1, journal=journal, poll_interval=0.05)
    worker.handler(service_id)(hang)
    worker.run()


if __name__ == "__main__":
    main()
