"""Reprs of flow items and flows: short, and written as the flow is written in code."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from spakky_saga import (
    ExponentialBackoff,
    Parallel,
    Retry,
    SagaFlow,
    Skip,
    parallel,
    saga_flow,
    step,
)
from spakky_saga.flow import format_duration
from tests.support import OrderData, charge, notify, refund, release, reserve

EXAMPLES = Path(__file__).parent.parent / "examples"


def combine(data: OrderData, results: tuple[OrderData | None, ...]) -> OrderData:
    return data


def alert(data: OrderData) -> None:
    pass


def test_a_step_repr_is_its_name() -> None:
    assert repr(step(reserve)) == "SagaStep(reserve)"


def test_a_step_repr_shows_its_strategy_and_timeout() -> None:
    assert repr(step(reserve) | Retry(3)) == "SagaStep(reserve | Retry(3))"
    assert repr(step(reserve) | Skip()) == "SagaStep(reserve | Skip())"
    assert repr(step(reserve, timeout=timedelta(seconds=2)) | Retry(2, then=Skip())) == (
        "SagaStep(reserve | Retry(2, then=Skip()), timeout=2s)"
    )


def test_a_transaction_repr_shows_the_action_and_its_compensation() -> None:
    assert repr(step(reserve) >> release) == "Transaction(reserve >> release)"
    assert repr((step(reserve) >> release) | Retry(3)) == (
        "Transaction(reserve >> release | Retry(3))"
    )
    retried = step(reserve, timeout=timedelta(milliseconds=500)) >> release
    assert repr(retried | Retry(3, ExponentialBackoff(0.5, max_delay=5.0))) == (
        "Transaction(reserve >> release | Retry(3, ExponentialBackoff(0.5, max_delay=5.0)), "
        "timeout=500ms)"
    )


def test_a_group_repr_joins_its_members_with_ampersands() -> None:
    assert repr(step(reserve) & step(charge) & step(notify)) == (
        "Parallel(reserve & charge & notify)"
    )


def test_a_group_repr_parenthesizes_members_with_a_compensation_or_a_strategy() -> None:
    group = (step(reserve) >> release) & (step(charge) | Retry(3)) & step(notify)

    assert repr(group) == "Parallel((reserve >> release) & (charge | Retry(3)) & notify)"


def test_a_group_repr_shows_its_merge_and_compensation_order_when_given() -> None:
    group = parallel(reserve, charge, merge=combine, compensate="concurrent")

    assert repr(group) == (
        "Parallel(reserve & charge, merge=combine, compensation_order='concurrent')"
    )


def test_a_flow_repr_lists_its_items_as_they_are_written() -> None:
    flow = saga_flow(
        step(reserve) >> release,
        step(charge) | Skip(),
        step(notify) & (step(charge) >> refund),
    ).timeout(timedelta(seconds=30))

    assert repr(flow) == (
        "SagaFlow(reserve >> release, charge | Skip(), notify & (charge >> refund), timeout=30s)"
    )


def test_a_flow_repr_shows_a_step_timeout_as_the_step_call_that_sets_it() -> None:
    flow = saga_flow((step(charge, timeout=timedelta(seconds=1.5)) >> refund) | Retry(3))

    assert repr(flow) == "SagaFlow(step(charge, timeout=1.5s) >> refund | Retry(3))"


def test_a_flow_repr_shows_the_compensation_failure_handler() -> None:
    flow = saga_flow(step(reserve) >> release).on_compensation_failure(alert)

    assert repr(flow) == "SagaFlow(reserve >> release, on_compensation_failure=alert)"


def test_a_flow_repr_shows_a_group_with_options_as_its_own_repr() -> None:
    flow = saga_flow(parallel(reserve, charge, merge=combine), notify)

    assert repr(flow) == "SagaFlow(Parallel(reserve & charge, merge=combine), notify)"


def test_names_that_are_not_identifiers_are_quoted_so_they_cannot_read_as_operators() -> None:
    group = step(reserve, name="reserve & hold") & step(charge, name='say "hi"')

    assert repr(group) == "Parallel('reserve & hold' & 'say \"hi\"')"
    assert repr(step(reserve, name="Stock.reserve")) == "SagaStep(Stock.reserve)"


def test_a_lambda_step_shows_as_lambda() -> None:
    assert repr(step(lambda data: reserve(data))) == "SagaStep(<lambda>)"  # noqa: PLW0108


def test_a_saga_class_flow_repr_names_its_methods_not_partials_or_addresses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from order_saga import (  # noqa: PLC0415 - examples/ is on the path only now
        CreateOrderSaga,
        Inventory,
        Kitchen,
        Payments,
    )

    flow = CreateOrderSaga(Kitchen(), Inventory(10), Payments()).flow()

    assert repr(flow) == (
        "SagaFlow((issue_ticket >> cancel_ticket) & (charge_payment >> refund_payment), "
        "reserve_stock >> release_stock | Retry(3, ExponentialBackoff(0.01), "
        "retry_on=(ConnectionError,)), pivot(confirm_order), "
        "book_delivery | Retry(3, ExponentialBackoff(0.01)), "
        "timeout=5s)"
    )


def test_reprs_are_the_same_for_equal_definitions() -> None:
    def build() -> SagaFlow[OrderData]:
        return saga_flow(step(reserve) >> release, step(charge) & step(notify))

    assert repr(build()) == repr(build())
    assert isinstance(build().items[1], Parallel)


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(milliseconds=250), "250ms"),
        (timedelta(microseconds=500), "0.5ms"),
        (timedelta(seconds=1), "1s"),
        (timedelta(seconds=1.5), "1.5s"),
        (timedelta(seconds=30), "30s"),
        (timedelta(seconds=90), "90s"),
        (timedelta(minutes=5), "5min"),
        (timedelta(hours=2), "2h"),
        (timedelta(days=1), "24h"),
        (timedelta(seconds=61, microseconds=1), "61.000001s"),
    ],
)
def test_durations_are_written_as_a_person_writes_them(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text
