"""Virtual time for saga tests: backoff, step timeouts and saga timeouts without waiting.

`VirtualClock` is the engine's `clock=` and `sleep=` in one object. On its own it is a manual
clock: `await clock.sleep(10)` moves it ten seconds at once, so a test of `Retry` backoff runs
instantly and `clock.sleeps` tells which delays the engine waited.

Timeouts (`step(..., timeout=)`, `flow.timeout(...)`) are `asyncio.timeout`s: they run on the
event loop's own time, which no engine option reaches. For them the loop's time must be
virtual too. That is what the `looptime` library does (install `spakky-saga-typed[testing]`):
while a loop's time is virtual, it jumps straight to the next timer whenever every task is
waiting, so a 30-second timeout fires at once, in the right order relative to every other
timer. A `VirtualClock` follows a virtual loop's time whenever the running loop has one (and
its `sleep` then is the loop's own `asyncio.sleep`), so the engine's elapsed times, its backoff
and the loop's timeouts all read one clock. Make a loop's time virtual with the pytest fixture
`saga_clock` (it marks its tests for looptime), `with clock.virtual_loop():` inside a running
loop, or `clock.run(main())` from synchronous code.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable, Coroutine, Iterable, Iterator
from datetime import timedelta
from types import ModuleType
from typing import Any, Final, TypedDict, Unpack

from spakky_saga.engine import SagaEngine
from spakky_saga.recovery import RecoveryPolicy
from spakky_saga.store import SagaStore

_INSTALL_HINT = (
    "virtual event-loop time needs the looptime library: "
    "pip install 'spakky-saga-typed[testing]' (or pip install looptime)"
)


class EngineOptions(TypedDict, total=False):
    """`SagaEngine`'s options other than `clock` and `sleep` (which a `VirtualClock` gives)."""

    compensation_timeout: timedelta | None
    listeners: Iterable[object]
    log: bool
    store: SagaStore | None
    lease: timedelta
    recovery: RecoveryPolicy
    recover_on_start: bool
    wall_clock: Callable[[], float]


class VirtualClock:
    """A clock that only moves when something sleeps; the engine's `clock=` and `sleep=`.

    `now` (also `clock()`) starts at `start`. `await clock.sleep(seconds)` records the delay in
    `sleeps` and moves the clock at once. While the running event loop's time is virtual (see
    the module docstring), the clock follows the loop instead: `now` counts the loop's seconds
    since the clock first saw it, and `sleep` is `asyncio.sleep`, so timers and timeouts
    firing during it do so in order. The clock never goes backwards.
    """

    __slots__ = ("_anchor", "_now", "_sleeps")

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._sleeps: list[float] = []
        self._anchor: tuple[weakref.ref[asyncio.AbstractEventLoop], float] | None = None
        """The virtual loop the clock follows, and `loop.time() - now` when it started to."""

    def __repr__(self) -> str:
        return f"VirtualClock(now={self.now!r})"

    @property
    def now(self) -> float:
        """The current virtual time, in seconds."""
        loop = _virtual_running_loop()
        if loop is not None:
            loop_now = loop.time()
            anchor = self._anchor
            if anchor is None or anchor[0]() is not loop:
                anchor = self._anchor = (weakref.ref(loop), loop_now - self._now)
            following = loop_now - anchor[1]
            if following < self._now:  # moved on its own meanwhile: follow from here
                self._anchor = (anchor[0], loop_now - self._now)
            else:
                self._now = following
        return self._now

    def __call__(self) -> float:
        """`now`: what the engine's `clock=` calls."""
        return self.now

    @property
    def sleeps(self) -> tuple[float, ...]:
        """Every delay `sleep` was called with, in order (the engine's retry backoff)."""
        return tuple(self._sleeps)

    @property
    def loop_is_virtual(self) -> bool:
        """Whether the running event loop's time is virtual right now (timeouts are instant)."""
        return _virtual_running_loop() is not None

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of virtual time: at once, but letting other tasks run first."""
        self._sleeps.append(seconds)
        if _virtual_running_loop() is not None:
            await asyncio.sleep(seconds)
            return
        self._now += max(0.0, seconds)
        await asyncio.sleep(0)

    def engine(self, **options: Unpack[EngineOptions]) -> SagaEngine:
        """A `SagaEngine(clock=self, sleep=self.sleep, **options)`."""
        return SagaEngine(clock=self, sleep=self.sleep, **options)

    @contextlib.contextmanager
    def virtual_loop(self) -> Iterator[None]:
        """Make the running event loop's time virtual inside the block (with looptime).

        Use it inside a coroutine: `with clock.virtual_loop(): await engine.run(...)`. A loop
        that is virtual already stays as it is. Timers still pending when the block ends fire
        by the loop's real time again.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "VirtualClock.virtual_loop() is used inside a running event loop (in a "
                "coroutine); from synchronous code, run the coroutine with clock.run(main())"
            ) from None
        if _virtual_running_loop() is not None:
            _ = self.now  # follow the loop from here on
            yield
            return
        looptime = _looptime()
        if not isinstance(loop, asyncio.BaseEventLoop):
            raise RuntimeError(
                f"VirtualClock.virtual_loop(): the running loop {loop!r} is not an asyncio "
                "BaseEventLoop (uvloop?); looptime can only make asyncio's own loops virtual"
            )
        # Patched in place (idempotent), starting from its current time so that timers
        # scheduled before keep their place, and switched on only inside the block; `_enabled`
        # is how looptime's own pytest plugin patches a loop without switching it on.
        patched = looptime.patch_event_loop(loop, start=loop.time(), _enabled=False)
        resolution = _coarse_timers(loop)
        try:
            with patched.looptime_enabled():
                _ = self.now  # follow the loop from here on
                yield
        finally:
            loop._clock_resolution = resolution  # type: ignore[attr-defined] # see _coarse_timers

    def run[T](self, main: Coroutine[Any, Any, T]) -> T:
        """Run `main` to its end on a new event loop whose time is virtual (with looptime).

        The loop's time starts at this clock's `now`. For synchronous callers: scripts,
        Hypothesis tests, or tests without pytest-asyncio.
        """
        looptime = _looptime()

        def virtual_loop() -> asyncio.AbstractEventLoop:
            loop: asyncio.AbstractEventLoop = looptime.new_event_loop(start=self._now)
            _coarse_timers(loop)
            self._anchor = (weakref.ref(loop), loop.time() - self._now)  # follow it from now
            return loop

        with asyncio.Runner(loop_factory=virtual_loop) as runner:
            return runner.run(main)


_LOOPTIME_RESOLUTION: Final = 1e-6
"""looptime's time step (its default `resolution`): virtual time moves in whole microseconds."""


def _coarse_timers(loop: asyncio.AbstractEventLoop) -> float:
    """Let the loop run a timer due within looptime's resolution; return the loop's own
    clock resolution, to put back.

    asyncio runs the timers due before `loop.time() + loop._clock_resolution` (1 ns). Once
    virtual time passes about 97 days (2**23 s) a float cannot hold that nanosecond any more:
    a timer due exactly now is never run, and the loop spins (found by explore_crashes on a
    flow whose waits moved time on by days, run after a few others on the same loop)."""
    resolution: float = getattr(loop, "_clock_resolution", 0.0)
    loop._clock_resolution = max(resolution, _LOOPTIME_RESOLUTION)  # type: ignore[attr-defined] # asyncio's own knob for timer granularity
    return resolution


def _virtual_running_loop() -> asyncio.AbstractEventLoop | None:
    """The running loop if its time is virtual now (a looptime loop switched on), else None."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop if getattr(loop, "looptime_on", False) is True else None


def _looptime() -> ModuleType:
    """The looptime module, imported when virtual loop time is first asked for."""
    try:
        import looptime  # noqa: PLC0415 - an optional dependency, needed only here
    except ImportError as missing:
        raise RuntimeError(_INSTALL_HINT) from missing
    return looptime
