"""Demo: the order saga's compensations checked at every failure point.

`explore_failures` runs the saga from examples/order_saga.py once per failure point: each
step failing, each compensation failing, each step hanging until a timeout, and the caller
cancelling at each await point; after each run it checks that every committed step was
compensated exactly once, in reverse order, with the latest data, and that once the order's
confirmation (the saga's pivot) committed nothing was compensated. Run with `make demo`, or
`.venv/bin/python examples/explore_order_saga.py`. Tests do the same with the pytest fixture
`explore_failures` (docs/testing.md).
"""

from __future__ import annotations

import asyncio

# A script beside the demo, run as a file (examples/ is not a package): the demo's module is
# importable by its file name.
from order_saga import (  # pyright: ignore[reportImplicitRelativeImport]
    CreateOrderSaga,
    Inventory,
    Kitchen,
    OrderSagaData,
    Payments,
)

from spakky_saga.testing import explore_failures


async def main() -> None:
    report = await explore_failures(
        lambda: CreateOrderSaga(Kitchen(), Inventory(stock=10), Payments()),
        OrderSagaData(order_id=1, customer_id=42, quantity=3),
        timeouts=True,
        cancellation=True,
    )
    print(report)
    report.assert_ok()


if __name__ == "__main__":
    asyncio.run(main())
