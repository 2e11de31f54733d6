"""A small saga engine written independently of SagaEngine, with bugs to switch on.

`explore_failures` must find every bug a saga engine can have, not just agree with ours: with
no bug switched on this engine keeps every promise (and the harness reports nothing), and
each bug breaks one promise the harness must report.

It supports what the tests' flows use: steps and transactions, parallel groups (members'
outputs: the last non-None wins), Retry's attempts without backoff, Skip, and the
compensation-failure handler. No timeouts.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterable
from enum import Enum, auto
from typing import Any

from spakky_saga import (
    AbstractSagaData,
    Parallel,
    Retry,
    SagaCompensationFailedError,
    SagaFlow,
    SagaResult,
    SagaStatus,
    Skip,
    StepRecord,
    StepStatus,
    Transaction,
)


class Bug(Enum):
    COMPENSATE_IN_FORWARD_ORDER = auto()
    COMPENSATE_TWICE = auto()
    FORGET_LAST_COMMIT = auto()
    COMPENSATE_THE_FAILED_STEP = auto()
    STALE_DATA = auto()
    SWALLOW_COMPENSATION_FAILURE = auto()
    REPORT_COMPLETED = auto()
    NO_HISTORY = auto()
    NO_FAILED_ATTEMPT_RECORDS = auto()
    SWALLOW_CANCELLATION = auto()
    CALL_HANDLER_TWICE = auto()
    COMPENSATE_CONCURRENTLY = auto()
    DO_NOT_WAIT_FOR_SIBLINGS = auto()
    WRONG_FAILED_STEP = auto()
    COMPENSATE_ON_SUCCESS = auto()
    DROP_RETURNED_DATA = auto()
    UNSHIELDED_ROLLBACK = auto()
    HANDLER_FIRST = auto()


class ToyEngine:
    def __init__(self, *bugs: Bug) -> None:
        self.bugs = set(bugs)

    async def run[D: AbstractSagaData](
        self,
        flow: SagaFlow[D],
        data: D,
        *,
        saga_name: str = "<anonymous>",
        listeners: Iterable[object] = (),
    ) -> SagaResult[D]:
        history: list[StepRecord] = []
        undo: list[Any] = []
        skipped: list[str] = []
        latest: Any = data
        failed: tuple[str, BaseException] | None = None
        try:
            for item in flow.items:
                members = item.items if isinstance(item, Parallel) else (item,)
                if isinstance(item, Parallel) and Bug.DO_NOT_WAIT_FOR_SIBLINGS in self.bugs:
                    outcomes = [await self._attempt(members[0], latest, history)]
                    for member in members[1:]:
                        asyncio.get_running_loop().create_task(
                            self._attempt(member, latest, history)
                        )
                else:
                    outcomes = list(
                        await asyncio.gather(*(self._attempt(m, latest, history) for m in members))
                    )
                for member, (ok, value) in zip(members, outcomes, strict=False):
                    if ok:
                        if isinstance(member, Transaction):
                            undo.append(member)
                        if value is not None and Bug.DROP_RETURNED_DATA not in self.bugs:
                            latest = value
                    elif value is None:
                        skipped.append(member.name)
                    elif failed is None:
                        failed = (member.name, value)
                        if Bug.COMPENSATE_THE_FAILED_STEP in self.bugs and isinstance(
                            member, Transaction
                        ):
                            undo.append(member)
                if failed is not None:
                    break
        except asyncio.CancelledError:
            await self._shielded(flow, undo, latest, data, history)
            if Bug.SWALLOW_CANCELLATION in self.bugs:
                return SagaResult(SagaStatus.FAILED, latest, None, None, tuple(history))
            raise
        if failed is None:
            if Bug.COMPENSATE_ON_SUCCESS in self.bugs:
                await self._shielded(flow, undo, latest, data, history)
            return self._result(SagaStatus.COMPLETED, latest, None, None, history, skipped)
        failures = await self._shielded(flow, undo, latest, data, history)
        step, error = failed
        if Bug.WRONG_FAILED_STEP in self.bugs:
            step = flow.items[-1].name
        status = SagaStatus.COMPLETED if Bug.REPORT_COMPLETED in self.bugs else SagaStatus.FAILED
        result = self._result(status, latest, step, error, history, skipped)
        if failures and Bug.SWALLOW_COMPENSATION_FAILURE not in self.bugs:
            raise SagaCompensationFailedError(result, failures)
        return result

    def _result[D: AbstractSagaData](  # noqa: PLR0917 - SagaResult's own order
        self,
        status: SagaStatus,
        data: D,
        step: str | None,
        error: BaseException | None,
        history: list[StepRecord],
        skipped: list[str],
    ) -> SagaResult[D]:
        records = () if Bug.NO_HISTORY in self.bugs else tuple(history)
        return SagaResult(status, data, step, error, records, skipped=tuple(skipped))

    async def _attempt(self, item: Any, data: Any, history: list[StepRecord]) -> tuple[bool, Any]:
        strategy = item.on_error
        attempts = strategy.max_attempts if isinstance(strategy, Retry) else 1
        final = strategy.then if isinstance(strategy, Retry) else strategy
        for attempt in range(1, attempts + 1):
            try:
                out = await item.action(data)
            except Exception as error:
                if Bug.NO_FAILED_ATTEMPT_RECORDS not in self.bugs:
                    history.append(StepRecord(item.name, StepStatus.FAILED, attempt=attempt))
                if attempt == attempts:
                    return (False, None) if isinstance(final, Skip) else (False, error)
                continue
            history.append(StepRecord(item.name, StepStatus.COMMITTED, attempt=attempt))
            return True, out
        raise AssertionError("unreachable")

    async def _shielded(
        self,
        flow: SagaFlow[Any],
        undo: list[Any],
        latest: Any,
        data: Any,
        history: list[StepRecord],
    ) -> dict[str, BaseException]:
        """Roll back in a task of its own that the caller's cancellation cannot cut short;
        re-raise the cancellation once it is over."""
        if Bug.UNSHIELDED_ROLLBACK in self.bugs:
            return await self._roll_back(flow, undo, latest, data, history)
        rollback = asyncio.ensure_future(self._roll_back(flow, undo, latest, data, history))
        cancelled: asyncio.CancelledError | None = None
        while not rollback.done():
            try:
                await asyncio.shield(rollback)
            except asyncio.CancelledError as again:
                cancelled = again
        if cancelled is not None:
            raise cancelled
        return rollback.result()

    async def _roll_back(
        self,
        flow: SagaFlow[Any],
        undo: list[Any],
        latest: Any,
        data: Any,
        history: list[StepRecord],
    ) -> dict[str, BaseException]:
        order = list(undo) if Bug.COMPENSATE_IN_FORWARD_ORDER in self.bugs else undo[::-1]
        if Bug.FORGET_LAST_COMMIT in self.bugs and order:
            order = order[1:]
        if Bug.COMPENSATE_TWICE in self.bugs:
            order = [item for item in order for _ in range(2)]
        given = data if Bug.STALE_DATA in self.bugs else latest
        failures: dict[str, BaseException] = {}

        async def compensate(item: Any) -> None:
            try:
                await item.compensate(given)
            except Exception as error:
                history.append(StepRecord(item.name, StepStatus.FAILED, compensation=True))
                failures[item.name] = error
            else:
                history.append(StepRecord(item.name, StepStatus.COMPENSATED, compensation=True))

        handler = flow.compensation_failure_handler
        if handler is not None and order and Bug.HANDLER_FIRST in self.bugs:
            returned = handler(given)
            if inspect.isawaitable(returned):
                await returned
        if Bug.COMPENSATE_CONCURRENTLY in self.bugs:
            await asyncio.gather(*(compensate(item) for item in order))
        else:
            for item in order:
                await compensate(item)
        if failures and handler is not None and Bug.HANDLER_FIRST not in self.bugs:
            for _ in range(2 if Bug.CALL_HANDLER_TWICE in self.bugs else 1):
                returned = handler(given)
                if inspect.isawaitable(returned):
                    await returned
        return failures
