"""Injectors: a flow rebuilt with every action and compensation wrapped, to inject one
scenario's faults and record every call.

The flow's items are frozen dataclasses, so the instrumented flow is built with
`dataclasses.replace` (which validates again) and keeps everything else: names, strategies,
timeouts, merge functions, compensation order, the saga timeout. Each wrapper is an
`async def` taking the data, so bound `@saga_step` methods (partials) keep working inside.

Every wrapper awaits once before and once after the wrapped call (`asyncio.sleep(0)`), as a
step doing I/O would: those are the await points at which a caller's cancellation can land
(before the step acted, and after it acted but before the engine saw it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from spakky_saga.context import current_step
from spakky_saga.flow import Parallel, SagaFlow, Transaction

type CallKind = Literal["action", "compensation", "handler"]


@dataclass(frozen=True, slots=True)
class Site:
    """A step of the flow, where faults are injected: its position `key` (`3`, or `2.1` for
    the first member of the group in second place, as in the engine's plan)."""

    key: str
    name: str
    label: str
    """The name, or `name@key` when several steps share it."""
    compensable: bool
    group: str | None
    """The key of the parallel group it is a member of."""
    skip: bool
    """Whether its strategy skips it when it fails for good."""
    timeout: bool
    """Whether it has a step timeout."""
    waits: bool = False
    """Whether it is a wait (`wait_for`, `sleep`, `sleep_until`): the engine runs it itself,
    so no fault is injected into it; the explorer sees it through its events."""
    signal_type: type | None = None
    """A `wait_for`'s signal type (None for a sleep or a step)."""
    can_time_out: bool = False
    """A `wait_for` with a timeout: withholding its signal makes it fail."""


@dataclass(frozen=True, slots=True)
class Group:
    key: str
    name: str
    members: tuple[Site, ...]
    concurrent: bool
    """compensation_order="concurrent"."""
    custom_merge: bool


@dataclass(frozen=True, slots=True)
class Shape:
    """What the checks need to know of a flow: its steps in order, its groups, its options."""

    items: tuple[Site | Group, ...]
    saga_timeout: bool
    handler: bool
    pivot: int | None = None
    """The index in `items` of the flow's pivot (its point of no return), if it has one."""

    def past_pivot(self, calls: Iterable[Call]) -> Site | Group | None:
        """The pivot, if `calls` show the forward pass got past it (an action of a later item
        started), else None."""
        if self.pivot is None:
            return None
        later = {
            site.key
            for item in self.items[self.pivot + 1 :]
            for site in (item.members if isinstance(item, Group) else (item,))
        }
        started = any(c.kind == "action" and c.site and c.site.key in later for c in calls)
        return self.items[self.pivot] if started else None

    @property
    def sites(self) -> tuple[Site, ...]:
        return tuple(
            site
            for item in self.items
            for site in (item.members if isinstance(item, Group) else (item,))
        )

    @property
    def fault_sites(self) -> tuple[Site, ...]:
        """The sites whose actions faults are injected into: every site but the waits."""
        return tuple(site for site in self.sites if not site.waits)

    @property
    def waits(self) -> tuple[Site, ...]:
        return tuple(site for site in self.sites if site.waits)


def shape_of(flow: SagaFlow[Any]) -> Shape:
    names = Counter(
        member.name
        for item in flow.items
        for member in (item.items if isinstance(item, Parallel) else (item,))
    )

    def site(item: Any, key: str, group: str | None) -> Site:
        return Site(
            key=key,
            name=item.name,
            label=item.name if names[item.name] == 1 else f"{item.name}@{key}",
            compensable=isinstance(item, Transaction),
            group=group,
            skip=item.on_error.skips,
            timeout=item.timeout is not None,
            waits=item.waits,
            signal_type=item.wait.signal_type if item.waits else None,
            can_time_out=item.waits and item.can_fail,
        )

    items: list[Site | Group] = []
    for position, item in enumerate(flow.items, start=1):
        key = str(position)
        if isinstance(item, Parallel):
            members = tuple(
                site(member, f"{key}.{index}", key)
                for index, member in enumerate(item.items, start=1)
            )
            concurrent = item.compensation_order == "concurrent"
            items.append(Group(key, item.name, members, concurrent, item.merge is not None))
        else:
            items.append(site(item, key, None))
    return Shape(
        tuple(items),
        saga_timeout=flow.saga_timeout is not None,
        handler=flow.compensation_failure_handler is not None,
        pivot=next((i for i, item in enumerate(flow.items) if item.pivot), None),
    )


@dataclass(frozen=True, slots=True)
class Faults:
    """One scenario's faults, by site key.

    `action_failures` bounds the failing action to its first attempts (by the engine's
    attempt number, so that a recovered saga repeating an attempt sees it fail again, as the
    participant answers a repeated request); `compensation_failures` to the first calls of the
    failing compensation. None: every attempt, every call.
    """

    make_error: Callable[[str], Exception]
    fail_action: str | None = None
    fail_compensation: str | None = None
    hang_action: str | None = None
    withhold_signal: str | None = None
    """The key of the `wait_for` whose signal is not sent (it times out)."""
    action_failures: int | None = None
    compensation_failures: int | None = None

    def fails_action(self, site: Site, call: Call) -> bool:
        attempt = call.step_attempt if call.step_attempt is not None else call.attempt
        return self.fail_action == site.key and (
            self.action_failures is None or attempt <= self.action_failures
        )

    def fails_compensation(self, site: Site, call: Call) -> bool:
        return self.fail_compensation == site.key and (
            self.compensation_failures is None or call.attempt <= self.compensation_failures
        )


@dataclass(slots=True, eq=False)
class Call:
    """One call of an action, compensation or the failure handler; `started` and `ended`
    are positions in the run's sequence of call starts and ends."""

    kind: CallKind
    site: Site | None
    attempt: int
    data: object
    started: int
    ended: int | None = None
    returned: object = None
    raised: BaseException | None = None
    injected: BaseException | None = None
    """The fault the harness raised here, if any."""
    step_attempt: int | None = None
    """The engine's attempt number (`current_step().attempt`), when it runs the call as a
    step (None for the failure handler, or an engine without `current_step()`)."""
    key: str | None = None
    """`current_step().idempotency_key` when the call started."""
    process: int = 1
    """Which (simulated) process ran it: `explore_crashes` recovers in process 2."""

    @property
    def label(self) -> str:
        if self.site is None:
            return "failure handler"
        return f"undo {self.site.label}" if self.kind == "compensation" else self.site.label


@dataclass(slots=True)
class Recorder:
    """Every call of one run, in the order they started."""

    calls: list[Call] = field(default_factory=list)
    finished_at: int = 0
    """The position at which the caller got the run's outcome (see `mark`)."""
    _tick: int = 0
    _attempts: Counter[tuple[CallKind, str]] = field(default_factory=Counter)

    def start(self, kind: CallKind, site: Site | None, data: object, process: int = 1) -> Call:
        key = (kind, site.key if site is not None else "")
        self._attempts[key] += 1
        self._tick += 1
        call = Call(kind, site, self._attempts[key], data, self._tick, process=process)
        if site is not None:
            try:
                context = current_step()
            except LookupError:  # an engine that does not say which step runs
                pass
            else:
                call.step_attempt, call.key = context.attempt, context.idempotency_key
        self.calls.append(call)
        return call

    def end(self, call: Call, returned: object = None, raised: BaseException | None = None) -> None:
        self._tick += 1
        call.ended = self._tick
        call.returned = returned
        call.raised = raised

    def mark(self) -> int:
        """A position between call starts and ends: when the run gave its outcome."""
        self._tick += 1
        return self._tick

    def of(self, kind: CallKind) -> list[Call]:
        return [call for call in self.calls if call.kind == kind]


def instrument(
    flow: SagaFlow[Any], shape: Shape, faults: Faults, recorder: Recorder, process: int = 1
) -> SagaFlow[Any]:
    """`flow` with every action, compensation and the failure handler wrapped; their calls
    are recorded as `process`'s."""
    sites = iter(shape.sites)

    def wrap(item: Any) -> Any:
        site = next(sites)
        if site.waits:  # run by the engine itself: observed through its events (explore)
            return item
        action = _action(item.action, site, faults, recorder, process)
        if isinstance(item, Transaction):
            compensate = _compensation(item.compensate, site, faults, recorder, process)
            return dataclasses.replace(item, action=action, compensate=compensate)
        return dataclasses.replace(item, action=action)

    items = tuple(
        dataclasses.replace(item, items=tuple(wrap(member) for member in item.items))
        if isinstance(item, Parallel)
        else wrap(item)
        for item in flow.items
    )
    handler = flow.compensation_failure_handler
    if handler is not None:
        handler = _handler(handler, recorder, process)
    return dataclasses.replace(flow, items=items, compensation_failure_handler=handler)


def _action(
    original: Callable[[Any], Any], site: Site, faults: Faults, recorder: Recorder, process: int
) -> Callable[[Any], Any]:
    async def action(data: Any) -> Any:
        call = recorder.start("action", site, data, process)
        try:
            await asyncio.sleep(0)  # an await point before the step acts
            if faults.hang_action == site.key:
                await asyncio.get_running_loop().create_future()  # never done: only a timeout
            if faults.fails_action(site, call):
                fault = faults.make_error(
                    f"injected failure of step {site.label} (attempt {call.attempt})"
                )
                call.injected = fault
                raise fault
            out = await original(data)
            await asyncio.sleep(0)  # an await point after it acted, before the engine knows
        except BaseException as error:
            recorder.end(call, raised=error)
            raise
        recorder.end(call, returned=out)
        return out

    action.__name__ = action.__qualname__ = site.name
    return action


def _compensation(
    original: Callable[[Any], Any], site: Site, faults: Faults, recorder: Recorder, process: int
) -> Callable[[Any], Any]:
    async def compensate(data: Any) -> None:
        call = recorder.start("compensation", site, data, process)
        try:
            await asyncio.sleep(0)
            if faults.fails_compensation(site, call):
                fault = faults.make_error(f"injected failure of the compensation of {site.label}")
                call.injected = fault
                raise fault
            await original(data)
            await asyncio.sleep(0)
        except BaseException as error:
            recorder.end(call, raised=error)
            raise
        recorder.end(call)

    compensate.__name__ = compensate.__qualname__ = f"undo_{site.name}"
    return compensate


def _handler(
    original: Callable[[Any], Any], recorder: Recorder, process: int
) -> Callable[[Any], Any]:
    async def handler(data: Any) -> None:
        call = recorder.start("handler", None, data, process)
        try:
            returned = original(data)
            if inspect.isawaitable(returned):
                await returned
        except BaseException as error:
            recorder.end(call, raised=error)
            raise
        recorder.end(call)

    return handler
