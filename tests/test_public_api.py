"""The public surface is what __all__ says, no more and no less."""

from __future__ import annotations

import types

import pytest

import topchef_worker
import topchef_worker.events
import topchef_worker.exceptions
import topchef_worker.testing


@pytest.mark.parametrize(
    "module",
    [topchef_worker, topchef_worker.events, topchef_worker.exceptions, topchef_worker.testing],
)
def test_all_lists_exactly_the_public_names(module: types.ModuleType) -> None:
    """Every public class or function defined in the package is in __all__, and
    every __all__ entry exists; __all__ is sorted."""
    defined_here = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", "").startswith("topchef_worker")
    }
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert [] == missing
    assert set() == defined_here - set(module.__all__)
    assert sorted(module.__all__) == module.__all__


def test_version_is_a_string() -> None:
    """The installed distribution's version is exposed."""
    assert isinstance(topchef_worker.__version__, str)
    assert topchef_worker.__version__ != ""
