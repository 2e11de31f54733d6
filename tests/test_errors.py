"""Every saga error is an `AbstractSpakkySagaError`, itself a spakky framework error, and
carries its context as attributes as well as in its message."""

from __future__ import annotations

from datetime import timedelta

import pytest
from spakky.core.common.error import AbstractSpakkyFrameworkError

import spakky_saga
from spakky_saga import (
    AbstractSpakkySagaError,
    SagaCompensationFailedError,
    SagaEngineNotConnectedError,
    SagaFlowDefinitionError,
    SagaParallelMergeConflictError,
    SagaResult,
    SagaStatus,
    SagaStepResultError,
    SagaStepTimeoutError,
    SagaTimeoutError,
)
from tests.support import Boom, OrderData

DOCUMENTED_ERRORS = (
    SagaFlowDefinitionError,
    SagaCompensationFailedError,
    SagaStepTimeoutError,
    SagaParallelMergeConflictError,
    SagaEngineNotConnectedError,
)


def test_the_root_is_an_abstract_spakky_framework_error() -> None:
    assert issubclass(AbstractSpakkySagaError, AbstractSpakkyFrameworkError)
    assert issubclass(AbstractSpakkySagaError, Exception)


@pytest.mark.parametrize("error_class", [*DOCUMENTED_ERRORS, SagaTimeoutError, SagaStepResultError])
def test_every_saga_error_derives_from_the_root(error_class: type[Exception]) -> None:
    assert issubclass(error_class, AbstractSpakkySagaError)


def test_every_public_error_class_is_exported_and_under_the_root() -> None:
    exported = [getattr(spakky_saga, name) for name in spakky_saga.__all__]
    errors = [
        e
        for e in exported
        if isinstance(e, type) and issubclass(e, BaseException) and not issubclass(e, Warning)
    ]

    assert set(DOCUMENTED_ERRORS) <= set(errors)
    assert all(issubclass(error, AbstractSpakkySagaError) for error in errors)


def test_errors_also_have_the_matching_builtin_base() -> None:
    assert issubclass(SagaFlowDefinitionError, ValueError)
    assert issubclass(SagaStepTimeoutError, TimeoutError)
    assert issubclass(SagaTimeoutError, TimeoutError)
    assert issubclass(SagaEngineNotConnectedError, RuntimeError)
    assert issubclass(SagaStepResultError, TypeError)


def test_step_timeout_error_names_the_step_and_its_timeout() -> None:
    error = SagaStepTimeoutError("charge", timedelta(milliseconds=250))

    assert (error.step_name, error.timeout) == ("charge", timedelta(milliseconds=250))
    assert str(error) == 'step "charge" did not finish within 0.25s'


def test_saga_timeout_error_names_the_saga_and_the_running_step() -> None:
    running = SagaTimeoutError("Order", timedelta(seconds=2), "charge")
    between = SagaTimeoutError("Order", timedelta(seconds=2), None)

    assert (running.saga_name, running.running_step) == ("Order", "charge")
    assert str(running) == 'saga "Order" exceeded its timeout of 2s while step "charge" was running'
    assert str(between) == 'saga "Order" exceeded its timeout of 2s'


def test_step_result_error_says_what_was_returned_and_what_to_return() -> None:
    error = SagaStepResultError("issue", 42, OrderData)

    assert (error.step_name, error.value) == ("issue", 42)
    assert str(error) == (
        'step "issue" returned 42 (int), but the saga data is OrderData; return a OrderData '
        "(or a subclass) to replace the data, or None to keep it"
    )


def test_compensation_failed_error_carries_the_result_and_failures() -> None:
    result = SagaResult(SagaStatus.FAILED, OrderData(order_id=1), "b", Boom(), saga_name="Order")
    failure = Boom("refund refused")

    error = SagaCompensationFailedError(result, {"charge": failure})

    assert error.result is result
    assert error.failures == {"charge": failure}
    assert str(error) == (
        'saga "Order" could not be rolled back: compensation of "charge" (Boom(\'refund '
        "refused')) failed; the data may be inconsistent and needs manual repair (a durable "
        "saga: repair the participant, then run `spakky-saga retry-compensation "
        f"{result.data.saga_id}` to re-run the failed compensations)"
    )


def test_engine_not_connected_error_names_the_saga_and_the_reason() -> None:
    error = SagaEngineNotConnectedError("Order", "no engine")

    assert error.saga_name == "Order"
    assert str(error) == 'cannot execute saga "Order": no engine'


def test_a_definition_error_without_problems_uses_the_class_message() -> None:
    error = SagaFlowDefinitionError()

    assert error.problems == ("Invalid saga flow definition",)
    assert str(error) == "Invalid saga flow definition"


@pytest.mark.parametrize(
    ("error_class", "message"),
    [
        (SagaFlowDefinitionError, "Invalid saga flow definition"),
        (SagaCompensationFailedError, "Saga compensation failed"),
        (SagaStepTimeoutError, "Saga step timed out"),
        (SagaParallelMergeConflictError, "Parallel steps modified the same field"),
        (SagaEngineNotConnectedError, "Saga engine is not connected"),
    ],
)
def test_documented_errors_keep_their_message_and_construct_without_arguments(
    error_class: type[AbstractSpakkySagaError], message: str
) -> None:
    error = error_class()

    assert error_class.message == message
    assert error.message == message
    assert str(error) == message


def test_a_failure_whose_repr_raises_does_not_break_the_compensation_error() -> None:
    class Hostile(Exception):
        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")

    result = SagaResult(SagaStatus.FAILED, OrderData(order_id=1), "b", saga_name="Order")

    error = SagaCompensationFailedError(result, {"charge": Hostile()})

    assert '"charge" (<' in str(error)
    assert "repr raised RuntimeError" in str(error)


ALL_ERRORS = [
    getattr(spakky_saga, name)
    for name in spakky_saga.__all__
    if isinstance(getattr(spakky_saga, name), type)
    and issubclass(getattr(spakky_saga, name), AbstractSpakkySagaError)
]


@pytest.mark.parametrize("error_class", ALL_ERRORS, ids=lambda c: c.__name__)
def test_every_saga_error_constructs_without_arguments_and_says_its_message(
    error_class: type[AbstractSpakkySagaError],
) -> None:
    error = error_class()

    assert str(error) == error_class.message
    assert error_class.message


def test_store_and_recovery_errors_name_what_and_how_to_fix() -> None:
    from spakky_saga import (  # noqa: PLC0415 - the durable errors, grouped here
        SagaAlreadyStartedError,
        SagaDataCodecError,
        SagaFlowChangedError,
        SagaInterruptedError,
        SagaLeaseLostError,
    )

    assert "start a new run with fresh data" in str(SagaAlreadyStartedError("s1"))
    assert str(SagaLeaseLostError("s1", "node-a")).startswith(
        "saga s1 is no longer owned by engine node-a"
    )
    codec = SagaDataCodecError(OrderData, "paid", "it is a set")
    assert (codec.data_class, codec.field) == (OrderData, "paid")
    assert str(codec) == 'OrderData field "paid" cannot be stored in the saga log: it is a set'
    changed = SagaFlowChangedError("order", ("item 2 was x, is now y",))
    assert changed.changes == ("item 2 was x, is now y",)
    assert "compensate_by_name=True" in str(changed)
    assert 'step "pay" had failed (declined)' in str(
        SagaInterruptedError("order", "pay", "declined")
    )
    assert "was compensated on recovery" in str(SagaInterruptedError("order"))


def test_timeout_and_result_errors_keep_their_context() -> None:
    from spakky_saga import SagaMergeResultError, SagaStepCancelledError  # noqa: PLC0415

    assert SagaStepCancelledError("pay").step_name == "pay"
    merge = SagaMergeResultError("a & b", "combine", 3, OrderData)
    assert (merge.step_name, merge.merge_name, merge.value) == ("a & b", "combine", 3)
    assert "return the merged OrderData" in str(merge)
    conflict = SagaParallelMergeConflictError("stock", ("a", "b"), (1, 2))
    assert str(conflict).startswith('parallel members changed field "stock"')
    assert str(SagaEngineNotConnectedError(None, "no store")) == "no store"
