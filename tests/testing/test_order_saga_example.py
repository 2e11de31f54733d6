"""The harness on the demo saga (examples/order_saga.py): every failure point, every await
point, every hang, each run with fresh services, and the services' state checked after each."""

from __future__ import annotations

import time

from order_saga import CreateOrderSaga, Inventory, Kitchen, OrderSagaData, Payments  # examples/

from spakky_saga.testing import explore_failures
from tests.testing.support import needs_looptime

ORDER = OrderSagaData(order_id=7, customer_id=42, quantity=3)


def fresh_saga() -> CreateOrderSaga:
    return CreateOrderSaga(Kitchen(), Inventory(stock=10), Payments())


@needs_looptime
async def test_the_demo_saga_keeps_every_promise_at_every_failure_point() -> None:
    started = time.perf_counter()

    report = await explore_failures(fresh_saga, ORDER, timeouts=True, cancellation=True)

    assert time.perf_counter() - started < 2.0  # 5 s saga timeouts and backoff included
    assert report.ok, str(report)
    assert report.saga_name == "CreateOrderSaga"
    described = [o.scenario.description for o in report.scenarios]
    assert described[:14] == [
        "no fault",
        "issue_ticket fails",
        "charge_payment fails",
        "reserve_stock fails",
        "confirm_order fails",
        "book_delivery fails",
        "undo issue_ticket fails, confirm_order fails",
        "undo charge_payment fails, confirm_order fails",
        "undo reserve_stock fails, confirm_order fails",
        "issue_ticket hangs",
        "charge_payment hangs",
        "reserve_stock hangs",
        "confirm_order hangs",
        "book_delivery hangs",
    ]
    assert len(report.scenarios) > 20  # and the cancellations at each await point
    assert report.scenario("reserve_stock fails").compensated == ("charge_payment", "issue_ticket")
    assert report.scenario("confirm_order fails").compensated == (
        "reserve_stock",
        "charge_payment",
        "issue_ticket",
    )
    assert report.scenario("reserve_stock hangs").outcome == "TIMED_OUT"
    # Past the pivot (the order's confirmation) nothing is compensated: the saga is STUCK.
    for description in ("book_delivery fails", "book_delivery hangs"):
        assert report.scenario(description).outcome == "STUCK"
        assert report.scenario(description).compensated == ()


@needs_looptime
async def test_after_every_run_the_demo_services_are_consistent() -> None:
    report = await explore_failures(fresh_saga, ORDER, timeouts=True, cancellation=True)

    for outcome in report.scenarios:
        saga = outcome.subject
        assert isinstance(saga, CreateOrderSaga)
        tickets = saga.kitchen.tickets
        charged = set(saga.payments.charged) - set(saga.payments.refunded)
        if outcome.outcome == "COMPLETED" or "book_delivery" in outcome.ran:
            # Completed, or past the pivot (the delivery was tried): nothing is undone.
            assert tickets, outcome.scenario
            assert charged, outcome.scenario
            assert saga.inventory.stock == 7, outcome.scenario
        elif not outcome.failed_compensations:
            # Rolled back: no ticket or charge left behind.
            assert not tickets, outcome.scenario
            assert not charged, outcome.scenario
            if outcome.scenario.cancelled_at is None:
                assert saga.inventory.stock == 10, outcome.scenario
            else:
                # Cancelled after reserve_stock acted but before it returned: the stock stays
                # taken. A step its caller cut off never committed, so it is not compensated:
                # the demo's one window.
                assert saga.inventory.stock in {7, 10}, outcome.scenario


async def test_a_cancellation_past_the_pivot_compensates_nothing() -> None:
    report = await explore_failures(fresh_saga, ORDER, cancellation=True)

    past = [
        o for o in report.scenarios if o.outcome == "CancelledError" and "book_delivery" in o.ran
    ]
    assert past
    for outcome in past:
        assert outcome.compensated == (), outcome.scenario
        assert isinstance(outcome.subject, CreateOrderSaga)
        assert outcome.subject.inventory.stock == 7
        assert outcome.subject.customers.confirmed == [ORDER.order_id]
