"""Flow operators: `>>` binds a compensation, `&` makes a flat parallel group, `|` attaches
an error strategy and gives back the same kind of item; anything else is refused."""

from __future__ import annotations

import warnings
from datetime import timedelta
from typing import Any

import pytest

from spakky_saga import (
    Compensate,
    ErrorStrategy,
    ExponentialBackoff,
    Parallel,
    Retry,
    SagaFlowDefinitionError,
    SagaStep,
    Skip,
    Transaction,
    parallel,
    step,
)
from tests.support import (
    OrderData,
    charge,
    notify,
    refund,
    regular,
    release,
    reserve,
    wrong,
)


async def audit(data: OrderData) -> OrderData | None:
    return None


def names(group: Parallel[OrderData]) -> list[str]:
    return [member.name for member in group.items]


def test_rshift_binds_a_compensation_into_a_transaction() -> None:
    transaction = step(reserve) >> release

    assert isinstance(transaction, Transaction)
    assert transaction.action is reserve
    assert transaction.compensate is release
    assert (transaction.name, transaction.compensation_name) == ("reserve", "release")


def test_rshift_accepts_a_step_as_the_compensation() -> None:
    transaction = step(reserve) >> step(release, name="undo_reserve")

    assert transaction.compensate is release
    assert transaction.compensation_name == "undo_reserve"


def test_rshift_keeps_the_actions_strategy_and_timeout() -> None:
    retry = Retry(3, ExponentialBackoff(0.1))

    transaction = (step(reserve) | retry) >> release

    assert transaction.on_error is retry


def test_a_compensation_carries_its_own_policy_into_the_transaction() -> None:
    transaction = step(reserve) >> (step(release, timeout=timedelta(seconds=2)) | Retry(2))

    assert transaction.compensation_strategy == Retry(2)
    assert transaction.compensation_timeout == timedelta(seconds=2)
    assert repr(transaction) == "Transaction(reserve >> (step(release, timeout=2s) | Retry(2)))"


def test_a_compensation_cannot_skip_its_failure() -> None:
    with pytest.raises(SagaFlowDefinitionError) as raised:
        _ = step(reserve) >> (step(release) | Retry(2, then=Skip()))  # type: ignore[saga-compensation-skip] # the plugin reports it too; this tests the runtime

    assert str(raised.value) == (
        'compensation "release" of transaction "reserve": a compensation cannot skip its '
        "failure (Retry(2, then=Skip())); a compensation that gives up has failed and is "
        "reported. Use Retry(n) (then Compensate(), the default), or handle the error inside "
        "the compensation"
    )


def test_transaction_or_group_as_compensation_is_a_definition_error_naming_both() -> None:
    with pytest.raises(SagaFlowDefinitionError) as raised:
        _ = step(reserve) >> wrong(step(charge) >> refund)
    assert str(raised.value) == (
        'step "reserve" >> Transaction "charge": a compensation must be a single step or '
        "async function, not a Transaction"
    )

    with pytest.raises(SagaFlowDefinitionError, match='>> Parallel "charge & notify"'):
        _ = step(reserve) >> wrong(step(charge) & step(notify))


def test_rshift_on_a_transaction_is_a_definition_error() -> None:
    transaction = step(reserve) >> release

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the error says it all: no DeprecationWarning first
        with pytest.raises(SagaFlowDefinitionError) as raised:
            wrong(transaction) >> refund

    assert str(raised.value).startswith(
        'transaction "reserve" already has compensation "release"; cannot bind "refund"'
    )


def test_rshift_with_a_regular_function_names_the_compensation() -> None:
    with pytest.raises(SagaFlowDefinitionError, match='compensation "regular" is a regular'):
        _ = step(reserve) >> wrong(regular)


def test_rshift_with_text_is_a_definition_error_naming_the_step_and_the_text() -> None:
    foreign: Any = "release"

    with pytest.raises(SagaFlowDefinitionError) as raised:
        _ = step(reserve) >> foreign

    assert str(raised.value) == (
        "step \"reserve\" >> 'release': a compensation must be an async function taking the "
        "saga data, or a step; got a str"
    )


def test_rshift_with_a_number_or_a_strategy_says_what_it_got() -> None:
    with pytest.raises(SagaFlowDefinitionError, match=r'step "reserve" >> 42: .* got an int$'):
        _ = step(reserve) >> wrong(42)
    with pytest.raises(SagaFlowDefinitionError, match=r"got the strategy Skip\(\)"):
        _ = step(reserve) >> wrong(Skip())


def test_and_makes_a_parallel_group_of_both() -> None:
    group = step(reserve) & step(charge)

    assert isinstance(group, Parallel)
    assert names(group) == ["reserve", "charge"]
    assert group.name == "reserve & charge"


def test_and_chains_flatten_into_one_group() -> None:
    group = step(reserve) & step(charge) & step(notify)

    assert names(group) == ["reserve", "charge", "notify"]


def test_and_flattens_nested_groups_on_either_side() -> None:
    left = step(reserve) & step(charge)
    right = step(notify) & step(audit)

    assert names(left & right) == ["reserve", "charge", "notify", "audit"]
    assert names(step(audit) & left) == ["audit", "reserve", "charge"]


def test_and_keeps_transactions_and_promotes_async_functions() -> None:
    group = (step(reserve) >> release) & charge

    first, second = group.items
    assert isinstance(first, Transaction)
    assert first.compensate is release
    assert isinstance(second, SagaStep)
    assert second.action is charge


def test_and_with_a_regular_function_names_the_member() -> None:
    with pytest.raises(SagaFlowDefinitionError, match='member 2: step "regular": action'):
        _ = step(reserve) & wrong(regular)


def test_and_with_a_foreign_operand_is_a_definition_error_naming_both_sides() -> None:
    foreign: Any = "charge"

    with pytest.raises(SagaFlowDefinitionError) as raised:
        _ = step(reserve) & foreign
    assert str(raised.value) == (
        "step \"reserve\" & 'charge': a parallel member must be a step, transaction, parallel "
        "group or async function; got a str"
    )

    with pytest.raises(SagaFlowDefinitionError) as raised:
        _ = (step(reserve) & step(charge)) & wrong(5)
    assert str(raised.value).startswith('parallel group "reserve & charge" & 5: ')


def test_a_group_with_its_own_merge_does_not_flatten() -> None:
    own_merge = parallel(reserve, charge, merge=lambda data, results: data)

    with pytest.raises(SagaFlowDefinitionError, match="cannot be flattened"):
        _ = own_merge & step(notify)


def test_or_attaches_a_strategy_and_gives_back_the_same_kind() -> None:
    plain = step(reserve)
    transaction = step(charge) >> refund

    skipped = plain | Skip()
    retried = transaction | Retry(2)

    assert isinstance(skipped, SagaStep)
    assert not isinstance(skipped, Transaction)
    assert skipped.on_error == Skip()
    assert isinstance(retried, Transaction)
    assert retried.on_error == Retry(2)
    assert retried.compensate is refund


def test_operators_leave_their_operands_unchanged() -> None:
    plain = step(reserve)

    _ = plain | Skip()
    _ = plain >> release
    _ = plain & step(charge)

    assert plain.on_error == Compensate()
    assert isinstance(plain, SagaStep)
    assert not isinstance(plain, Transaction)


def test_or_with_a_foreign_operand_is_a_definition_error_naming_the_step() -> None:
    foreign: Any = 3

    with pytest.raises(SagaFlowDefinitionError) as raised:
        _ = step(reserve) | foreign

    assert str(raised.value) == (
        'step "reserve": on_error must be Compensate(), Skip(), Retry(...) or an '
        "ErrorStrategy subclass, got 3"
    )


def test_a_strategy_on_a_parallel_group_is_a_definition_error_pointing_at_the_members() -> None:
    group: Any = step(reserve) & step(charge)

    with pytest.raises(SagaFlowDefinitionError) as raised:
        _ = group | Retry()

    assert str(raised.value) == (
        'parallel group "reserve & charge" | Retry(3): a parallel group takes no error '
        "strategy; attach strategies to its members instead, e.g. `(a | Retry()) & b`"
    )


def test_a_strategy_on_a_member_of_a_group_is_kept() -> None:
    group = (step(reserve) | Retry(2)) & step(charge)

    assert [member.on_error for member in group.items] == [Retry(2), Compensate()]


def test_or_with_the_abstract_strategy_base_is_a_definition_error() -> None:
    with pytest.raises(SagaFlowDefinitionError, match=r"got ErrorStrategy\(\)"):
        _ = step(reserve) | wrong(ErrorStrategy())


async def test_a_step_can_be_called_directly_outside_a_saga() -> None:
    async def issue(data: OrderData) -> OrderData:
        return OrderData(order_id=data.order_id, ticket_id=5)

    out = await step(issue)(OrderData(order_id=3))

    assert out is not None
    assert out.ticket_id == 5


def test_or_with_a_strategy_class_instead_of_an_instance_says_so() -> None:
    with pytest.raises(SagaFlowDefinitionError) as raised:
        _ = step(reserve) | wrong(Skip)

    assert str(raised.value) == (
        'step "reserve": on_error must be Compensate(), Skip(), Retry(...) or an '
        "ErrorStrategy subclass, got "
        "<class 'spakky_saga.strategy.Skip'> (the class itself; did you mean Skip(...)?)"
    )
