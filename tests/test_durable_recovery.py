"""Recovering durable sagas: each crash point, each policy, and what recovery refuses.

The first engine "crashes" inside a step (a BaseException: nothing more is written); the
store's clock then expires its lease, and a second engine recovers the saga.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest

from spakky_saga import (
    ExponentialBackoff,
    InMemorySagaStore,
    RecoveryPolicy,
    Retry,
    SagaCompensationFailedError,
    SagaFlowChangedError,
    SagaRecoveryError,
    SagaStatus,
    StepStatus,
    StoredStatus,
    current_step,
    parallel,
    saga_flow,
    step,
)
from spakky_saga.testing import VirtualClock
from tests.durable_support import Crash, Ledger, StoreClock, Ticket, bump, engines


@pytest.fixture
def clock() -> StoreClock:
    return StoreClock()


@pytest.fixture
def store(clock: StoreClock) -> InMemorySagaStore:
    return InMemorySagaStore(clock=clock)


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


def three_steps(ledger: Ledger) -> object:
    return saga_flow(
        ledger.transaction("reserve", bump("stock")),
        ledger.transaction("charge", bump("charged", 10)),
        ledger.transaction("ship", lambda d: dataclasses.replace(d, shipped=True)),
    )


@pytest.mark.parametrize("crash_in", ["reserve", "charge", "ship"])
async def test_compensate_policy_undoes_committed_and_in_doubt_steps_once_after_a_crash(
    crash_in: str, store: InMemorySagaStore, clock: StoreClock, ledger: Ledger
) -> None:
    flow = three_steps(ledger)
    crashed, recovering = engines(store, flow)  # type: ignore[arg-type] # a SagaFlow[Ticket]
    ledger.crash_at = crash_in
    with pytest.raises(Crash):
        await crashed.run(flow, Ticket(order_id=1), saga_name="order")  # type: ignore[arg-type]
    clock.expire()

    report = await recovering.recover()

    names = ["reserve", "charge", "ship"]
    done = names[: names.index(crash_in)]
    # The attempt the crash cut may have happened (at-least-once): it is compensated too.
    undone = [*done, crash_in]
    assert ledger.names() == done + [f"undo {n}" for n in reversed(undone)]
    [saga] = report.sagas
    assert saga.outcome == "compensated"
    assert saga.result is not None
    assert saga.result.status is SagaStatus.FAILED
    record = await store.load(saga.saga_id)
    assert record is not None
    assert record.status is StoredStatus.FAILED
    assert record.owner is None


async def test_a_step_that_may_have_happened_is_compensated_too(
    store: InMemorySagaStore, clock: StoreClock, ledger: Ledger
) -> None:
    # The process dies after "charge" did its work but before the engine recorded it.
    async def charge_then_die(data: Ticket) -> Ticket:
        ledger.entries.append(("charge", "side effect happened"))
        raise Crash

    flow = saga_flow(
        ledger.transaction("reserve", bump("stock")),
        step(charge_then_die, compensate=ledger.undo("charge")),
    )
    crashed, recovering = engines(store, flow)
    with pytest.raises(Crash):
        await crashed.run(flow, Ticket(order_id=1), saga_name="order")
    clock.expire()

    await recovering.recover()

    assert ledger.names() == ["reserve", "charge", "undo charge", "undo reserve"]


async def test_resume_policy_reruns_the_unfinished_attempt_with_the_same_key_and_completes(
    store: InMemorySagaStore, clock: StoreClock, ledger: Ledger
) -> None:
    flow = three_steps(ledger)
    crashed, recovering = engines(store, flow, recovery=RecoveryPolicy.RESUME)  # type: ignore[arg-type]
    ledger.crash_at = "charge"
    with pytest.raises(Crash):
        await crashed.run(flow, Ticket(order_id=7), saga_name="order")  # type: ignore[arg-type]
    clock.expire()

    report = await recovering.recover()

    [saga] = report.sagas
    assert saga.outcome == "completed"
    assert saga.result is not None
    assert saga.result.status is SagaStatus.COMPLETED
    assert (saga.result.data.stock, saga.result.data.charged) == (1, 10)
    assert saga.result.data.shipped
    assert ledger.names() == ["reserve", "charge", "ship"]
    charge_key = dict(ledger.entries)["charge"]
    assert charge_key.endswith("/2:charge/1")  # the attempt the crash cut, same number
    assert [r.name for r in saga.result.history if r.status is StepStatus.COMMITTED] == [
        "reserve",
        "charge",
        "ship",
    ]


async def test_resume_continues_a_retry_with_the_next_attempt(
    store: InMemorySagaStore, clock: StoreClock, ledger: Ledger
) -> None:
    attempts: list[int] = []

    async def flaky(data: Ticket) -> None:
        attempts.append(current_step().attempt)
        if len(attempts) == 1:
            raise ConnectionError("down")
        if len(attempts) == 2:
            raise Crash

    flow = saga_flow(
        ledger.transaction("reserve", bump("stock")),
        step(flaky, on_error=Retry(5, ExponentialBackoff(0.0))),
    )
    crashed, recovering = engines(store, flow, recovery=RecoveryPolicy.RESUME)
    with pytest.raises(Crash):
        await crashed.run(flow, Ticket(order_id=1), saga_name="order")
    clock.expire()

    [saga] = (await recovering.recover()).sagas

    assert saga.outcome == "completed"
    assert attempts == [1, 2, 2]  # attempt 2 was cut off: it runs again as attempt 2


async def test_a_crash_during_rollback_finishes_the_rollback_without_repeating_done_work(
    store: InMemorySagaStore, clock: StoreClock, ledger: Ledger
) -> None:
    async def fail(data: Ticket) -> None:
        raise ValueError("card declined")

    flow = saga_flow(
        ledger.transaction("a"), ledger.transaction("b"), ledger.transaction("c"), fail
    )
    crashed, recovering = engines(store, flow, recovery=RecoveryPolicy.RESUME)
    ledger.crash_at = "undo b"
    with pytest.raises(Crash):
        await crashed.run(flow, Ticket(order_id=1), saga_name="order")
    clock.expire()

    [saga] = (await recovering.recover()).sagas

    # "undo c" is not repeated; "undo b" (in doubt) runs; then "undo a". Even under RESUME:
    # a saga that was compensating is only ever compensated.
    assert ledger.names() == ["a", "b", "c", "undo c", "undo b", "undo a"]
    assert saga.outcome == "compensated"


async def test_a_crash_inside_a_group_compensates_the_members_that_committed(
    store: InMemorySagaStore, clock: StoreClock, ledger: Ledger
) -> None:
    flow = saga_flow(
        ledger.transaction("reserve", bump("stock")),
        parallel(
            ledger.transaction("email"),
            ledger.transaction("invoice"),
            ledger.transaction("charge", bump("charged", 5)),
        ),
    )
    crashed, recovering = engines(store, flow)
    ledger.crash_at = "charge"
    with pytest.raises(BaseExceptionGroup):
        await crashed.run(flow, Ticket(order_id=1), saga_name="order")
    clock.expire()

    await recovering.recover()

    assert sorted(ledger.names()[:3]) == ["email", "invoice", "reserve"]
    assert ledger.names()[3:] == ["undo charge", "undo invoice", "undo email", "undo reserve"]


async def test_resume_runs_only_the_unfinished_members_of_a_group(
    store: InMemorySagaStore, clock: StoreClock, ledger: Ledger
) -> None:
    flow = saga_flow(
        parallel(
            ledger.transaction("email"),
            ledger.transaction("charge", bump("charged", 5)),
            ledger.transaction("stock", bump("stock", 2)),
        ),
        ledger.transaction("ship", lambda d: dataclasses.replace(d, shipped=True)),
    )
    crashed, recovering = engines(store, flow, recovery=RecoveryPolicy.RESUME)
    ledger.crash_at = "stock"
    with pytest.raises(BaseExceptionGroup):
        await crashed.run(flow, Ticket(order_id=1), saga_name="order")
    clock.expire()

    [saga] = (await recovering.recover()).sagas

    assert saga.result is not None
    assert saga.result.status is SagaStatus.COMPLETED
    assert (saga.result.data.charged, saga.result.data.stock) == (5, 2)
    assert sorted(ledger.names()) == ["charge", "email", "ship", "stock"]


async def test_a_changed_flow_is_refused_and_recovers_once_the_old_one_is_back(
    store: InMemorySagaStore, clock: StoreClock, ledger: Ledger
) -> None:
    flow = three_steps(ledger)
    crashed, recovering = engines(store, flow)  # type: ignore[arg-type]
    ledger.crash_at = "ship"
    with pytest.raises(Crash):
        await crashed.run(flow, Ticket(order_id=1), saga_name="order")  # type: ignore[arg-type]
    clock.expire()
    changed = saga_flow(
        ledger.transaction("reserve", bump("stock")),
        ledger.transaction("charge_card", bump("charged", 10)),
        ledger.transaction("ship"),
    )
    recovering.register("order", changed)

    report = await recovering.recover()

    [refused] = report.refused
    assert isinstance(refused.error, SagaFlowChangedError)
    assert refused.error.changes == (
        'item 2 was "charge >> undo_charge", is now "charge_card >> undo_charge_card"',
    )
    assert ledger.names() == ["reserve", "charge"]  # nothing compensated
    recovering.register("order", flow)  # type: ignore[arg-type]
    clock.expire()
    [saga] = (await recovering.recover()).sagas
    assert saga.outcome == "compensated"
    assert ledger.names()[2:] == ["undo ship", "undo charge", "undo reserve"]


async def test_a_changed_flow_can_be_compensated_by_step_name(
    store: InMemorySagaStore, clock: StoreClock, ledger: Ledger
) -> None:
    flow = three_steps(ledger)
    crashed, recovering = engines(store, flow)  # type: ignore[arg-type]
    ledger.crash_at = "ship"
    with pytest.raises(Crash):
        await crashed.run(flow, Ticket(order_id=1), saga_name="order")  # type: ignore[arg-type]
    clock.expire()
    recovering.register(
        "order",
        saga_flow(
            ledger.transaction("audit"),
            ledger.transaction("charge", bump("charged")),
            ledger.transaction("reserve", bump("stock")),
        ),
    )

    [saga] = (await recovering.recover(compensate_by_name=True)).sagas

    assert saga.outcome == "compensated"
    assert ledger.names() == ["reserve", "charge", "undo charge", "undo reserve"]


async def test_an_unknown_saga_name_is_refused_and_the_others_recover(
    store: InMemorySagaStore, clock: StoreClock, ledger: Ledger
) -> None:
    flow = three_steps(ledger)
    crashed, recovering = engines(store, flow)  # type: ignore[arg-type]
    crashed.register("legacy", flow)  # type: ignore[arg-type]
    for name in ("legacy", "order"):
        ledger.crash_at = "charge"
        with pytest.raises(Crash):
            await crashed.run(flow, Ticket(order_id=1), saga_name=name)  # type: ignore[arg-type]
    clock.expire()

    report = await recovering.recover()

    outcomes = {saga.saga_name: saga.outcome for saga in report.sagas}
    assert outcomes == {"legacy": "refused", "order": "compensated"}
    [refused] = report.refused
    assert isinstance(refused.error, SagaRecoveryError)
    assert 'no flow is registered as "legacy"' in str(refused.error)
    legacy = await store.load(refused.saga_id)
    assert legacy is not None
    assert (legacy.status, legacy.owner) == (StoredStatus.RUNNING, None)  # left for others


async def test_retry_compensation_reruns_only_the_failed_compensation(
    store: InMemorySagaStore, ledger: Ledger
) -> None:
    refunds = {"broken": True}

    async def refund(data: Ticket) -> None:
        if refunds["broken"]:
            raise ConnectionError("payment API down")
        ledger.entries.append(("undo charge", "retried"))

    async def fail(data: Ticket) -> None:
        raise ValueError("out of stock")

    flow = saga_flow(
        ledger.transaction("reserve"), step(ledger.action("charge"), compensate=refund), fail
    )
    engine, _ = engines(store, flow)
    with pytest.raises(SagaCompensationFailedError):
        await engine.run(flow, Ticket(order_id=1), saga_name="order")
    [failed] = await store.list([StoredStatus.COMPENSATION_FAILED])
    refunds["broken"] = False

    outcome = await engine.retry_compensation(failed.saga_id)

    assert outcome.outcome == "compensated"
    assert ledger.names() == ["reserve", "charge", "undo reserve", "undo charge"]
    record = await store.load(failed.saga_id)
    assert record is not None
    assert record.status is StoredStatus.FAILED


async def test_a_crash_in_the_rollback_of_a_failed_group_still_compensates_its_members(
    store: InMemorySagaStore, clock: StoreClock, ledger: Ledger
) -> None:
    async def declined(data: Ticket) -> None:
        raise ValueError("card declined")

    flow = saga_flow(
        ledger.transaction("reserve"),
        parallel(ledger.transaction("email"), ledger.transaction("invoice"), declined),
    )
    crashed, recovering = engines(store, flow)
    ledger.crash_at = "undo invoice"  # the first compensation of the failed group
    with pytest.raises(Crash):
        await crashed.run(flow, Ticket(order_id=1), saga_name="order")
    clock.expire()

    [saga] = (await recovering.recover()).sagas

    assert saga.outcome == "compensated"
    assert ledger.names()[3:] == ["undo invoice", "undo email", "undo reserve"]


def test_a_rollback_cut_off_by_shutdown_is_finished_by_recovery(
    store: InMemorySagaStore, clock: StoreClock, ledger: Ledger
) -> None:
    stuck = asyncio.Event()

    reached: list[asyncio.Event] = []

    async def slow_undo(data: Ticket) -> None:
        ledger.entries.append(("undoing b", "-"))
        reached[0].set()
        await stuck.wait()

    slow_undo.__name__ = "undo_b"  # the same flow, as the next process defines it

    async def declined(data: Ticket) -> None:
        raise ValueError("card declined")

    flow = saga_flow(
        ledger.transaction("a"), step(ledger.action("b"), compensate=slow_undo), declined
    )
    # No grace period: the shutdown cuts the rollback off at once (with one, the engine would
    # run the stuck compensation again until the grace period ran out).
    crashed, recovering = engines(store, flow, shutdown_grace=timedelta(0))

    async def first_process() -> None:
        reached.append(asyncio.Event())
        asyncio.get_running_loop().create_task(
            crashed.run(flow, Ticket(order_id=1), saga_name="order")
        )
        await reached[0].wait()
        # main returns: asyncio.run cancels the saga's tasks, cutting its rollback off

    asyncio.run(first_process())
    clock.expire()
    recovering.register(
        "order",
        saga_flow(
            ledger.transaction("a"), step(ledger.action("b"), compensate=ledger.undo("b")), declined
        ),
    )

    [saga] = asyncio.run(recovering.recover()).sagas

    assert saga.outcome == "compensated"
    assert ledger.names() == ["a", "b", "undoing b", "undo b", "undo a"]


async def test_sagas_claimed_by_recovery_keep_their_leases_while_they_wait_their_turn(
    saga_clock: VirtualClock, ledger: Ledger
) -> None:
    # Virtual loop time (saga_clock) is the store's clock too: leases run out, the heartbeat
    # renews them and the rival polls exactly when the durations below say, however busy the
    # machine is. Four 5 s compensations, one at a time, take 20 s: far past the 6 s lease of
    # the sagas that wait their turn.
    store = InMemorySagaStore(clock=saga_clock)

    async def slow_undo(data: Ticket) -> None:
        await asyncio.sleep(5)
        ledger.entries.append(("undo reserve", str(data.order_id)))

    slow_undo.__name__ = "undo_reserve"
    flow = saga_flow(step(ledger.action("reserve"), compensate=slow_undo), ledger.action("pay"))
    lease = timedelta(seconds=6)
    crashed, recovering = engines(store, flow, lease=lease)
    for order_id in range(4):
        ledger.crash_at = "pay"
        with pytest.raises(Crash):
            await crashed.run(flow, Ticket(order_id=order_id), saga_name="order")
    await asyncio.sleep(10)  # the crashed engine's leases run out
    rival = engines(store, flow, lease=lease)[1]

    async def rival_recovers() -> int:
        taken = 0
        for _ in range(13):  # every 1.5 s while recovery runs (10 s to 29.5 s)
            await asyncio.sleep(1.5)
            taken += len(await rival.recover())
        return taken

    report, rival_took = await asyncio.gather(recovering.recover(), rival_recovers())

    assert [saga.outcome for saga in report.sagas] == ["compensated"] * 4
    assert rival_took == 0
    assert sorted(key for name, key in ledger.entries if name == "undo reserve") == list("0123")
