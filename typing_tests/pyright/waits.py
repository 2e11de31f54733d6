"""Waits under pyright, from the annotations alone: a wait is typed over the data its merge
takes, a merge for another signal or returning something else is an argument error, and what
only the mypy plugin sees (a wait in a group or as a compensation) is marked unseen."""

from dataclasses import dataclass
from datetime import timedelta
from typing import reveal_type

from sagafixtures import OrderData, release, reserve

from spakky_saga import Skip, parallel, saga_flow, sleep, step, wait_for


@dataclass(frozen=True)
class Paid:
    amount: int


@dataclass(frozen=True)
class Refunded:
    amount: int


def apply(data: OrderData, signal: Paid) -> OrderData:
    return data


def apply_refund(data: OrderData, signal: Refunded) -> OrderData:
    return data


def total(data: OrderData, signal: Paid) -> int:
    return signal.amount


payment = wait_for(Paid, merge=apply, timeout=timedelta(hours=48), on_timeout=Skip())
reveal_type(payment)  # R: SagaWait[OrderData]
pause = sleep(timedelta(minutes=5))
reveal_type(saga_flow(step(reserve) >> release, payment, pause))  # R: SagaFlow[OrderData]

_ = wait_for(Paid, merge=apply_refund)  # E: reportArgumentType
_ = wait_for(Paid, merge=total)  # E: reportArgumentType
_ = parallel(step(reserve), pause)  # unseen: a wait in a group (saga-wait-placement)
