"""Sagas as classes: the `@Saga()` stereotype and the `AbstractSaga[D]` base.

A saga class declares its steps with `@saga_step` and composes them in `flow()`;
`execute(data)` runs that flow on the saga's engine: the container's `SagaEngine` when a spakky
container created the saga and has one, the default engine otherwise.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from spakky.core.pod.annotations.pod import DependencyInfo, Pod

from spakky_saga.data import AbstractSagaData
from spakky_saga.engine import DEFAULT_ENGINE, SagaEngine
from spakky_saga.errors import SagaEngineNotConnectedError, SagaFlowDefinitionError
from spakky_saga.flow import SagaFlow
from spakky_saga.recovery import RecoveryPolicy
from spakky_saga.result import SagaResult

_ENGINE_DEPENDENCY = "@Saga() engine"
"""The dependency `@Saga()` adds to saga pods: the container's SagaEngine, or None. Not an
identifier, so it can never clash with a constructor parameter."""


@dataclass(eq=False)
class Saga(Pod):
    """Stereotype for saga orchestrator classes: a spakky `Pod`, created by the container
    with its constructor dependencies injected.

    It marks any class (or, like `@Pod()`, a factory function). A saga the container creates
    from an `AbstractSaga` subclass is connected to the container's `SagaEngine` pod, when there
    is one: the stereotype asks the container for it like any other dependency, so this works
    whether or not the `spakky-saga` plugin is loaded. A class that does not derive from
    `AbstractSaga` drives its flows itself (`run_saga_flow`, or an engine it takes in its
    constructor).
    """

    def __new__(cls, *args: object, **kwargs: object) -> Self:
        # Without the parentheses, Python calls Saga(TheClass): the dataclass constructor's own
        # "takes 1 positional argument but 2 were given" would not say what to write instead.
        if args:
            target = args[0]
            raise TypeError(
                f"@{cls.__name__} applied without parentheses to "
                f"{getattr(target, '__qualname__', repr(target))}: write @{cls.__name__}() (a "
                f"stereotype is an instance, like @Pod()), or @{cls.__name__}(name=..., scope=...)"
            )
        return super().__new__(cls)

    def __call__[T](self, obj: T) -> T:
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            raise TypeError(
                f"@{type(self).__name__}() applied to {obj!r} ({type(obj).__name__}): it marks "
                "a saga orchestrator class (or a factory function returning one)"
            )
        marked = super().__call__(obj)
        if inspect.isclass(self.type_) and issubclass(self.type_, AbstractSaga):
            self.dependencies[_ENGINE_DEPENDENCY] = DependencyInfo(
                name=_ENGINE_DEPENDENCY, type_=SagaEngine, is_optional=True
            )
        return marked

    def instantiate(self, dependencies: dict[str, object | None]) -> object:
        """Create the saga with its own dependencies and connect it to the container's engine."""
        own = dict(dependencies)
        engine = own.pop(_ENGINE_DEPENDENCY, None)
        saga = super().instantiate(own)
        if isinstance(engine, SagaEngine) and isinstance(saga, AbstractSaga):
            saga.connect_engine(engine)
        return saga


class AbstractSaga[D: AbstractSagaData](ABC):
    """Base of saga classes: implement `flow()`, call `execute(data)`.

    Set `durable = True` on a saga that must survive a crash: it then refuses to run on an
    engine without a store (`SagaEngineNotConnectedError`) instead of silently running in
    memory. `recovery` chooses how `SagaEngine.recover()` finishes it (default: the engine's).
    Connected to a durable engine, a saga registers itself for recovery under its class name.
    """

    durable: ClassVar[bool] = False
    recovery: ClassVar[RecoveryPolicy | None] = None

    __saga_engine: SagaEngine | None = None
    __saga_flow: SagaFlow[D] | None = None

    @abstractmethod
    def flow(self) -> SagaFlow[D]:
        """The saga's steps, in order.

        Called once, on the first `execute()`; the flow (immutable, and compiled into an
        execution plan) is reused by every later run of this saga instance.
        """

    async def execute(self, data: D) -> SagaResult[D]:
        """Run `flow()` on `data`; the saga name in results and logs is the class name."""
        engine = self.__saga_engine or DEFAULT_ENGINE
        if type(self).durable and engine.store is None:
            raise SagaEngineNotConnectedError(
                type(self).__name__,
                "it is durable (durable = True) but no engine with a store is connected: "
                "register a SagaEngine(store=...) pod in the container (docs/spakky.md), or call "
                "saga.connect_engine(SagaEngine(store=SqliteSagaStore('sagas.db')))",
            )
        return await engine.run(self.cached_flow(), data, saga_name=type(self).__name__)

    def cached_flow(self) -> SagaFlow[D]:
        """`flow()`, built and checked on first use, then reused (what `execute` runs and what
        recovery finds under the class name)."""
        flow = self.__saga_flow
        if flow is None:
            flow = self.__saga_flow = self._checked_flow()
        return flow

    def _checked_flow(self) -> SagaFlow[D]:
        flow: Any = self.flow()
        if not isinstance(flow, SagaFlow):
            raise SagaFlowDefinitionError(
                f"{type(self).__name__}.flow() returned {flow!r}; it must return a SagaFlow, "
                "e.g. saga_flow(...) or SagaFlow(items=(...))"
            )
        return flow

    def connect_engine(self, engine: SagaEngine) -> None:
        """Run this saga on `engine` (a configured or test engine) instead of the default; a
        durable engine also learns this saga's flow, to recover it after a crash."""
        self.__saga_engine = engine
        if engine.store is not None:
            engine.register(type(self).__name__, self.cached_flow, recovery=type(self).recovery)
