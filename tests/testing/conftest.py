"""Load the spakky_saga pytest plugin when the installed package does not (yet) declare it.

The plugin's `pytest11` entry point exists once the package is (re)installed; until then,
running these tests from a checkout still gets its fixtures.
"""

from __future__ import annotations

import importlib

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("spakky_saga"):
        plugin = importlib.import_module("spakky_saga.testing.pytest_plugin")
        config.pluginmanager.register(plugin, "spakky_saga")
