"""What a wait is, checked when it is built: `wait_for` needs a class pydantic can validate,
a plain `merge(data, signal)` function, a positive timeout and a strategy; `sleep` a positive
timedelta, `sleep_until` an aware datetime. A wait stands in a flow on its own: never in a
parallel group, never bound to or used as a compensation. It needs no compensation before a
pivot, and after one a sleep (which cannot fail) needs no retry. Each mistake raises
SagaWaitDefinitionError naming the wait and the fix."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from spakky_saga import (
    AbstractSagaData,
    SagaFlowDefinitionError,
    SagaNotRetriableAfterPivotError,
    SagaWait,
    SagaWaitDefinitionError,
    Skip,
    pivot,
    saga_flow,
    sleep,
    sleep_until,
    step,
    wait_for,
)
from spakky_saga.testing import explore_crashes, explore_failures


class Data(AbstractSagaData):
    value: str = ""


@dataclass(frozen=True)
class Approved:
    by: str


def approve(data: Data, signal: Approved) -> Data:
    return dataclasses.replace(data, value=signal.by)


async def act(data: Data) -> None:
    return None


async def undo(data: Data) -> None:
    return None


def test_a_wait_is_named_for_its_signal_type_and_keeps_its_options() -> None:
    wait = wait_for(Approved, merge=approve, timeout=timedelta(hours=2), on_timeout=Skip())

    assert isinstance(wait, SagaWait)
    assert wait.name == "wait_for(Approved)"
    assert wait.on_error == Skip()
    assert wait.read_only is True  # it changes nothing
    assert wait.wait.signal_type is Approved
    assert wait.wait.timeout == 7200
    assert repr(wait) == "SagaWait(wait_for(Approved))"
    assert sleep(timedelta(minutes=5)).name == "sleep(5min)"
    assert wait_for(Approved, merge=approve, name="approval").name == "approval"


def test_a_strategy_attached_with_a_pipe_is_what_a_timeout_means() -> None:
    wait = wait_for(Approved, merge=approve, timeout=timedelta(minutes=1)) | Skip()

    assert isinstance(wait, SagaWait)
    assert wait.on_error == Skip()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: wait_for(5, merge=approve),  # type: ignore[arg-type] # deliberate
            'wait "wait_for(int)": the signal type must be a class',
        ),
        (
            lambda: wait_for(Approved, merge="approve"),
            "merge must be a function (data, signal) -> data",
        ),
        (
            lambda: wait_for(Approved, merge=lambda data: data),  # type: ignore[arg-type,misc] # deliberate
            'merge "<lambda>" must take two arguments, the saga data and the signal',
        ),
        (
            lambda: wait_for(Approved, merge=_async_merge),  # type: ignore[saga-wait-merge] # deliberate
            'merge "_async_merge" is `async def`',
        ),
        (
            lambda: wait_for(Approved, merge=approve, timeout=timedelta(0)),
            "the time must be a positive datetime.timedelta",
        ),
        (
            lambda: wait_for(Approved, merge=approve, on_timeout=3),  # type: ignore[arg-type] # deliberate
            "on_error must be",
        ),
        (
            lambda: sleep(timedelta(seconds=-1)),
            "sleep: the time must be a positive datetime.timedelta",
        ),
        (
            lambda: sleep_until(datetime(2030, 1, 1)),
            "give an aware datetime",
        ),
    ],
)
def test_a_malformed_wait_is_refused_when_it_is_built(build: object, message: str) -> None:
    with pytest.raises(SagaWaitDefinitionError) as refused:
        build()  # type: ignore[operator] # a lambda
    assert message in str(refused.value)
    assert isinstance(refused.value, SagaFlowDefinitionError)


async def _async_merge(data: Data, signal: Approved) -> Data:
    return data


def test_a_signal_type_pydantic_cannot_validate_is_refused() -> None:
    class Opaque:
        def __init__(self, handle: object) -> None:
            self.handle = handle

    with pytest.raises(SagaWaitDefinitionError, match="cannot be validated by pydantic"):
        wait_for(Opaque, merge=lambda data, signal: data)


def test_a_wait_stands_alone_never_with_a_compensation_nor_in_a_group() -> None:
    wait = wait_for(Approved, merge=approve)

    with pytest.raises(SagaWaitDefinitionError, match="takes no compensation"):
        wait >> undo  # type: ignore[saga-wait-placement] # deliberate: the runtime refuses it too
    with pytest.raises(SagaWaitDefinitionError, match="a wait cannot be a compensation"):
        step(act) >> wait  # type: ignore[saga-wait-placement] # deliberate
    with pytest.raises(SagaWaitDefinitionError, match="cannot run in a parallel group"):
        step(act) & wait  # type: ignore[saga-wait-placement] # deliberate
    with pytest.raises(SagaWaitDefinitionError, match="cannot run in a parallel group"):
        wait & step(act)  # type: ignore[saga-wait-placement] # deliberate


def test_calling_a_wait_outside_an_engine_says_it_has_no_action() -> None:
    wait = sleep(timedelta(seconds=1))

    with pytest.raises(RuntimeError, match="has no action to call"):
        wait.action(Data()).send(None)  # type: ignore[attr-defined] # a coroutine


def test_waits_need_no_compensation_before_a_pivot_and_a_sleep_no_retry_after_it() -> None:
    flow = saga_flow(
        wait_for(Approved, merge=approve),
        pivot(step(act) >> undo),
        sleep(timedelta(hours=1)),
        wait_for(Approved, merge=approve),  # without a timeout it cannot fail either
        step(act) | Skip(),
    )

    assert flow.pivot_steps == ("act",)
    with pytest.raises(SagaNotRetriableAfterPivotError, match='"wait_for\\(Approved\\)"'):
        saga_flow(
            pivot(step(act) >> undo),
            wait_for(Approved, merge=approve, timeout=timedelta(1)),  # type: ignore[saga-pivot-not-retriable] # deliberate
        )


def test_a_wait_is_a_hexagon_in_the_diagram_with_its_timeout_and_what_a_timeout_means() -> None:
    flow = saga_flow(
        step(act) >> undo,
        wait_for(Approved, merge=approve, timeout=timedelta(hours=2), on_timeout=Skip()),
        sleep(timedelta(minutes=5)),
    )

    chart = flow.to_mermaid()

    assert 's2{{"wait_for(Approved)<br/>timeout 2h<br/>then Skip()"}}' in chart
    assert 's3{{"sleep(5min)"}}' in chart
    assert "s2 --> s3" in chart


async def test_the_explorers_refuse_a_flow_that_waits_rather_than_report_false_violations() -> None:
    flow = saga_flow(step(act) >> undo, sleep(timedelta(minutes=5)))

    with pytest.raises(ValueError, match=r"the flow waits \(sleep\(5min\)\); the explorers"):
        await explore_failures(flow, Data())
    with pytest.raises(ValueError, match="explore_crashes"):
        await explore_crashes(flow, Data())
