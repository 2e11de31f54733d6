"""Sound flows pyright rejects (its solver, not our annotations; mypy with the plugin accepts
them): each marked line is followed by the spelling pyright accepts, as docs/mypy-plugin.md
advises. The case fails when pyright starts accepting one, so that the docs are updated.
"""

from typing import reveal_type

from sagafixtures import OrderData, audit, release, reserve

from spakky_saga import SagaFlow, Transaction, parallel, saga_flow, step

reserve_step = step(reserve)

# An action over a base class, then a compensation over the subclass: `>>` is typed over the
# action's own data type.
_ = step(audit) >> release  # E: reportOperatorIssue
reveal_type(step(audit, compensate=release))  # R: Transaction[OrderData]
undo: Transaction[OrderData] = step(audit, compensate=release)

# A step over a base class first, an item over the subclass after it, and no expected type:
# pyright fixes `D` at the first item.
_ = saga_flow(step(audit), reserve_step)  # E: reportCallIssue, reportArgumentType
_ = parallel(step(audit), reserve)  # E: reportCallIssue, reportArgumentType
reveal_type(saga_flow(reserve_step, step(audit)))  # R: SagaFlow[OrderData]
shared_first: SagaFlow[OrderData] = saga_flow(step(audit), reserve_step)
