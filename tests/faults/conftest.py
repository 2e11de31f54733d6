"""The `slow` marker: tests that take seconds, not milliseconds (they still run by default)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: takes seconds (deselect with -m 'not slow'); runs in `make test`"
    )
