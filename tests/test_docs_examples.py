"""The documentation's example programs run and do what the pages say."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_tutorial_program() -> None:
    """The tutorial's program adds a and b for each job."""
    assert [{"sum": i + 10} for i in range(5)] == load("tutorial").main()


def test_testing_page_example() -> None:
    """The testing page's pytest module passes when run by pytest."""
    assert 0 == pytest.main(["-q", "-p", "no:cacheprovider", str(EXAMPLES / "testing_example.py")])


def test_where_jobs_run_example() -> None:
    """A coroutine on the loop, a function on processes, a retried one on threads."""
    results = load("where_jobs_run").main()
    assert results["sensor"] == {"celsius": 21.5}
    assert abs(results["integral"]["area"] - 2.0) < 1e-6
    assert results["stage"] == {"position": 12.5}


def test_dask_cluster_example() -> None:
    """Run as a program (so that its handler travels to the cluster's processes by
    value, as a script's does), every job runs and completes."""
    pytest.importorskip("distributed")
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "dask_cluster.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert 0 == done.returncode, done.stderr[-2000:]
    results = [ast.literal_eval(line) for line in done.stdout.splitlines()]
    assert [n**2 for n in range(4)] == [result["energy"] for result in results]
