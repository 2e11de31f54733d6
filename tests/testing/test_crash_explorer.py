"""`explore_crashes`: a durable engine killed at every write and recovered by a new one.

The demo saga and a flow with a parallel group, retries, a skipped step and a step timeout
are explored under both recovery policies. Stores with planted bugs show that the checks can
fail. Six tests here are engine bugs the explorer found (a group member failed for good ran
again; stale stored data after a resumed group; a failed group's committed results lost on
recovery; members compensated out of declaration order; a retrying sibling abandoned; the
failed step forgotten): each failed before the one run driver fixed it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from order_saga import CreateOrderSaga, Inventory, Kitchen, OrderSagaData, Payments  # examples/

from spakky_saga import (
    AbstractSagaData,
    ExponentialBackoff,
    InMemorySagaStore,
    RecoveryPolicy,
    Retry,
    SagaFlow,
    Skip,
    SqliteSagaStore,
    current_step,
    parallel,
    saga_flow,
    step,
)
from spakky_saga.store import SagaRecord, SagaStore, StoredEvent
from spakky_saga.testing import Check, CrashReport, explore_crashes
from tests.testing.flows import Order, Services, order_flow
from tests.testing.support import needs_looptime

ORDER = OrderSagaData(order_id=7, customer_id=42, quantity=3)
COMPENSATE, RESUME = RecoveryPolicy.COMPENSATE, RecoveryPolicy.RESUME


def fresh_saga() -> CreateOrderSaga:
    return CreateOrderSaga(Kitchen(), Inventory(stock=10), Payments())


def checks[D: AbstractSagaData](report: CrashReport[D]) -> set[Check]:
    return {violation.check for violation in report.violations}


# --- a trip: a group with a retried member, a skipped step, a step timeout -----------------


class Trip(AbstractSagaData):
    hotel: bool = False
    flight: bool = False
    car: bool = False
    mailed: bool = False
    paid: bool = False


async def book_hotel(data: Trip) -> Trip:
    return dataclasses.replace(data, hotel=True)


async def book_flight(data: Trip) -> Trip:
    return dataclasses.replace(data, flight=True)


async def rent_car(data: Trip) -> Trip:
    if current_step().attempt <= 2:  # the rental desk is busy twice: Retry(3) gets it
        raise ConnectionError("the car rental desk is busy")
    return dataclasses.replace(data, car=True)


async def mail_itinerary(data: Trip) -> Trip:
    return dataclasses.replace(data, mailed=True)


async def pay(data: Trip) -> Trip:
    # The first attempt hangs past the step timeout (virtual time: no real waiting).
    await asyncio.sleep(60 if current_step().attempt == 1 else 1)
    return dataclasses.replace(data, paid=True)


async def cancel(data: Trip) -> None:
    return None


def trip() -> SagaFlow[Trip]:
    """hotel, then flight (Retry(2)) & car (Retry(3), busy twice), mail (Skip), pay (a 5 s
    timeout, its first attempt hangs; Retry(2))."""
    return saga_flow(
        step(book_hotel, compensate=cancel),
        parallel(
            step(book_flight, compensate=cancel, on_error=Retry(2, ExponentialBackoff(1.0))),
            step(rent_car, compensate=cancel, on_error=Retry(3, ExponentialBackoff(2.0))),
        ),
        step(mail_itinerary, on_error=Skip()),
        step(pay, compensate=cancel, timeout=timedelta(seconds=5), on_error=Retry(2)),
    )


# --- the demo saga ---------------------------------------------------------------------------


@needs_looptime
async def test_the_demo_saga_recovers_from_a_crash_at_every_write_under_both_policies() -> None:
    started = time.perf_counter()

    report = await explore_crashes(fresh_saga, ORDER)

    assert time.perf_counter() - started < 5.0  # 5 s saga timeouts and backoff included
    assert report.ok, str(report)
    assert report.saga_name == "CreateOrderSaga"
    assert report.uncrashed.outcome == "COMPLETED"
    assert len(report.writes) == 8
    assert len(report.crashes) == 2 * 2 * len(report.writes)  # two policies, before and after
    assert report.crash("killed after write 1, COMPENSATE").outcome == "FAILED"
    assert report.crash("killed after write 1, RESUME").outcome == "COMPLETED"
    # Write 7 has the order's confirmation (the pivot) committed: past it, even COMPENSATE
    # goes forward.
    assert "step_committed confirm_order#1" in report.writes[6]
    assert report.crash("killed after write 7, COMPENSATE").outcome == "COMPLETED"
    assert report.crash("killed after write 8, RESUME").recovered is None  # it had finished
    # The demo's inventory fails its first call: a repeated attempt succeeds where the
    # uncrashed run's second attempt did, so that crash is not compared with the uncrashed run.
    assert any("reserve_stock answered" in note for note in report.notes), report.notes


@needs_looptime
async def test_the_demo_leaves_a_ticket_or_charge_only_when_a_crash_hid_that_it_was_made() -> None:
    report = await explore_crashes(fresh_saga, ORDER, policies=(COMPENSATE,))

    assert report.ok, str(report)
    left_behind = set()
    for outcome in report.crashes:
        saga = outcome.subject
        assert isinstance(saga, CreateOrderSaga)
        unrefunded = set(saga.payments.charged) - set(saga.payments.refunded)
        if outcome.outcome == "FAILED" and (saga.kitchen.tickets or unrefunded):
            left_behind.add(outcome.scenario.description)
    # The at-least-once window: the step acted, but the process died before its commit (with
    # the ticket id or payment id) was written. COMPENSATE compensates the step anyway, with
    # the data from before it, and the demo's compensations need those ids: the ticket or
    # charge stays. A compensation that must never leave anything behind looks the effect up
    # by something it had before acting (the order id, current_step().idempotency_key).
    assert left_behind == {
        "killed before write 2, COMPENSATE",  # the ticket was issued, its commit not written
        "killed after write 2, COMPENSATE",  # the same, the kill just after the next write
        "killed before write 3, COMPENSATE",  # both committed in memory, neither written
    }


@needs_looptime
async def test_a_demo_order_whose_payment_failed_is_rolled_back_after_any_crash() -> None:
    report = await explore_crashes(fresh_saga, ORDER, failing_step="charge_payment")

    for outcome in report.crashes:
        saga = outcome.subject
        assert isinstance(saga, CreateOrderSaga)
        # FAILED, or never started: the first write (the saga's start) was lost
        assert outcome.outcome in ("FAILED", "-"), outcome.scenario
        events = outcome.record.events if outcome.record is not None else ()
        ticket_logged = any(e.kind == "step_committed" and e.step == "issue_ticket" for e in events)
        if ticket_logged:  # its commit carries the ticket id: the undo must cancel it
            assert not saga.kitchen.tickets, f"{outcome.scenario}: a ticket was left behind"
        # else the at-least-once window: issued, but the crash hid its id (see the test below)
    assert report.ok, str(report)


@needs_looptime
async def test_the_demo_saga_resumed_through_its_group_stores_the_data_it_ends_with() -> None:
    report = await explore_crashes(
        fresh_saga, ORDER, failing_step="reserve_stock", policies=(RESUME,)
    )

    assert Check.STORED_DATA not in checks(report), str(report)


@needs_looptime
async def test_the_demo_saga_with_a_failing_compensation_ends_compensation_failed() -> None:
    report = await explore_crashes(
        fresh_saga,
        ORDER,
        failing_step="reserve_stock",
        failing_compensation="issue_ticket",
        policies=(COMPENSATE,),
    )

    assert report.ok, str(report)
    assert report.uncrashed.outcome == "SagaCompensationFailedError"
    assert {o.outcome for o in report.crashes} <= {"-", "COMPENSATION_FAILED", "FAILED"}
    assert "COMPENSATION_FAILED" in {o.outcome for o in report.crashes}


# --- a group, retries, a skipped step, a step timeout ---------------------------------------


@needs_looptime
@pytest.mark.parametrize("policy", [COMPENSATE, RESUME], ids=lambda p: p.name.lower())
async def test_a_trip_recovers_from_every_crash(policy: RecoveryPolicy) -> None:
    report = await explore_crashes(trip, Trip(), saga_name="trip", policies=(policy,))

    assert report.ok, str(report)
    assert report.uncrashed.outcome == "COMPLETED"
    result = report.uncrashed.result
    assert result is not None
    assert [(r.name, r.attempt) for r in result.history if r.name in {"rent_car", "pay"}] == [
        ("rent_car", 1),
        ("rent_car", 2),
        ("rent_car", 3),
        ("pay", 1),  # cut off by its timeout
        ("pay", 2),
    ]
    expected = {COMPENSATE: "FAILED", RESUME: "COMPLETED"}[policy]
    assert report.crash(f"killed after write 3, {policy.name}").outcome == expected


@needs_looptime
@pytest.mark.parametrize("policy", [COMPENSATE, RESUME], ids=lambda p: p.name.lower())
async def test_a_trip_whose_skipped_step_fails_recovers_from_every_crash(
    policy: RecoveryPolicy,
) -> None:
    report = await explore_crashes(
        trip, Trip(), saga_name="trip", failing_step="mail_itinerary", policies=(policy,)
    )

    assert report.ok, str(report)
    assert report.uncrashed.result is not None
    assert report.uncrashed.result.skipped == ("mail_itinerary",)


@needs_looptime
@pytest.mark.parametrize("policy", [COMPENSATE, RESUME], ids=lambda p: p.name.lower())
async def test_a_trip_whose_payment_fails_is_compensated_after_every_crash(
    policy: RecoveryPolicy,
) -> None:
    report = await explore_crashes(
        trip, Trip(), saga_name="trip", failing_step="pay", policies=(policy,)
    )

    assert report.ok, str(report)
    assert report.uncrashed.outcome == "FAILED"
    assert {o.outcome for o in report.crashes} <= {"-", "FAILED"}


@needs_looptime
async def test_a_group_member_that_failed_for_good_is_not_resumed() -> None:
    report = await explore_crashes(
        trip,
        Trip(),
        saga_name="trip",
        failing_step="book_flight",
        step_failures=2,
        policies=(RESUME,),
    )

    assert report.uncrashed.outcome == "FAILED"
    assert {o.outcome for o in report.crashes} <= {"-", "FAILED"}, str(report)


@needs_looptime
async def test_a_resumed_group_waits_for_its_retrying_sibling_as_an_uncrashed_run_does() -> None:
    report = await explore_crashes(
        trip,
        Trip(),
        saga_name="trip",
        failing_step="book_flight",
        step_failures=2,
        policies=(RESUME,),
    )

    messages = [
        v.message
        for o in report.crashes
        if o.outcome == "FAILED"
        for v in o.violations
        if v.check is Check.RESUMED_AS_UNCRASHED
    ]
    assert not messages, "\n".join(messages)


@needs_looptime
async def test_a_trip_whose_flight_fails_keeps_its_data_through_recovery() -> None:
    report = await explore_crashes(
        trip, Trip(), saga_name="trip", failing_step="book_flight", policies=(COMPENSATE,)
    )

    assert report.ok, str(report)


async def slow_first(data: Order) -> Order:
    for _ in range(5):  # still running when its sibling has committed
        await asyncio.sleep(0)
    if current_step().attempt == 1:  # its retry writes the sibling's commit to the log
        raise ConnectionError("the payment API timed out")
    return dataclasses.replace(data, charged=True)


async def fast_second(data: Order) -> Order:
    return dataclasses.replace(data, reserved=True)


async def undo(data: Order) -> None:
    return None


async def test_group_members_are_compensated_in_reverse_declaration_order_after_a_crash() -> None:
    flow = saga_flow(
        parallel(
            step(slow_first, compensate=undo, on_error=Retry(2, ExponentialBackoff(1.0))),
            step(fast_second, compensate=undo),
        ),
        step(fast_second),
    )

    report = await explore_crashes(flow, Order(), saga_name="group", policies=(COMPENSATE,))

    assert Check.COMPENSATION_ORDER not in checks(report), str(report)


# --- the order flow of the harness tests, on the real SQLite store ----------------------------


async def test_an_order_explored_on_sqlite_recovers_from_every_crash(tmp_path: Path) -> None:
    numbers = itertools.count()

    def sqlite(clock: Callable[[], float]) -> SagaStore:
        return SqliteSagaStore(tmp_path / f"{next(numbers)}.db", synchronous="NORMAL", clock=clock)

    report = await explore_crashes(order_flow(Services()), Order(), saga_name="order", store=sqlite)

    assert report.ok, str(report)
    assert report.uncrashed.outcome == "COMPLETED"
    assert next(numbers) == 1 + len(report.crashes)  # a fresh store for every run


@needs_looptime
async def test_a_flow_with_a_timeout_explored_on_sqlite_keeps_its_time_while_the_worker_writes(
    tmp_path: Path,
) -> None:
    # A saga timeout makes the explorer run on virtual loop time, which moves on to the next
    # timer whenever the loop has nothing to do. SQLite FULL writes on its worker thread: the
    # time jumped past the 5-second timeout while the first write was on its way, and the
    # uncrashed run failed with SagaAlreadyStartedError (2 writes, 3 violations).
    numbers = itertools.count()

    def sqlite(clock: Callable[[], float]) -> SagaStore:
        return SqliteSagaStore(tmp_path / f"{next(numbers)}.db", clock=clock)  # FULL

    flow = order_flow(Services()).timeout(timedelta(seconds=5))
    report = await explore_crashes(flow, Order(), saga_name="order", store=sqlite)

    assert report.ok, str(report)
    assert report.uncrashed.outcome == "COMPLETED"
    assert len(report.writes) >= 5


# --- the checks can fail: stores with planted bugs ----------------------------------------------


class ForgetsTheFirstStep(InMemorySagaStore):
    """Hands recovery a log without the first step that committed (its start and commit), as
    a recovery that loses a step would."""

    async def claim(
        self, owner: str, lease_seconds: float, limit: int, saga_ids: Sequence[str] = ()
    ) -> list[SagaRecord]:
        claimed = await super().claim(owner, lease_seconds, limit, saga_ids)
        return [dataclasses.replace(r, events=_without_first_step(r.events)) for r in claimed]


def _without_first_step(events: tuple[StoredEvent, ...]) -> tuple[StoredEvent, ...]:
    first = next((e.step_key for e in events if e.kind == "step_committed"), None)
    return tuple(e for e in events if first is None or e.step_key != first)


class KeepsTheFirstData(InMemorySagaStore):
    """Returns every saga with the data it started with (a store that never updates it)."""

    async def load(self, saga_id: str) -> SagaRecord | None:
        record = await super().load(saga_id)
        if record is None or not record.events or record.events[0].data is None:
            return record
        return dataclasses.replace(record, data=record.events[0].data)


class RenamesTheSaga(InMemorySagaStore):
    """Hands recovery the saga's data under another saga id: the repeat of an attempt then
    gets another idempotency key (the key is made of the saga id, step and attempt)."""

    async def claim(
        self, owner: str, lease_seconds: float, limit: int, saga_ids: Sequence[str] = ()
    ) -> list[SagaRecord]:
        claimed = await super().claim(owner, lease_seconds, limit, saga_ids)
        renamed = []
        for record in claimed:
            other = str(uuid.uuid4())
            events = tuple(
                e if e.data is None else e._replace(data=e.data.replace(record.saga_id, other))
                for e in record.events
            )
            renamed.append(dataclasses.replace(record, events=events))
        return renamed


class NeverClaims(InMemorySagaStore):
    """Finds no unfinished saga to recover."""

    async def claim(
        self, owner: str, lease_seconds: float, limit: int, saga_ids: Sequence[str] = ()
    ) -> list[SagaRecord]:
        return []


@pytest.mark.parametrize(
    ("store", "policy", "check"),
    [
        (ForgetsTheFirstStep, COMPENSATE, Check.COMPENSATED_ONCE),
        (ForgetsTheFirstStep, RESUME, Check.REPEATED_CALL),
        (KeepsTheFirstData, RESUME, Check.STORED_DATA),
        (RenamesTheSaga, RESUME, Check.IDEMPOTENCY_KEY),
        (NeverClaims, COMPENSATE, Check.RECOVERED),
        (NeverClaims, RESUME, Check.FINISHED_IN_STORE),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else str(value),
)
async def test_a_broken_recovery_is_reported_by_its_check(
    store: type[InMemorySagaStore], policy: RecoveryPolicy, check: Check
) -> None:
    def planted(clock: Callable[[], float]) -> SagaStore:
        return store(clock=clock)

    report = await explore_crashes(
        order_flow(Services()), Order(), saga_name="order", policies=(policy,), store=planted
    )

    assert not report.ok
    assert check in checks(report), str(report)


async def test_a_dropped_compensation_is_explained() -> None:
    def planted(clock: Callable[[], float]) -> SagaStore:
        return ForgetsTheFirstStep(clock=clock)

    report = await explore_crashes(
        order_flow(Services()),
        Order(),
        saga_name="order",
        failing_step="ship",
        policies=(COMPENSATE,),
        store=planted,
    )

    outcome = report.crash("ship fails, killed after write 2, COMPENSATE")
    assert [str(v) for v in outcome.violations if v.check is Check.COMPENSATED_ONCE] == [
        "[ship fails, killed after write 2, COMPENSATE] compensated-once: reserve committed and "
        "was compensated never, not once"
    ]


# --- the report and the parameters ----------------------------------------------------------------


async def test_the_report_shows_each_crash_point_with_its_write() -> None:
    report = await explore_crashes(
        order_flow(Services()), Order(), saga_name="order", policies=(RESUME,), lost_writes=False
    )

    text = str(report)
    assert text.splitlines()[0].startswith("explore_crashes(order): no fault, 6 writes, 6 crashes")
    assert "after 1, RESUME  begin: saga_started, step_started reserve#1" in text
    assert report.writes[-1] == "append: step_committed ship#1, saga_finished -> COMPLETED"
    assert report.crash("killed after write 2, RESUME").ran[:3] == (
        "reserve",
        "| killed |",
        "charge",
    )


async def test_unknown_steps_are_refused_with_the_names_there_are() -> None:
    with pytest.raises(ValueError, match=r"failing_step='nope'.*reserve, charge"):
        await explore_crashes(order_flow(Services()), Order(), failing_step="nope")
    with pytest.raises(ValueError, match=r"failing_compensation='notify'.*compensation"):
        await explore_crashes(order_flow(Services()), Order(), failing_compensation="notify")
    with pytest.raises(ValueError, match=r"step_failures=0"):
        await explore_crashes(order_flow(Services()), Order(), failing_step="ship", step_failures=0)


def trip_with_a_retried_refund() -> SagaFlow[Trip]:
    """The trip, its flight's cancellation retried by a policy of its own (Retry(3))."""
    return saga_flow(
        step(book_hotel, compensate=cancel),
        parallel(
            step(book_flight, compensate=step(cancel) | Retry(3, ExponentialBackoff(1.0))),
            step(rent_car, compensate=cancel, on_error=Retry(3, ExponentialBackoff(2.0))),
        ),
        step(mail_itinerary, on_error=Skip()),
        step(pay, compensate=cancel, timeout=timedelta(seconds=5), on_error=Retry(2)),
    )


@needs_looptime
async def test_a_retried_compensation_recovers_at_every_write_under_both_policies() -> None:
    report = await explore_crashes(
        trip_with_a_retried_refund,
        Trip(),
        saga_name="trip",
        failing_step="pay",
        failing_compensation="book_flight",
        compensation_failures=2,  # the airline refuses the cancellation twice
    )

    assert report.ok, str(report)
    assert report.uncrashed.outcome == "FAILED"
    assert len(report.crashes) == 2 * 2 * len(report.writes)
    result = report.uncrashed.result
    assert result is not None
    attempts = [
        (r.attempt, r.status.value)
        for r in result.history
        if r.compensation and r.name == "book_flight"
    ]
    assert attempts == [(1, "FAILED"), (2, "FAILED"), (3, "COMPENSATED")]
