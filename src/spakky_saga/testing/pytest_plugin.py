"""The pytest plugin of spakky_saga (entry point `pytest11`): fixtures for testing sagas.

- `saga_clock`: a fresh `VirtualClock`;
- `saga_engine`: `saga_clock.engine()`, a `SagaEngine` on it (override it to add options);
- `explore_failures`: `explore_failures` bound to `saga_engine` (a `FailureExplorer`).

With the looptime library installed (`spakky-saga-typed[testing]`), every test using
`saga_clock` (directly or through the other two) is marked `@pytest.mark.looptime`: its event
loop's time is virtual, so step and saga timeouts fire at once too. Mark a test
`@pytest.mark.looptime(False)` to keep real loop time. The names are prefixed so that they
never take the place of a project's own `clock` or `engine` fixtures.

The fixtures are synchronous on purpose: they work with any async test plugin, and an async
fixture would tie the test to its event loop's scope.
"""

from __future__ import annotations

import pytest

from spakky_saga.engine import SagaEngine
from spakky_saga.testing.explore import FailureExplorer
from spakky_saga.testing.virtual_time import VirtualClock

_LOOPTIME_PLUGIN = "looptime_plugin"
"""The name looptime's own pytest plugin is registered under (its entry point)."""


@pytest.fixture
def saga_clock() -> VirtualClock:
    """A `VirtualClock` starting at 0: backoff (and, with looptime, timeouts) take no time."""
    return VirtualClock()


@pytest.fixture
def saga_engine(saga_clock: VirtualClock) -> SagaEngine:
    """A `SagaEngine` on `saga_clock`."""
    return saga_clock.engine()


@pytest.fixture
def explore_failures(saga_engine: SagaEngine) -> FailureExplorer:
    """`explore_failures(saga, data, ...)` running every scenario on `saga_engine`."""
    return FailureExplorer(saga_engine)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the tests using `saga_clock` on virtual loop time (when looptime is there)."""
    if not config.pluginmanager.has_plugin(_LOOPTIME_PLUGIN):
        return
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "saga_clock" in fixtures and item.get_closest_marker("looptime") is None:
            item.add_marker(pytest.mark.looptime)
