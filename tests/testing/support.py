"""Shared by the harness's tests."""

from __future__ import annotations

from importlib.util import find_spec

import pytest

needs_looptime = pytest.mark.skipif(
    find_spec("looptime") is None,
    reason="virtual loop time needs looptime (the dev group's): re-run scripts/bootstrap.sh",
)
"""For tests whose timeouts would wait for real without virtual loop time."""
