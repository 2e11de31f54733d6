"""Saga-flow mistakes: what pyright reports from the annotations alone (no mypy plugin).

Each line with a mistake carries a mark (see tests/test_pyright_typing.py): E for the
errors pyright reports there, by rule, W for warnings, and "unseen" with the reason for a
mistake pyright cannot see (the mypy plugin reports it); that case fails if pyright starts
reporting it, so that the table in docs/mypy-plugin.md is kept true.
"""

from dataclasses import dataclass
from datetime import timedelta

from sagafixtures import OrderData, PaymentData, charge, notify, refund, release, reserve

from spakky_saga import (
    AbstractSaga,
    ErrorStrategy,
    ExponentialBackoff,
    Retry,
    SagaFlow,
    Skip,
    parallel,
    saga_flow,
    saga_step,
    step,
)


async def start_payment(data: OrderData) -> PaymentData:
    return PaymentData()


def sync_reserve(data: OrderData) -> None:
    return None


async def two_arguments(data: OrderData, extra: int) -> None:
    return None


async def not_saga_data(data: int) -> None:
    return None


def merge_payments(data: PaymentData, results: tuple[PaymentData | None, ...]) -> PaymentData:
    return data


@dataclass(frozen=True)
class NoDecide(ErrorStrategy):
    attempts: int = 3


reserve_step = step(reserve)
reserve_tx = reserve_step >> release

# Saga data that does not fit together.
_ = reserve_step >> refund  # E: reportOperatorIssue
_ = step(reserve, compensate=refund)  # E: reportArgumentType
_ = reserve_step & charge  # E: reportOperatorIssue
_ = parallel(reserve, charge)  # E: reportCallIssue, reportArgumentType
_ = saga_flow(reserve, charge)  # E: reportCallIssue, reportArgumentType
_ = parallel(reserve, notify, merge=merge_payments)  # E: reportCallIssue, reportArgumentType

# Steps and compensations of the wrong shape.
_ = step(start_payment)  # E: reportArgumentType
_ = step(sync_reserve)  # E: reportArgumentType
_ = step(two_arguments)  # E: reportArgumentType
_ = step(not_saga_data)  # E: reportArgumentType
_ = reserve_step >> reserve  # E: reportOperatorIssue
_ = step(reserve, compensate=reserve)  # E: reportArgumentType
_ = reserve_step >> step(reserve)  # unseen: a SagaStep does not say its action returns None

# Compensations bound twice, or that are not a single step.
_ = reserve_tx >> notify  # E: reportOperatorIssue
_ = reserve_step >> release >> notify  # E: reportOperatorIssue
_ = reserve_step >> reserve_tx  # E: reportOperatorIssue
_ = reserve_step >> (step(release) & notify)  # E: reportOperatorIssue
_ = step(reserve_tx, compensate=notify)  # unseen: a Transaction is callable like an action

# Groups and flows of the wrong size or with things that are not items.
_ = parallel(reserve)  # E: reportCallIssue
_ = saga_flow()  # E: reportCallIssue
_ = saga_flow(reserve, Retry())  # E: reportCallIssue, reportArgumentType

# Strategies.
_ = Retry(0)  # W: reportDeprecated
_ = Retry(-1)  # unseen: only the literal 0 has an overload
_ = Retry(3, then=Retry(2))  # E: reportCallIssue, reportArgumentType
_ = Retry(retry_on="TimeoutError")  # E: reportArgumentType
_ = reserve_step | Skip  # unseen: `x | SomeClass` is a union type to pyright
_ = reserve_step | 3  # E: reportOperatorIssue
_ = (reserve_step & notify) | Retry()  # E: reportOperatorIssue
_ = ExponentialBackoff(-1.0)  # unseen: a negative literal is still a float
_ = reserve_step | NoDecide()  # unseen: decide() is not abstract, the base's raises
_ = reserve_step >> (step(release) | Skip())  # unseen: a step's type does not carry its policy

# Timeouts.
_ = step(reserve, timeout=timedelta(seconds=0))  # unseen: a timedelta's value is not in its type

# Lambdas: pyright types the data argument as the unsolved D, so a call in the body fails.
_ = step(lambda d: notify(d))  # noqa: PLW0108  # E: reportArgumentType



class PaymentSaga(AbstractSaga[OrderData]):
    @saga_step
    async def charge(self, data: PaymentData) -> None:
        return None

    def flow(self) -> SagaFlow[OrderData]:
        return saga_flow(self.charge)  # E: reportReturnType


class WrongFlowTypeSaga(AbstractSaga[OrderData]):
    def flow(self) -> SagaFlow[PaymentData]:  # E: reportIncompatibleMethodOverride
        return saga_flow(charge)
