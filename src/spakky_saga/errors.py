"""Every error a saga user can cause or observe, under one root.

Errors carry structured context (step name, field, result) as attributes, so callers can act
on them without parsing messages. Every class keeps the documented `message` class attribute
and constructs with no arguments, as in the documented package; the context arguments are
optional, and `str()` is the detailed text when there is context, the class message otherwise.
"""

from __future__ import annotations

import inspect
from abc import ABC
from typing import TYPE_CHECKING, Any

from spakky.core.common.error import AbstractSpakkyFrameworkError

from spakky_saga._text import safe_repr

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


class SagaFlowOperatorError(SagaFlowDefinitionError, TypeError):
    """An operator (`>>`, `&`, `|`) was given an operand it cannot take.

    A definition error like any other, and also a `TypeError`, as Python's own "unsupported
    operand" errors are: code that catches `TypeError` around flow operators still works.
    """


class SagaPivotError(SagaFlowDefinitionError):
    """A flow with a pivot (`pivot(capture)`, its point of no return) breaks the structure
    that makes the pivot safe; raised when the flow is built. Each subclass is one kind of
    mistake; a flow with mistakes of several kinds raises this base class with all of them.
    """

    message = "Invalid pivot in saga flow"


class SagaUncompensatedBeforePivotError(SagaPivotError):
    """A step before the pivot has no compensation and is not declared read-only: when a
    later step fails before the pivot commits, nothing could undo what it did."""

    message = "A step before the pivot has no compensation and is not read-only"


class SagaNotRetriableAfterPivotError(SagaPivotError):
    """A step after the pivot fails at once (`Compensate()`, the default): after the point of
    no return nothing is compensated, so a later step must retry (`| Retry(n)`) or be
    skippable (`| Skip()`)."""

    message = "A step after the pivot is not retriable"


class SagaSecondPivotError(SagaPivotError):
    """A flow has more than one pivot: a saga has one point of no return."""

    message = "A saga flow has more than one pivot"


class SagaPivotMemberError(SagaPivotError):
    """A member of a parallel group is marked as the pivot: a group can be the pivot only as
    a whole (`pivot(a & b)`)."""

    message = "A parallel group member is marked as the pivot"


class SagaStepTimeoutError(AbstractSpakkySagaError, TimeoutError):
    """A step ran longer than its `timeout=`; routed through the step's `on_error` strategy."""

    message = "Saga step timed out"

    def __init__(self, step_name: str | None = None, timeout: timedelta | None = None) -> None:
        self.step_name = step_name
        self.timeout = timeout
        if step_name is None or timeout is None:
            super().__init__()
        else:
            super().__init__(
                f'step "{step_name}" did not finish within {timeout.total_seconds():g}s'
            )


class SagaStepCancelledError(AbstractSpakkySagaError):
    """A step (or compensation) raised `CancelledError` while the saga's task was not being
    cancelled: it awaited something that was cancelled elsewhere.

    Counted as that step's failure and routed through its `on_error`, so the saga returns a
    result instead of passing a stray cancellation to a caller nobody cancelled. The original
    `CancelledError` is the `__cause__`.
    """

    message = "Saga step was cancelled from inside"

    def __init__(self, step_name: str | None = None) -> None:
        self.step_name = step_name
        if step_name is None:
            super().__init__()
        else:
            super().__init__(
                f'step "{step_name}" raised CancelledError, but the saga was not cancelled (the '
                "step awaited something that was cancelled elsewhere); counted as the step's "
                "failure"
            )


class SagaTimeoutError(AbstractSpakkySagaError, TimeoutError):
    """The whole saga ran longer than `SagaFlow.timeout(...)`; reported in `SagaResult.error`."""

    message = "Saga timed out"

    def __init__(
        self,
        saga_name: str | None = None,
        timeout: timedelta | None = None,
        running_step: str | None = None,
    ) -> None:
        self.saga_name = saga_name
        self.timeout = timeout
        self.running_step = running_step
        if saga_name is None or timeout is None:
            super().__init__()
            return
        where = f' while step "{running_step}" was running' if running_step else ""
        super().__init__(
            f'saga "{saga_name}" exceeded its timeout of {timeout.total_seconds():g}s{where}'
        )


class SagaWaitDefinitionError(SagaFlowDefinitionError):
    """A wait (`wait_for`, `sleep`, `sleep_until`) is malformed or stands where a wait cannot:
    a signal type that is not a class, a `merge` that is not a plain function of two
    arguments, a wait bound to a compensation, inside a parallel group, or used as one."""

    message = "Invalid wait in saga flow"


class SagaWaitTimeoutError(AbstractSpakkySagaError, TimeoutError):
    """A `wait_for(...)` saw no signal before its timeout; routed through its `on_timeout`
    strategy (Compensate() by default, Skip() goes on without the signal)."""

    message = "Saga wait timed out"

    def __init__(
        self, wait_name: str | None = None, signal_type: str | None = None, timeout: float = 0.0
    ) -> None:
        self.wait_name = wait_name
        self.signal_type = signal_type
        self.timeout = timeout
        if wait_name is None:
            super().__init__()
            return
        super().__init__(f'wait "{wait_name}" received no {signal_type} signal within {timeout:g}s')


class SagaSignalError(AbstractSpakkySagaError):
    """A signal (`engine.signal(saga_id, payload)`) was refused; nothing was stored. Each
    subclass is one reason."""

    message = "Signal refused"


class SagaSignalTargetError(SagaSignalError, LookupError):
    """The signal's saga is unknown, or finished (or compensating: it waits for nothing any
    more). `status` is the saga's status, None when it is unknown."""

    message = "No waiting saga for this signal"

    def __init__(self, saga_id: object = None, status: str | None = None, where: str = "") -> None:
        self.saga_id = saga_id
        self.status = status
        if saga_id is None:
            super().__init__()
            return
        if status is None:
            text = f"there is no saga {saga_id}{where}; check the id (spakky-saga list)"
        else:
            text = (
                f"saga {saga_id} is {status}: it waits for no signal any more; a signal "
                "reaches a saga only while it runs (RUNNING or WAITING)"
            )
        super().__init__(text)


class SagaSignalTypeError(SagaSignalError, TypeError):
    """No wait of the signal's saga accepts the payload's type (known when the engine has the
    saga's flow registered), or the payload cannot be stored as JSON."""

    message = "No wait accepts this signal"


class SagaResolutionError(SagaSignalError, ValueError):
    """`engine.resolve(...)` was given a decision that is not "retry", "skip" or
    "compensate", or no `by` (who decides)."""

    message = "Invalid decision for an escalated step"


class SagaSignalConflictError(SagaSignalError, ValueError):
    """A signal id was given again for another saga or with another payload type: a signal
    id identifies one signal."""

    message = "Signal id already used for another signal"


class SagaParallelMergeConflictError(AbstractSpakkySagaError):
    """Several members of a parallel group changed one field to different values."""

    message = "Parallel steps modified the same field"

    def __init__(
        self,
        field: str | None = None,
        members: tuple[str, ...] = (),
        values: tuple[Any, ...] = (),
    ) -> None:
        self.field = field
        self.members = members
        self.values = values
        if field is None:
            super().__init__()
            return
        writes = ", ".join(
            f'"{member}" wrote {safe_repr(value)}'
            for member, value in zip(members, values, strict=True)
        )
        super().__init__(
            f'parallel members changed field "{field}" to different values ({writes}); '
            "make one member own the field, or pass parallel(..., merge=fn) to resolve it"
        )


class SagaCompensationFailedError(AbstractSpakkySagaError):
    """One or more compensations failed during rollback (or never ran, because the rollback
    itself was cut off).

    Raised after every remaining compensation has been attempted and the flow's
    compensation-failure handler has run. `result` is the full `SagaResult`: its history shows
    which compensations failed and which succeeded; `failures` maps step name to its error
    (steps sharing a name are told apart as `name #2`, `name #3`, ...).
    """

    message = "Saga compensation failed"

    def __init__(
        self,
        result: SagaResult[Any] | None = None,
        failures: dict[str, BaseException] | None = None,
    ) -> None:
        self.result = result
        self.failures = dict(failures or {})
        if result is None:
            super().__init__()
            return
        names = ", ".join(f'"{name}" ({safe_repr(error)})' for name, error in self.failures.items())
        saga_id = getattr(result.data, "saga_id", None) or "SAGA_ID"
        super().__init__(
            f'saga "{result.saga_name}" could not be rolled back: compensation of {names} '
            "failed; the data may be inconsistent and needs manual repair (a durable saga: "
            f"repair the participant, then run `spakky-saga retry-compensation {saga_id}` to "
            "re-run the failed compensations)"
        )


class SagaCompensationInterruptedError(AbstractSpakkySagaError):
    """A compensation that did not run to its end because the rollback itself was cancelled
    (the event loop shutting down, or every task being cancelled).

    Recorded in the history as that compensation's failure, so a cut-off rollback is reported
    like any failed one: `started` tells whether the compensation had begun.
    """

    message = "Saga compensation was interrupted"

    def __init__(self, step_name: str | None = None, *, started: bool = False) -> None:
        self.step_name = step_name
        self.started = started
        if step_name is None:
            super().__init__()
            return
        what = "was cut off while running" if started else "never ran"
        super().__init__(
            f'compensation of step "{step_name}" {what}: the rollback was cancelled (the event '
            "loop shutting down, or all tasks cancelled); an in-memory engine cannot finish it "
            "later, so it needs manual repair (a durable engine recovers it)"
        )


class SagaEngineConfigurationError(AbstractSpakkySagaError, ValueError):
    """A `SagaEngine` was given options it cannot run with, or asked for something its
    options rule out (`recover()` on an engine without a store). Each problem is named."""

    message = "Invalid saga engine configuration"

    def __init__(self, *problems: str) -> None:
        self.problems: tuple[str, ...] = problems or (type(self).message,)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = f"{len(self.problems)} problems in saga engine options:\n" + "\n".join(
                f"  - {problem}" for problem in self.problems
            )
        super().__init__(text)


class SagaEngineNotConnectedError(AbstractSpakkySagaError, RuntimeError):
    """`execute()` was called on a saga whose engine is not running (closed or never set up)."""

    message = "Saga engine is not connected"

    def __init__(self, saga_name: str | None = None, reason: str | None = None) -> None:
        self.saga_name = saga_name
        if saga_name is None:
            super().__init__(reason)
        else:
            super().__init__(f'cannot execute saga "{saga_name}": {reason or type(self).message}')


class SagaStepResultError(AbstractSpakkySagaError, TypeError):
    """A step returned something other than the saga's data (or a subclass of it) or None.

    Counted as that step's failure, so the saga compensates instead of carrying on with data
    of the wrong type.
    """

    message = "Saga step returned an invalid value"

    def __init__(
        self, step_name: str | None = None, value: object = None, expected: type | None = None
    ) -> None:
        self.step_name = step_name
        self.value = value
        if step_name is None or expected is None:
            super().__init__()
            return
        super().__init__(
            f'step "{step_name}" returned {safe_repr(value)} ({type(value).__name__}), but the '
            f"saga data is {expected.__name__}; return a {expected.__name__} (or a subclass) to "
            "replace the data, or None to keep it"
        )


class SagaMergeResultError(SagaStepResultError):
    """A parallel group's `merge=` function returned something other than the saga's data.

    Counted as the group's failure: `step_name` is the group's name (`a & b`), so the saga
    compensates the committed members instead of carrying on with data of the wrong type.
    """

    message = "Parallel merge function returned an invalid value"

    def __init__(
        self,
        group_name: str | None = None,
        merge_name: str | None = None,
        value: object = None,
        expected: type | None = None,
    ) -> None:
        self.step_name = group_name
        self.merge_name = merge_name
        self.value = value
        if group_name is None or expected is None:
            AbstractSpakkySagaError.__init__(self)
            return
        fix = (
            "declare it with `def`, not `async def`: the engine calls it without awaiting"
            if inspect.isawaitable(value)
            else f"return the merged {expected.__name__} (or a subclass)"
        )
        AbstractSpakkySagaError.__init__(
            self,
            f'merge function "{merge_name}" of parallel group "{group_name}" returned '
            f"{safe_repr(value)} ({type(value).__name__}), but the saga data is "
            f"{expected.__name__}; {fix}",
        )


class SagaListenerWarning(RuntimeWarning):
    """A saga listener (a log handler through the log listener, a metrics hook, an exporter)
    raised. Reported once per listener; the saga's run is never affected by it."""


class SagaRollbackInterruptedWarning(RuntimeWarning):
    """A rollback was cut off (the event loop shut down and its grace period ran out):
    shown on stderr even where logging is not configured, naming the compensations that did
    not finish."""


class SagaDataCodecError(AbstractSpakkySagaError, TypeError):
    """Saga data cannot be written to (or read back from) a durable saga log.

    Raised when a durable saga starts, before any step runs, if its data does not survive a
    round trip through JSON; `data_class` and `field` say where.
    """

    message = "Saga data cannot be stored"

    def __init__(
        self, data_class: type | None = None, field: str | None = None, reason: str = ""
    ) -> None:
        self.data_class = data_class
        self.field = field
        if data_class is None and not reason:
            super().__init__()
            return
        where = data_class.__qualname__ if data_class is not None else "saga data"
        if field is not None:
            where += f' field "{field}"'
        super().__init__(f"{where} cannot be stored in the saga log: {reason}")


class SagaStoreError(AbstractSpakkySagaError, RuntimeError):
    """The saga store failed or refused an operation (a database error, a corrupt or foreign
    file). A run that cannot write its log stops at once; the saga stays unfinished in the
    store and is recovered later."""

    message = "Saga store error"


class SagaSchemaVersionError(SagaStoreError):
    """The store's schema was written by a newer (or unknown) version of this library."""

    message = "Unsupported saga store schema version"


class SagaLeaseLostError(SagaStoreError):
    """Another engine took over this saga (its lease had expired): this engine stops before its
    next write, so two engines never run one saga at once."""

    message = "Saga lease lost to another engine"

    def __init__(self, saga_id: object = None, owner: str | None = None) -> None:
        self.saga_id = saga_id
        self.owner = owner
        if saga_id is None:
            super().__init__()
            return
        super().__init__(
            f"saga {saga_id} is no longer owned by engine {owner}: its lease expired and "
            "another engine claimed it; this engine stopped before writing again"
        )


class SagaAlreadyStartedError(SagaStoreError):
    """A durable saga was started with data whose `saga_id` the store already knows."""

    message = "Saga already started"

    def __init__(self, saga_id: object = None) -> None:
        self.saga_id = saga_id
        if saga_id is None:
            super().__init__()
            return
        super().__init__(
            f"the saga store already has saga {saga_id}: `data.saga_id` identifies one durable "
            "run; start a new run with fresh data (dataclasses.replace keeps the id, so pass "
            "saga_id=uuid4() to it, or build the data anew)"
        )


class SagaRecoveryError(AbstractSpakkySagaError):
    """A saga found unfinished in the store cannot be recovered as it is: its name is not
    registered, its flow changed, or its data no longer loads. It is left untouched."""

    message = "Saga cannot be recovered"


class SagaNotRegisteredError(SagaRecoveryError):
    """No flow is registered under an unfinished saga's name, so it cannot be recovered here:
    the recovering engine was built without the application's sagas. `registered` names the
    flows it does know."""

    message = "No flow is registered for the saga"

    def __init__(self, saga_name: str | None = None, registered: tuple[str, ...] = ()) -> None:
        self.saga_name = saga_name
        self.registered = registered
        if saga_name is None:
            super().__init__()
            return
        known = ", ".join(registered) or "none"
        super().__init__(
            f'no flow is registered as "{saga_name}" (registered: {known}); call '
            f'engine.register("{saga_name}", flow) before recover(), or let the spakky '
            "container register its @Saga() classes"
        )


class SagaFlowChangedError(SagaRecoveryError):
    """The registered flow of an unfinished saga differs from the flow it started with.

    `changes` lists what changed, step by step. Put the old definition back to recover it, or
    recover with `compensate_by_name=True` to compensate its committed steps by step name.
    """

    message = "Saga flow changed since the saga started"

    def __init__(self, saga_name: str | None = None, changes: tuple[str, ...] = ()) -> None:
        self.saga_name = saga_name
        self.changes = changes
        if saga_name is None:
            super().__init__()
            return
        listed = "; ".join(changes)
        super().__init__(
            f'the flow registered as "{saga_name}" is not the flow this saga started with '
            f"({listed}); put the old definition back to recover it, or recover with "
            "compensate_by_name=True to compensate its committed steps by step name"
        )


class SagaInterruptedError(AbstractSpakkySagaError):
    """The engine running a durable saga stopped (a crash, a deploy, a lost lease) before the
    saga finished; `recover()` compensated it. The `SagaResult.error` of such a saga."""

    message = "Saga was interrupted and recovered"

    def __init__(
        self,
        saga_name: str | None = None,
        failed_step: str | None = None,
        step_error: str | None = None,
    ) -> None:
        self.saga_name = saga_name
        self.failed_step = failed_step
        self.step_error = step_error
        if saga_name is None:
            super().__init__()
            return
        cause = (
            f'; step "{failed_step}" had failed ({step_error})' if failed_step is not None else ""
        )
        super().__init__(
            f'saga "{saga_name}" was interrupted (its engine stopped before it finished) and '
            f"was compensated on recovery{cause}"
        )


class LoggedError(Exception):
    """An error as a saga log recorded it (its type name and text), in a history rebuilt from
    the log: the original exception did not survive the process that raised it."""

    def __init__(self, type_name: str, text: str | None) -> None:
        super().__init__(text or "")
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"{self.type_name}({str(self)!r})"
