"""`@saga_step`: turns an async method into a step that composes with `>>`, `&` and `|`.

On an instance, the attribute is a `SagaStep` bound to that instance, cached in the
instance's `__dict__` so building `flow()` again costs a dictionary lookup. On the class, it
is the descriptor itself, which keeps the original function for introspection.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, Self, cast, overload

from spakky_saga._text import safe_repr
from spakky_saga.data import AbstractSagaData
from spakky_saga.errors import SagaFlowDefinitionError
from spakky_saga.flow import SagaStep, check_callable


class SagaStepMethod[S, D: AbstractSagaData]:
    """The class-level object `@saga_step` leaves on a saga class."""

    __slots__ = ("__dict__", "function", "read_only")

    def __init__(
        self, function: Callable[[S, D], Awaitable[D | None]], /, *, read_only: bool = False
    ) -> None:
        check_callable(
            function,
            "saga step",
            f'@saga_step "{getattr(function, "__qualname__", function)}"',
            bound_args=2,
        )
        self.function = function
        self.read_only = read_only
        """`@saga_step(read_only=True)`: the step changes nothing (see `step(read_only=)`)."""
        self.__wrapped__ = function
        self.__name__: str = function.__name__
        self.__qualname__: str = function.__qualname__
        self.__doc__ = function.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.__name__ = name

    @overload
    def __get__(self, instance: None, owner: type | None = None, /) -> Self: ...
    @overload
    def __get__(self, instance: S, owner: type | None = None, /) -> SagaStep[D]: ...
    def __get__(self, instance: S | None, owner: type | None = None, /) -> Self | SagaStep[D]:
        if instance is None:
            return self
        bound = SagaStep(
            action=cast(Any, functools.partial(self.function, instance)),
            name=self.__name__,
            read_only=self.read_only,
        )
        # Cache on the instance (a non-data descriptor is bypassed next time); instances
        # with __slots__ and no __dict__ simply rebuild the step on each access.
        with contextlib.suppress(AttributeError):
            instance.__dict__[self.__name__] = bound
        return bound

    def __repr__(self) -> str:
        return f"<saga step {self.__qualname__}>"


class _SagaStepDecorator(Protocol):
    """What `saga_step(read_only=True)` returns: the decorator itself, with its option."""

    def __call__[S, D: AbstractSagaData](
        self, function: Callable[[S, D], Awaitable[D | None]], /
    ) -> SagaStepMethod[S, D]: ...


@overload
def saga_step[S, D: AbstractSagaData](
    function: Callable[[S, D], Awaitable[D | None]], /
) -> SagaStepMethod[S, D]: ...
@overload
def saga_step(*, read_only: bool = ...) -> _SagaStepDecorator: ...
def saga_step[S, D: AbstractSagaData](
    function: Callable[[S, D], Awaitable[D | None]] | None = None, /, *, read_only: bool = False
) -> SagaStepMethod[S, D] | _SagaStepDecorator:
    """Mark an `async def step(self, data) -> data | None` method as a composable saga step.

    `@saga_step(read_only=True)` declares that the step changes nothing (a query, a
    validation): it needs no compensation before the flow's pivot (see `pivot`)."""
    if function is None:
        if not isinstance(read_only, bool):
            raise SagaFlowDefinitionError(
                f"@saga_step(read_only={safe_repr(read_only)}): read_only must be True or False"
            )
        return functools.partial(_decorate, read_only=read_only)
    return _decorate(function, read_only=read_only)


def _decorate[S, D: AbstractSagaData](
    function: Callable[[S, D], Awaitable[D | None]], /, *, read_only: bool
) -> SagaStepMethod[S, D]:
    if isinstance(function, SagaStepMethod | staticmethod | classmethod):
        raise SagaFlowDefinitionError(
            f"@saga_step applied to {safe_repr(function)}: it decorates a plain async instance "
            "method (def step(self, data)); apply it once, directly above the `async def`"
        )
    return SagaStepMethod(function, read_only=read_only)
