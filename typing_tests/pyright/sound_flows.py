"""Sound flows: pyright must report nothing, and type them as mypy with our plugin does.

A trailing R mark expects `reveal_type` on its line to show that type (see
tests/test_pyright_typing.py); any error or warning fails the case.
"""

from datetime import timedelta
from typing import reveal_type

from sagafixtures import OrderData, SpecialOrder, audit, check_vip, notify, release, reserve

from spakky_saga import (
    AbstractSaga,
    AbstractSagaData,
    ExponentialBackoff,
    Retry,
    SagaFlow,
    SagaStep,
    Skip,
    parallel,
    saga_flow,
    saga_step,
    step,
)

reserve_step = step(reserve)
reveal_type(reserve_step)  # R: SagaStep[OrderData]
reveal_type(step(reserve, compensate=release))  # R: Transaction[OrderData]
reveal_type(reserve_step >> release)  # R: Transaction[OrderData]
reveal_type(reserve_step & notify)  # R: Parallel[OrderData]
reveal_type(reserve_step | Retry(3))  # R: SagaStep[OrderData]
reveal_type((reserve_step >> release) | Retry(3))  # R: Transaction[OrderData]
reveal_type(saga_flow(reserve_step >> release, notify))  # R: SagaFlow[OrderData]
reveal_type(parallel(reserve, notify))  # R: Parallel[OrderData]

# A compensation over a base class of the saga data, bound with `>>` or compensate=.
reveal_type(reserve_step >> audit)  # R: Transaction[OrderData]
reveal_type(reserve_step >> step(audit))  # R: Transaction[OrderData]
reveal_type(reserve_step >> (step(audit) | Retry(5)))  # R: Transaction[OrderData]
reveal_type(step(reserve, compensate=audit))  # R: Transaction[OrderData]
reveal_type(step(reserve, compensate=step(audit) | Retry(5)))  # R: Transaction[OrderData]
# An action over a base class beside steps over the subclass: typed over the subclass.
reveal_type(step(audit, compensate=release))  # R: Transaction[OrderData]
reveal_type(reserve_step & audit)  # R: Parallel[OrderData]
reveal_type(reserve_step & step(audit))  # R: Parallel[OrderData]
reveal_type(step(audit) & reserve_step)  # R: Parallel[OrderData]
reveal_type(saga_flow(reserve, audit))  # R: SagaFlow[OrderData]
reveal_type(saga_flow(reserve_step, step(audit)))  # R: SagaFlow[OrderData]
reveal_type(parallel(reserve, step(audit)))  # R: Parallel[OrderData]
shared_first: SagaFlow[OrderData] = saga_flow(step(audit), reserve_step)
# Subclass data flowing into steps over its base class.
reveal_type(saga_flow(check_vip, reserve_step))  # R: SagaFlow[SpecialOrder]
vip_flow: SagaFlow[SpecialOrder] = saga_flow(check_vip, reserve_step >> release, audit)
annotated: SagaStep[OrderData] = step(reserve, on_error=Skip(), timeout=timedelta(seconds=2))
policy = Retry(5, ExponentialBackoff(0.5), Skip(), retry_on=(ConnectionError,))
timed = saga_flow(reserve_step | policy).timeout(timedelta(minutes=5))


class OrderSaga(AbstractSaga[OrderData]):
    @saga_step
    async def reserve(self, data: OrderData) -> OrderData:
        return data

    @saga_step
    async def release_any(self, data: AbstractSagaData) -> None:
        return None

    @saga_step
    async def audit(self, data: AbstractSagaData) -> None:
        return None

    def flow(self) -> SagaFlow[OrderData]:
        reveal_type(self.reserve >> self.release_any)  # R: Transaction[OrderData]
        reveal_type(self.reserve & self.audit)  # R: Parallel[OrderData]
        reveal_type(self.audit & self.reserve)  # R: Parallel[OrderData]
        return saga_flow(
            self.reserve >> self.release_any,
            self.audit,
            audit,
            self.reserve & self.audit,
            step(self.audit, compensate=self.release_any),
        )


class AuditOnlySaga(AbstractSaga[OrderData]):
    """A flow of shared steps only: typed by flow()'s declared type."""

    def flow(self) -> SagaFlow[OrderData]:
        return saga_flow(audit, step(audit) | Retry(2))
