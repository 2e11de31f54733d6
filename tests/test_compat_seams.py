"""Seams the documented package's users reach in their own tests, kept under the new import
name: `spakky_saga.engine._sleep` (patched to skip retry backoff) and `_SagaStepDescriptor`;
and a step that returns an un-awaited coroutine is reported without a "never awaited"
warning following it."""

from __future__ import annotations

import gc
import warnings

import pytest

from spakky_saga import (
    ExponentialBackoff,
    Retry,
    SagaEngine,
    SagaStatus,
    SagaStepResultError,
    saga_flow,
    saga_step,
    step,
)
from tests.support import Boom, OrderData


async def test_patching_the_engines_sleep_skips_the_retry_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waited: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr("spakky_saga.engine._sleep", fake_sleep)
    runs = 0

    async def flaky(data: OrderData) -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise Boom("try again")

    flow = saga_flow(step(flaky) | Retry(3, ExponentialBackoff(60.0)))

    result = await SagaEngine(log=False).run(flow, OrderData(order_id=1))

    assert result.status is SagaStatus.COMPLETED
    assert waited == [60.0, 120.0]  # an hour and more of backoff, not waited


def test_the_documented_descriptor_name_is_what_saga_step_returns() -> None:
    from spakky_saga import _SagaStepDescriptor  # noqa: PLC0415 - the import is the test

    async def reserve(self: object, data: OrderData) -> None: ...

    assert isinstance(saga_step(reserve), _SagaStepDescriptor)


async def test_a_step_returning_an_unawaited_coroutine_fails_without_a_never_awaited_warning() -> (
    None
):
    async def reserve_stock(data: OrderData) -> OrderData:
        return data

    async def forgot_await(data: OrderData) -> OrderData:
        return reserve_stock(data)  # type: ignore[return-value] # the coroutine: the mistake

    flow = saga_flow(step(forgot_await))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = await SagaEngine(log=False).run(flow, OrderData(order_id=1))
        status, error = result.status, result.error
        del result  # the error holds the coroutine: let it go, as a caller would
        assert isinstance(error, SagaStepResultError)
        error = None
        gc.collect()

    assert status is SagaStatus.FAILED
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []
