"""Fixtures: a manual clock, a recording sleep, an engine using both, and a step journal."""

from __future__ import annotations

import pytest

from spakky_saga import SagaEngine
from tests.support import Journal, ManualClock, OrderData, RecordingSleep


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sleep(clock: ManualClock) -> RecordingSleep:
    return RecordingSleep(clock)


@pytest.fixture
def engine(clock: ManualClock, sleep: RecordingSleep) -> SagaEngine:
    return SagaEngine(clock=clock, sleep=sleep)


@pytest.fixture
def journal(clock: ManualClock) -> Journal:
    return Journal(clock)


@pytest.fixture
def order() -> OrderData:
    return OrderData(order_id=1)
