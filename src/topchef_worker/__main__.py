"""``python -m topchef_worker``: the same as the ``topchef-worker`` command."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
