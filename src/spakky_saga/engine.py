"""How a flow runs: the one place that executes steps, retries, merges and compensates.

The engine runs a compiled plan with per-run local state; nothing mutable lives on the plan,
the flow or the saga class. Time and sleeping are injected (`clock=`, `sleep=`) so backoff is
tested without waiting. Rollback runs in its own task, shielded from cancellation: once a saga
starts compensating, cancelling its caller cannot leave committed steps half-undone.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Final

from spakky_saga.data import AbstractSagaData
from spakky_saga.errors import (
    SagaCompensationFailedError,
    SagaEngineNotConnectedError,
    SagaFlowDefinitionError,
    SagaStepCancelledError,
    SagaStepResultError,
    SagaStepTimeoutError,
    SagaTimeoutError,
)
from spakky_saga.flow import SagaFlow
from spakky_saga.merge import merge_committed, merge_results
from spakky_saga.plan import ExecutionPlan, GroupNode, StepNode, plan_for
from spakky_saga.result import SagaResult, SagaStatus, StepRecord, StepStatus

logger: Final = logging.getLogger("spakky_saga.engine")

_INFO: Final = logging.INFO
_COMMITTED: Final = StepStatus.COMMITTED
_FAILED: Final = StepStatus.FAILED
_COMPENSATED: Final = StepStatus.COMPENSATED
_LOG_FORMAT: Final = "[saga=%s step=%s status=%s elapsed=%.3fms]"
_NO_SCOPE: Final = contextlib.nullcontext()
_new_record: Final = tuple.__new__  # StepRecord without its Python-level __new__: hot path

type Clock = Callable[[], float]
type Sleep = Callable[[float], Awaitable[None]]


class _StepFailed:
    """Why the forward pass stopped: the failing step (or group) and its error."""

    __slots__ = ("error", "step")

    def __init__(self, step: str, error: BaseException) -> None:
        self.step = step
        self.error = error


class _GroupFailed(_StepFailed):
    """A parallel group failed; `data` is what its committed members changed, merged."""

    __slots__ = ("data",)

    def __init__(self, step: str, error: BaseException, data: AbstractSagaData) -> None:
        super().__init__(step, error)
        self.data = data


class SagaEngine:
    """Runs saga flows.

    `clock` returns monotonic seconds (for `elapsed`), `sleep` waits between retries;
    `compensation_timeout` bounds each compensation (None: no bound). A closed engine refuses
    new runs with `SagaEngineNotConnectedError`.
    """

    __slots__ = ("_clock", "_closed", "_compensation_timeout", "_sleep")

    def __init__(
        self,
        *,
        clock: Clock = time.perf_counter,
        sleep: Sleep = asyncio.sleep,
        compensation_timeout: timedelta | None = None,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        if compensation_timeout is not None and not (
            isinstance(compensation_timeout, timedelta) and compensation_timeout > timedelta(0)
        ):
            # A zero or negative bound would fail every compensation: refuse it up front.
            raise SagaFlowDefinitionError(
                f"SagaEngine(compensation_timeout={compensation_timeout!r}): must be a positive "
                "datetime.timedelta, or None to let compensations run to the end"
            )
        self._compensation_timeout = (
            compensation_timeout.total_seconds() if compensation_timeout is not None else None
        )
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once `close()` was called."""
        return self._closed

    def close(self) -> None:
        """Refuse new runs from now on; runs already started finish normally."""
        self._closed = True

    async def run[D: AbstractSagaData](  # noqa: PLR0915 - the hot loop is inlined on purpose
        self, flow: SagaFlow[D], data: D, *, saga_name: str = "saga"
    ) -> SagaResult[D]:
        """Run `flow` on `data` and return its result; a failed saga is a result, not an error.

        Raises `SagaCompensationFailedError` (carrying the result) when a compensation failed,
        and re-raises `CancelledError` after compensating when the calling task is cancelled.
        """
        if self._closed:
            raise SagaEngineNotConnectedError(
                saga_name, "its saga engine was closed (the application is shutting down)"
            )
        if not isinstance(data, AbstractSagaData):
            raise TypeError(
                f'saga "{saga_name}" was given {data!r} ({type(data).__name__}) as data; '
                "pass an instance of an AbstractSagaData subclass"
            )
        plan = plan_for(flow)
        saga = saga_name
        clock = self._clock
        log = logger.isEnabledFor(_INFO)
        started = clock()
        if log:
            logger.info(_LOG_FORMAT, saga, "-", "started", 0.0)
        history: list[StepRecord] = []
        append = history.append
        undo: list[StepNode | tuple[StepNode, ...]] = []
        failure: _StepFailed | None = None
        status = SagaStatus.COMPLETED
        node: StepNode | GroupNode | None = None
        interrupted: list[AbstractSagaData] | None = None  # set while a group runs
        t0 = started  # when the running item started
        scope = asyncio.timeout(plan.timeout) if plan.timeout is not None else _NO_SCOPE
        try:
            async with scope:
                for node in plan.nodes:
                    if isinstance(node, StepNode) and node.simple:
                        step = node
                        if log:
                            logger.info(_LOG_FORMAT, saga, step.name, "started", 0.0)
                        t0 = clock()
                        try:
                            out = await step.action(data)
                            if out is not None and out.__class__ is not data.__class__:
                                _check_output(step.name, out, data)
                        except (Exception, asyncio.CancelledError) as caught:
                            error = _step_error(step.name, caught)
                            elapsed = clock() - t0
                            append(
                                _new_record(
                                    StepRecord, (step.name, _FAILED, elapsed, 1, False, error)
                                )
                            )
                            _log_failed(saga, step.name, elapsed, 1, error)
                            failure = _StepFailed(step.name, error)
                            break
                        elapsed = clock() - t0
                        append(
                            _new_record(
                                StepRecord, (step.name, _COMMITTED, elapsed, 1, False, None)
                            )
                        )
                        if out is not None:
                            data = out
                        if step.compensate is not None:
                            undo.append(step)
                        if log:
                            logger.info(_LOG_FORMAT, saga, step.name, "completed", elapsed * 1e3)
                    elif isinstance(node, StepNode):
                        step = node
                        t0 = clock()
                        committed, value = await self._attempt(step, data, history, saga)
                        if committed:
                            if value is not None:
                                data = value
                            if step.compensate is not None:
                                undo.append(step)
                        elif value is not None:
                            failure = _StepFailed(step.name, value)
                            break
                    else:
                        interrupted = []
                        t0 = clock()
                        outcome = await self._run_group(
                            node, data, history, undo, saga, interrupted=interrupted
                        )
                        if isinstance(outcome, _GroupFailed):
                            failure = outcome
                            data = outcome.data  # type: ignore[assignment] # merge keeps the type
                            break
                        data = outcome  # type: ignore[assignment] # merge keeps the data type
                else:
                    node = None
        except TimeoutError as error:
            if not isinstance(scope, asyncio.Timeout) or not scope.expired():
                raise
            if interrupted:
                data = interrupted[-1]  # type: ignore[assignment] # merged from this saga's data
            status = SagaStatus.TIMED_OUT
            running = node.name if node is not None else None
            assert plan.timeout is not None
            timeout_error = SagaTimeoutError(saga, timedelta(seconds=plan.timeout), running)
            timeout_error.__cause__ = error
            failure = _StepFailed(running or "-", timeout_error)
            if running is not None:
                attempt = _running_attempt(node, history) if isinstance(node, StepNode) else 1
                append(StepRecord(running, _FAILED, clock() - t0, attempt, False, timeout_error))
        except asyncio.CancelledError:
            if interrupted:
                data = interrupted[-1]  # type: ignore[assignment] # merged from this saga's data
            logger.warning(
                _LOG_FORMAT,
                saga,
                node.name if node else "-",
                "cancelled",
                (clock() - started) * 1e3,
            )
            if undo:
                undo_failures = await self._rollback_shielded(undo, data, history, saga)
                if undo_failures:  # the data may be inconsistent: the handler must hear of it
                    cancelled = SagaResult(
                        saga,
                        SagaStatus.FAILED,
                        data,
                        tuple(history),
                        clock() - started,
                        node.name if node else None,
                        asyncio.CancelledError(),
                    )
                    with contextlib.suppress(SagaCompensationFailedError):
                        await self._handle_compensation_failure(plan, cancelled, undo_failures)
            raise
        if failure is None:
            elapsed = clock() - started
            if log:
                logger.info(_LOG_FORMAT, saga, "-", "completed", elapsed * 1e3)
            return SagaResult(saga, SagaStatus.COMPLETED, data, tuple(history), elapsed)
        if status is not SagaStatus.TIMED_OUT:
            status = SagaStatus.FAILED
        failures = await self._rollback_shielded(undo, data, history, saga) if undo else None
        elapsed = clock() - started
        result = SagaResult(
            saga, status, data, tuple(history), elapsed, failure.step, failure.error
        )
        logger.warning(
            _LOG_FORMAT + " failed_step=%s error=%r",
            saga,
            "-",
            status.value,
            elapsed * 1e3,
            failure.step,
            failure.error,
        )
        if failures:
            await self._handle_compensation_failure(plan, result, failures)
        return result

    async def _attempt(
        self, step: StepNode, data: AbstractSagaData, history: list[StepRecord], saga: str
    ) -> tuple[bool, Any]:
        """Run one step with its strategy, timeout and retries.

        Returns (True, output) when it committed, (False, None) when it failed and is
        skipped, and (False, error) when it failed for good.
        """
        clock = self._clock
        log = logger.isEnabledFor(_INFO)
        attempt = 1
        while True:
            if log:
                logger.info(_LOG_FORMAT + " attempt=%d", saga, step.name, "started", 0.0, attempt)
            t0 = clock()
            try:
                if step.timeout is None:
                    out = await step.action(data)
                else:
                    out = await _with_timeout(step, data)
                if out is not None and out.__class__ is not data.__class__:
                    _check_output(step.name, out, data)
            except (Exception, asyncio.CancelledError) as caught:
                error = _step_error(step.name, caught)
                elapsed = clock() - t0
                history.append(StepRecord(step.name, _FAILED, elapsed, attempt, False, error))
                _log_failed(saga, step.name, elapsed, attempt, error)
                if attempt < step.max_attempts:
                    attempt += 1
                    delay = step.strategy.delay_before(attempt)  # type: ignore[attr-defined] # max_attempts > 1 only for Retry
                    logger.info(
                        _LOG_FORMAT + " attempt=%d delay=%.3fs",
                        saga,
                        step.name,
                        "retry",
                        elapsed * 1e3,
                        attempt,
                        delay,
                    )
                    if delay > 0:
                        await self._sleep(delay)
                    continue
                if step.skip_on_failure:
                    logger.warning(_LOG_FORMAT, saga, step.name, "skipped", elapsed * 1e3)
                    return False, None
                return False, error
            elapsed = clock() - t0
            history.append(StepRecord(step.name, _COMMITTED, elapsed, attempt, False, None))
            if log:
                logger.info(_LOG_FORMAT, saga, step.name, "completed", elapsed * 1e3)
            return True, out

    async def _run_group(
        self,
        group: GroupNode,
        data: AbstractSagaData,
        history: list[StepRecord],
        undo: list[StepNode | tuple[StepNode, ...]],
        saga: str,
        *,
        interrupted: list[AbstractSagaData],
    ) -> AbstractSagaData | _GroupFailed:
        """Run members concurrently, wait for all of them, then merge or report failure.

        Each member runs with its own strategy (a retrying member does not hold up its
        siblings; a skipped one contributes nothing). Committed members are registered for
        compensation even if the group is cancelled (saga timeout or caller cancellation)
        while siblings are still running. When the group fails, what its committed members
        changed is merged anyway, so that their compensations see it.
        """
        members = group.members
        results: list[Any] = [None] * len(members)
        committed = [False] * len(members)
        errors: list[Exception | None] = [None] * len(members)

        async def run_member(index: int, member: StepNode) -> None:
            ok, value = await self._attempt(member, data, history, saga)
            if ok:
                committed[index] = True
                results[index] = value
            else:
                errors[index] = value  # None when the member failed and is skipped

        try:
            async with asyncio.TaskGroup() as tasks:
                for index, member in enumerate(members):
                    tasks.create_task(run_member(index, member))
        except BaseException:
            # Cancelled (saga timeout or caller) with members still running: what the
            # committed ones changed is the latest data their compensations must see.
            interrupted.append(merge_committed(group, data, results))
            raise
        finally:
            done = tuple(m for m, ok in zip(members, committed, strict=True) if ok and m.compensate)
            if group.concurrent_compensation and len(done) > 1:
                undo.append(done)
            else:
                undo.extend(done)
        failed = [(m.name, e) for m, e in zip(members, errors, strict=True) if e is not None]
        if failed:
            latest = merge_committed(group, data, results)
            if len(failed) == 1:
                return _GroupFailed(*failed[0], latest)
            group_error = ExceptionGroup(
                f"{len(failed)} members of parallel group {group.name} failed",
                [error for _, error in failed],
            )
            return _GroupFailed(" & ".join(name for name, _ in failed), group_error, latest)
        t0 = self._clock()
        try:
            return merge_results(group, data, results)
        except Exception as error:
            elapsed = self._clock() - t0
            history.append(StepRecord(group.name, _FAILED, elapsed, 1, False, error))
            _log_failed(saga, group.name, elapsed, 1, error)
            latest = data if group.merge is not None else merge_committed(group, data, results)
            return _GroupFailed(group.name, error, latest)

    async def _rollback_shielded(
        self,
        undo: list[StepNode | tuple[StepNode, ...]],
        data: AbstractSagaData,
        history: list[StepRecord],
        saga: str,
    ) -> dict[str, BaseException]:
        """Compensate in its own task; a cancellation waits for it to finish, then re-raises."""
        # Eager: compensations that never suspend finish here, without a loop iteration.
        task = asyncio.Task(
            self._rollback(undo, data, history, saga),
            loop=asyncio.get_running_loop(),
            eager_start=True,
        )
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            while not task.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(task)
            raise

    async def _rollback(
        self,
        undo: list[StepNode | tuple[StepNode, ...]],
        data: AbstractSagaData,
        history: list[StepRecord],
        saga: str,
    ) -> dict[str, BaseException]:
        """Undo committed steps in reverse; a failed compensation never stops the rest."""
        failures: dict[str, BaseException] = {}
        for entry in reversed(undo):
            if isinstance(entry, tuple):
                await asyncio.gather(
                    *(self._compensate(step, data, history, saga, failures) for step in entry)
                )
            else:
                await self._compensate(entry, data, history, saga, failures)
        return failures

    async def _compensate(
        self,
        step: StepNode,
        data: AbstractSagaData,
        history: list[StepRecord],
        saga: str,
        failures: dict[str, BaseException],
    ) -> None:
        clock = self._clock
        log = logger.isEnabledFor(_INFO)
        if log:
            logger.info(_LOG_FORMAT, saga, step.name, "compensating", 0.0)
        compensate = step.compensate
        assert compensate is not None, "only steps with a compensation are put on the undo list"
        t0 = clock()
        try:
            if self._compensation_timeout is None:
                await compensate(data)
            else:
                async with asyncio.timeout(self._compensation_timeout):
                    await compensate(data)
        except (Exception, asyncio.CancelledError) as caught:
            error = _step_error(step.name, caught)
            elapsed = clock() - t0
            history.append(StepRecord(step.name, _FAILED, elapsed, 1, True, error))
            failures[_unique_key(failures, step.name)] = error
            logger.error(
                _LOG_FORMAT + " compensation=%s error=%r",
                saga,
                step.name,
                "compensation_failed",
                elapsed * 1e3,
                step.compensation_name,
                error,
            )
            return
        elapsed = clock() - t0
        history.append(StepRecord(step.name, _COMPENSATED, elapsed, 1, True, None))
        if log:
            logger.info(_LOG_FORMAT, saga, step.name, "compensated", elapsed * 1e3)

    async def _handle_compensation_failure(
        self,
        plan: ExecutionPlan,
        result: SagaResult[Any],
        failures: dict[str, BaseException],
    ) -> None:
        """Call the flow's handler with the result, then raise SagaCompensationFailedError."""
        error = SagaCompensationFailedError(result, failures)
        handler = plan.compensation_failure_handler
        if handler is not None:
            try:
                outcome = handler(result)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception as handler_error:
                logger.exception(
                    "[saga=%s step=- status=compensation_handler_failed]", result.saga_name
                )
                raise error from handler_error
        raise error


async def _with_timeout(step: StepNode, data: AbstractSagaData) -> Any:
    """Run a step's action under its timeout, reporting an overrun as SagaStepTimeoutError."""
    assert step.timeout is not None
    try:
        async with asyncio.timeout(step.timeout) as scope:
            return await step.action(data)
    except TimeoutError as error:
        if not scope.expired():
            raise
        raise SagaStepTimeoutError(step.name, timedelta(seconds=step.timeout)) from error


def _step_error(step: str, error: Exception | asyncio.CancelledError) -> Exception:
    """What a step's (or compensation's) exception counts as, on the failure path only.

    A CancelledError while the saga's task is being cancelled (by its caller, the saga timeout
    or a parallel group) is that cancellation: re-raised. One the step raised on its own, from
    awaiting something cancelled elsewhere, is the step's failure (SagaStepCancelledError),
    so the saga returns a result instead of cancelling a caller nobody cancelled.
    """
    if isinstance(error, Exception):
        return error
    task = asyncio.current_task()
    if task is None or task.cancelling():
        raise error
    failure = SagaStepCancelledError(step)
    failure.__cause__ = error
    return failure


def _running_attempt(step: StepNode, history: list[StepRecord]) -> int:
    """The attempt of `step` that was running when the saga timed out: one past the failed
    attempts it just recorded (retries append one FAILED record per attempt)."""
    attempt = 1
    for record in reversed(history):
        if attempt == step.max_attempts or record.name != step.name or record.status is _COMMITTED:
            break
        attempt += 1
    return attempt


def _unique_key(failures: dict[str, BaseException], name: str) -> str:
    """`name`, or `name #2`, `name #3`... when steps sharing a name failed to compensate."""
    key, number = name, 1
    while key in failures:
        number += 1
        key = f"{name} #{number}"
    return key


def _check_output(step: str, out: object, data: AbstractSagaData) -> None:
    """Reject a step result that is not the saga's data type (a subclass is fine)."""
    if not isinstance(out, data.__class__):
        raise SagaStepResultError(step, out, data.__class__)


def _log_failed(saga: str, step: str, elapsed: float, attempt: int, error: BaseException) -> None:
    """A failed attempt is INFO: the strategy decides what it means, and a saga that ends in
    failure logs one WARNING naming the step and error."""
    if logger.isEnabledFor(_INFO):
        logger.info(
            _LOG_FORMAT + " attempt=%d error=%r",
            saga,
            step,
            "failed",
            elapsed * 1e3,
            attempt,
            error,
        )


DEFAULT_ENGINE: Final = SagaEngine()
"""The engine `run_saga_flow` and unconnected sagas use."""


async def run_saga_flow[D: AbstractSagaData](
    flow: SagaFlow[D], data: D, *, saga_name: str = "saga"
) -> SagaResult[D]:
    """Run `flow` on `data` with the default engine; see `SagaEngine.run`."""
    return await DEFAULT_ENGINE.run(flow, data, saga_name=saga_name)
