"""An asyncio event loop on virtual time: timers fire in order, instantly, when all is idle.

Time moves only when no task is ready to run: the loop then jumps straight to the next timer
(a `sleep`, an `asyncio.timeout`, a step or saga timeout). Work that never waits on a timer
(steps yielding with `asyncio.sleep(0)`) takes no time at all, so which timeout fires, and
where every task stands when it fires, is the same on every run and on every machine. A run
in which every task waits for something that will never happen (no timer left) is a
deadlock, reported as `Deadlock` instead of hanging the test.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine, Mapping
from typing import Any


class Deadlock(RuntimeError):
    """Every task waits and no timer is left: the run can never finish."""


class _VirtualSelector(selectors.BaseSelector):
    """The loop's selector: real for the loop's own self-pipe, virtual for waiting."""

    def __init__(self) -> None:
        self._real = selectors.DefaultSelector()
        self.now = 0.0

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise Deadlock("every task is waiting and no timer is left: the run would hang")
        self.now += timeout  # the loop asked to wait until its next timer: jump there
        return self._real.select(0)

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose `time()` is virtual (see the module docstring)."""

    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


def run_virtual[T](main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to the end on a fresh virtual-time loop, then close the loop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
