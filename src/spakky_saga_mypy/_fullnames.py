"""Full names of the `spakky_saga` objects the plugin recognises.

The plugin never imports `spakky_saga` (type checking must not execute library code), so it
refers to the library by these names; `tests/test_mypy_fullnames.py` asserts each one still
resolves, so a rename in the library cannot silently switch a hook off.
"""

from typing import Final

ABSTRACT_SAGA_DATA: Final = "spakky_saga.data.AbstractSagaData"
"""Base of every saga's data; a step's data parameter must derive from it."""

ACTION: Final = "spakky_saga.flow._Action"
"""Private base of steps and transactions: defines `__and__` and `__or__`."""

SAGA_STEP: Final = "spakky_saga.flow.SagaStep"
"""A single action; defines `__rshift__` (bind a compensation)."""

TRANSACTION: Final = "spakky_saga.flow.Transaction"
"""An action with its compensation; its `__rshift__` always fails."""

PARALLEL: Final = "spakky_saga.flow.Parallel"
"""A group run concurrently; defines `__and__`."""

SAGA_FLOW: Final = "spakky_saga.flow.SagaFlow"
"""A whole saga's items, in order."""

SAGA_STEP_METHOD: Final = "spakky_saga.descriptor.SagaStepMethod"
"""The descriptor `@saga_step` leaves on a saga class."""

SAGA_STEP_DECORATOR: Final = "spakky_saga.descriptor.saga_step"
"""The `@saga_step` decorator."""

STEP_BUILDER: Final = "spakky_saga.builders.step"
PARALLEL_BUILDER: Final = "spakky_saga.builders.parallel"
SAGA_FLOW_BUILDER: Final = "spakky_saga.builders.saga_flow"
PIVOT_BUILDER: Final = "spakky_saga.builders.pivot"
"""`pivot(item)`: marks the flow's point of no return (checked by the `pivot` hooks)."""
READ_ONLY: Final = "read_only"
"""`step(f, read_only=True)`: a step declared to change nothing (no compensation needed
before the pivot)."""
FAILS_AT_ONCE: Final = "fails_at_once"
"""The class attribute saying a strategy fails at once without retrying (`Compensate`): such
a step after the pivot would end the saga for good."""
TRUE: Final = "builtins.True"

WAIT_FOR: Final = "spakky_saga.waits.wait_for"
"""`wait_for(Signal, merge=...)`: its merge function is checked against the signal type."""
SAGA_WAIT: Final = "spakky_saga.waits.SagaWait"
"""What `wait_for`, `sleep` and `sleep_until` build: a step that waits instead of acting."""
SLEEP: Final = "spakky_saga.waits.sleep"
SLEEP_UNTIL: Final = "spakky_saga.waits.sleep_until"
WAIT_BUILDERS: Final = (WAIT_FOR, SLEEP, SLEEP_UNTIL)

ABSTRACT_SAGA: Final = "spakky_saga.saga.AbstractSaga"
"""Base of saga classes, generic in their data type; `flow()` builds the saga."""

TIMEOUT_METHOD: Final = "timeout"
"""`SagaFlow.timeout(timedelta)`: the saga-wide timeout, which must be positive."""

TIMEDELTA: Final = "datetime.timedelta"
"""Timeouts written as `timedelta(...)` literals are checked (zero or negative)."""

FLOW_METHOD_NAME: Final = "flow"
"""The `AbstractSaga` method whose items must all work on the saga's data type."""

ERROR_STRATEGY: Final = "spakky_saga.strategy.ErrorStrategy"
RETRY: Final = "spakky_saga.strategy.Retry"
COMPENSATE: Final = "spakky_saga.strategy.Compensate"
SKIP: Final = "spakky_saga.strategy.Skip"
EXPONENTIAL_BACKOFF: Final = "spakky_saga.strategy.ExponentialBackoff"

DECIDE: Final = "decide"
"""The method a strategy implements (`ErrorStrategy.decide` only raises): a subclass that
inherits it from `ErrorStrategy` is rejected when the flow is built."""

SKIPS: Final = "skips"
"""The property saying whether a strategy skips when it gives up: True on `Skip`, `then`'s on
`Retry`, False on `ErrorStrategy`. A compensation's strategy must not skip."""

THEN: Final = "then"
"""`Retry(then=...)`: what a retry does after its last attempt."""
THEN_POSITION: Final = 2
"""`then`'s index among `Retry`'s positional parameters: `Retry(3, backoff, Skip())`."""

RSHIFT: Final = "__rshift__"
AND: Final = "__and__"
OR: Final = "__or__"
ROR: Final = "__ror__"
"""Not defined by strategies: mypy names `type.__ror__` after the class it is called on, and
tries it on `step | Skip` when `__or__` fails."""
OPERATOR_METHODS: Final = (f".{RSHIFT}", f".{AND}", f".{OR}", f".{ROR}")
"""Suffixes of the hooked operator methods' full names."""
