"""Load the spakky_saga pytest plugin when the installed package does not (yet) declare it
(the `pytest11` entry point loads it once the package is installed), and make the demo
(examples/order_saga.py) importable as `order_saga`.

The plugin's `pytest11` entry point exists once the package is (re)installed; until then,
running these tests from a checkout still gets its fixtures. The demo is imported by its
module name, the name `mypy src tests examples` gives it too (one file, one module name).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))


def pytest_configure(config: pytest.Config) -> None:
    # Without looptime (a dev dependency), its marker is unknown; the tests that need it skip.
    config.addinivalue_line("markers", "looptime: virtual event-loop time (looptime)")
    if not config.pluginmanager.has_plugin("spakky_saga"):
        plugin = importlib.import_module("spakky_saga.testing.pytest_plugin")
        config.pluginmanager.register(plugin, "spakky_saga")
