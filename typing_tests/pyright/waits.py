"""Waits (`wait_for`, `sleep`) under pyright, from the annotations alone: `wait_for` is
generic in the data type (from `merge`) and the signal type (from its first argument), so a
`merge` that takes another signal type or returns another data type is reported; a wait
stands in a flow over its data type (and `sleep` in any flow). A wait in a parallel group is
what only the mypy plugin sees (saga-wait-placement)."""

import dataclasses
from dataclasses import dataclass
from datetime import timedelta
from typing import reveal_type

from sagafixtures import OrderData, reserve

from spakky_saga import Skip, parallel, saga_flow, sleep, step, wait_for


@dataclass(frozen=True)
class Confirmed:
    reference: str


@dataclass(frozen=True)
class Refused:
    reason: str


def confirm(data: OrderData, signal: Confirmed) -> OrderData:
    return dataclasses.replace(data, order_id=len(signal.reference))


def reference_length(data: OrderData, signal: Confirmed) -> int:
    return len(signal.reference)


waited = wait_for(Confirmed, merge=confirm, timeout=timedelta(hours=1), on_timeout=Skip())
reveal_type(waited)  # R: SagaWait[OrderData]
reveal_type(sleep(timedelta(minutes=5)))  # R: SagaWait[AbstractSagaData]
flow = saga_flow(reserve, waited, sleep(timedelta(seconds=1)))
reveal_type(flow)  # R: SagaFlow[OrderData]

wrong_signal = wait_for(Refused, merge=confirm)  # E: reportArgumentType
wrong_result = wait_for(Confirmed, merge=reference_length)  # E: reportArgumentType
in_a_group = parallel(step(reserve), sleep(timedelta(seconds=1)))  # unseen: saga-wait-placement
