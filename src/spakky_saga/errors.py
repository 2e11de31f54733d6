"""Every error a saga user can cause or observe, under one root.

Errors carry structured context (step name, field, result) as attributes, so callers can act
on them without parsing messages.
"""

from __future__ import annotations

import inspect
from abc import ABC
from typing import TYPE_CHECKING, Any

from spakky.core.common.error import AbstractSpakkyFrameworkError

if TYPE_CHECKING:
    from datetime import timedelta

    from spakky_saga.result import SagaResult


class AbstractSpakkySagaError(AbstractSpakkyFrameworkError, ABC):
    """Root of all saga errors; itself a spakky framework error."""

    message = "Saga error"

    def __init__(self, message: str | None = None) -> None:
        text = message if message is not None else type(self).message
        super().__init__(text)
        self.message_text = text

    def __str__(self) -> str:
        return self.message_text


class SagaFlowDefinitionError(AbstractSpakkySagaError, ValueError):
    """A flow, step or strategy is malformed; raised when it is built, never during a run.

    `problems` lists every problem found, each naming the item, what was given and what was
    expected, so one error shows all of them at once.
    """

    message = "Invalid saga flow definition"

    def __init__(self, *problems: str) -> None:
        self.problems: tuple[str, ...] = problems or (type(self).message,)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = f"{len(self.problems)} problems in saga flow definition:\n" + "\n".join(
                f"  - {problem}" for problem in self.problems
            )
        super().__init__(text)


class SagaStepTimeoutError(AbstractSpakkySagaError, TimeoutError):
    """A step ran longer than its `timeout=`; routed through the step's `on_error` strategy."""

    message = "Saga step timed out"

    def __init__(self, step_name: str, timeout: timedelta) -> None:
        self.step_name = step_name
        self.timeout = timeout
        super().__init__(f'step "{step_name}" did not finish within {timeout.total_seconds():g}s')


class SagaStepCancelledError(AbstractSpakkySagaError):
    """A step (or compensation) raised `CancelledError` while the saga's task was not being
    cancelled: it awaited something that was cancelled elsewhere.

    Counted as that step's failure and routed through its `on_error`, so the saga returns a
    result instead of passing a stray cancellation to a caller nobody cancelled. The original
    `CancelledError` is the `__cause__`.
    """

    message = "Saga step was cancelled from inside"

    def __init__(self, step_name: str) -> None:
        self.step_name = step_name
        super().__init__(
            f'step "{step_name}" raised CancelledError, but the saga was not cancelled (the '
            "step awaited something that was cancelled elsewhere); counted as the step's failure"
        )


class SagaTimeoutError(AbstractSpakkySagaError, TimeoutError):
    """The whole saga ran longer than `SagaFlow.timeout(...)`; reported in `SagaResult.error`."""

    message = "Saga timed out"

    def __init__(self, saga_name: str, timeout: timedelta, running_step: str | None) -> None:
        self.saga_name = saga_name
        self.timeout = timeout
        self.running_step = running_step
        where = f' while step "{running_step}" was running' if running_step else ""
        super().__init__(
            f'saga "{saga_name}" exceeded its timeout of {timeout.total_seconds():g}s{where}'
        )


class SagaParallelMergeConflictError(AbstractSpakkySagaError):
    """Several members of a parallel group changed one field to different values."""

    message = "Parallel steps modified the same field with different values"

    def __init__(self, field: str, members: tuple[str, ...], values: tuple[Any, ...]) -> None:
        self.field = field
        self.members = members
        self.values = values
        writes = ", ".join(
            f'"{member}" wrote {value!r}' for member, value in zip(members, values, strict=True)
        )
        super().__init__(
            f'parallel members changed field "{field}" to different values ({writes}); '
            "make one member own the field, or pass parallel(..., merge=fn) to resolve it"
        )


class SagaCompensationFailedError(AbstractSpakkySagaError):
    """One or more compensations failed during rollback.

    Raised after every remaining compensation has been attempted and the flow's
    compensation-failure handler has run. `result` is the full `SagaResult`: its history shows
    which compensations failed and which succeeded; `failures` maps step name to its error
    (steps sharing a name are told apart as `name #2`, `name #3`, ...).
    """

    message = "Compensation failed during rollback"

    def __init__(self, result: SagaResult[Any], failures: dict[str, BaseException]) -> None:
        self.result = result
        self.failures = failures
        names = ", ".join(f'"{name}" ({error!r})' for name, error in failures.items())
        super().__init__(
            f'saga "{result.saga_name}" could not be rolled back: compensation of {names} '
            "failed; the data may be inconsistent and needs manual repair"
        )


class SagaEngineNotConnectedError(AbstractSpakkySagaError, RuntimeError):
    """`execute()` was called on a saga whose engine is not running (closed or never set up)."""

    message = "Saga engine is not connected"

    def __init__(self, saga_name: str, reason: str) -> None:
        self.saga_name = saga_name
        super().__init__(f'cannot execute saga "{saga_name}": {reason}')


class SagaStepResultError(AbstractSpakkySagaError, TypeError):
    """A step returned something other than the saga's data (or a subclass of it) or None.

    Counted as that step's failure, so the saga compensates instead of carrying on with data
    of the wrong type.
    """

    message = "Saga step returned an invalid value"

    def __init__(self, step_name: str, value: object, expected: type) -> None:
        self.step_name = step_name
        self.value = value
        super().__init__(
            f'step "{step_name}" returned {value!r} ({type(value).__name__}), but the saga '
            f"data is {expected.__name__}; return a {expected.__name__} (or a subclass) to "
            "replace the data, or None to keep it"
        )


class SagaMergeResultError(SagaStepResultError):
    """A parallel group's `merge=` function returned something other than the saga's data.

    Counted as the group's failure: `step_name` is the group's name (`a & b`), so the saga
    compensates the committed members instead of carrying on with data of the wrong type.
    """

    message = "Parallel merge function returned an invalid value"

    def __init__(self, group_name: str, merge_name: str, value: object, expected: type) -> None:
        self.step_name = group_name
        self.merge_name = merge_name
        self.value = value
        fix = (
            "declare it with `def`, not `async def`: the engine calls it without awaiting"
            if inspect.isawaitable(value)
            else f"return the merged {expected.__name__} (or a subclass)"
        )
        AbstractSpakkySagaError.__init__(
            self,
            f'merge function "{merge_name}" of parallel group "{group_name}" returned '
            f"{value!r} ({type(value).__name__}), but the saga data is {expected.__name__}; "
            f"{fix}",
        )
