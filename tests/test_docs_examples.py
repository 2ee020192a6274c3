"""The documentation's example programs run and do what the pages say."""

from __future__ import annotations

import importlib.util
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
