"""`recovery.replay`: a saga's state from its log alone, without running anything; and what
the one run driver is started with (`Replayed.start_point`, `rollback_entries`)."""

from __future__ import annotations

import dataclasses

from spakky_saga import Retry, parallel, saga_flow, step
from spakky_saga.codec import encode, type_name
from spakky_saga.plan import ExecutionPlan, StepNode, plan_for
from spakky_saga.recovery import Replayed, replay
from spakky_saga.store import SagaRecord, StoredEvent, StoredStatus
from tests.durable_support import Ticket

TICKET = Ticket(order_id=1)
TYPE = type_name(Ticket)


async def reserve(data: Ticket) -> Ticket:
    return dataclasses.replace(data, stock=1)


async def charge(data: Ticket) -> Ticket:
    return dataclasses.replace(data, charged=5)


async def ship(data: Ticket) -> Ticket:
    return dataclasses.replace(data, shipped=True)


async def undo(data: Ticket) -> None:
    return None


def plan() -> ExecutionPlan:
    """reserve (1), then charge (2.1, Retry(2)) & ship (2.2, Retry(3)); all compensable."""
    return plan_for(
        saga_flow(
            step(reserve, compensate=undo),
            parallel(
                step(charge, compensate=undo) | Retry(2),
                step(ship, compensate=undo) | Retry(3),
            ),
        )
    )


class Log:
    """Builds a saga's log entry by entry, as the journal writes it."""

    def __init__(self) -> None:
        self.events: list[StoredEvent] = [
            StoredEvent(1, "saga_started", 100.0, data=encode(TICKET), data_type=TYPE)
        ]

    def add(
        self,
        kind: str,
        key: str,
        name: str,
        attempt: int = 1,
        *,
        data: Ticket | None = None,
        error: str | None = None,
    ) -> Log:
        self.events.append(
            StoredEvent(
                len(self.events) + 1,
                kind,
                100.0 + len(self.events),
                key,
                name,
                attempt,
                0.5,
                None if error is None else "ConnectionError",
                error,
                None if data is None else encode(data),
                None if data is None else TYPE,
            )
        )
        return self

    def replay(self) -> Replayed:
        record = SagaRecord(
            saga_id=str(TICKET.saga_id),
            saga_name="order",
            status=StoredStatus.RUNNING,
            fingerprint="-",
            structure="[]",
            policy="resume",
            data=encode(TICKET),
            data_type=TYPE,
            codec="pydantic-json/1",
            created=100.0,
            updated=100.0,
            events=tuple(self.events),
        )
        return replay(record, plan())


def reserved() -> Log:
    after = dataclasses.replace(TICKET, stock=1)
    return (
        Log()
        .add("step_started", "1", "reserve")
        .add("step_committed", "1", "reserve", data=after)
        .add("step_started", "2.1", "charge")
        .add("step_started", "2.2", "ship")
    )


def test_a_step_in_doubt_runs_again_with_its_own_attempt_number() -> None:
    state = reserved().replay()

    assert state.next_index == 1
    assert isinstance(state.data, Ticket)
    assert state.data.stock == 1
    point = state.start_point()
    assert point.index == 1
    assert dict(point.attempts) == {"1": 2, "2.1": 1, "2.2": 1}  # 2.x in doubt: again as 1
    assert not state.rolling_back


def test_a_member_whose_strategy_gave_up_is_failed_for_good_while_a_sibling_retries() -> None:
    state = (
        reserved()
        .add("step_failed", "2.1", "charge", 1, error="down")
        .add("step_retrying", "2.1", "charge", 2)
        .add("step_failed", "2.2", "ship", 1, error="busy")
        .add("step_retrying", "2.2", "ship", 2)  # a sibling's retry: not charge's
        .add("step_started", "2.1", "charge", 2)
        .add("step_failed", "2.1", "charge", 2, error="down")
        .replay()
    )

    assert not state.rolling_back  # ship is still retrying: the group goes on when resumed
    point = state.start_point()
    assert set(point.failed) == {"2.1"}
    assert str(point.failed["2.1"]) == "down"
    assert point.attempts["2.2"] == 2
    assert state.failed_step == "charge"


def test_a_group_whose_members_all_ended_with_one_failed_is_rolled_back() -> None:
    state = (
        reserved()
        .add("step_failed", "2.1", "charge", 1, error="down")
        .add("step_committed", "2.2", "ship", data=dataclasses.replace(TICKET, shipped=True))
        .replay()
    )

    assert state.rolling_back
    assert state.failed_step == "charge"  # not forgotten when ship committed after it
    rollback_data = state.rollback_data
    assert isinstance(rollback_data, Ticket)
    assert rollback_data.shipped  # the committed member's change reaches the compensations
    entries = state.rollback_entries(in_doubt=True)
    assert [e.key for e in entries if isinstance(e, StepNode)] == ["1", "2.2"]


def test_under_compensate_a_member_in_doubt_is_undone_in_declaration_order() -> None:
    state = (
        reserved()
        .add("step_committed", "2.2", "ship", data=dataclasses.replace(TICKET, shipped=True))
        .replay()
    )

    entries = state.rollback_entries(in_doubt=True)
    assert [e.key for e in entries if isinstance(e, StepNode)] == ["1", "2.1", "2.2"]
    assert [e.key for e in state.rollback_entries(in_doubt=False) if isinstance(e, StepNode)] == [
        "1",
        "2.2",
    ]


def test_a_finished_group_is_merged_into_the_data_and_its_members_registered() -> None:
    before = dataclasses.replace(TICKET, stock=1)  # the group's input: after reserve
    state = (
        reserved()
        .add("step_committed", "2.1", "charge", data=dataclasses.replace(before, charged=5))
        .add("step_committed", "2.2", "ship", data=dataclasses.replace(before, shipped=True))
        .replay()
    )

    assert state.next_index == 2  # past the last item
    assert isinstance(state.data, Ticket)
    assert (state.data.stock, state.data.charged, state.data.shipped) == (1, 5, True)
    assert [e.key for e in state.undo if isinstance(e, StepNode)] == ["1", "2.1", "2.2"]


def test_compensation_attempts_continue_where_the_log_stopped() -> None:
    state = (
        reserved()
        .add("step_failed", "2.1", "charge", 1, error="down")
        .add("step_committed", "2.2", "ship")
        .add("compensation_started", "2.2", "ship", 1)
        .add("compensation_failed", "2.2", "ship", 1, error="refused")
        .add("compensation_retrying", "2.2", "ship", 2)
        .add("compensation_started", "2.2", "ship", 2)  # then the crash: attempt 2 in doubt
        .replay()
    )

    assert state.rolling_back
    assert dict(state.rollback_point().compensation_attempts) == {"2.2": 2}
    assert [e.key for e in state.rollback_entries(in_doubt=False) if isinstance(e, StepNode)] == [
        "1",
        "2.2",
    ]


def test_a_compensation_that_failed_for_good_is_retried_as_its_next_attempt() -> None:
    state = (
        reserved()
        .add("step_failed", "2.1", "charge", 1, error="down")
        .add("step_committed", "2.2", "ship")
        .add("compensation_started", "2.2", "ship", 1)
        .add("compensation_failed", "2.2", "ship", 1, error="refused")
        .replay()
    )

    assert state.compensation_failures == {"2.2": "refused"}
    assert dict(state.rollback_point().compensation_attempts) == {"2.2": 2}
    assert [e.key for e in state.rollback_entries(in_doubt=False) if isinstance(e, StepNode)] == [
        "1"
    ]
