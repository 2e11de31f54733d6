"""What the scenarios run with and how they observe: the package under test (`Kit`), step
functions that record what they saw (`Probe`), log and sleep capture, and the registry.

Nothing here imports either package: the runner imports one (`spakky.saga` or `spakky_saga`)
and hands it to the scenarios inside a `Kit`. Everything a scenario returns is plain JSON data
(str, int, float, bool, None, lists, dicts), so the two packages' outputs compare as data.
"""

import asyncio
import dataclasses
import enum
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from types import ModuleType
from typing import Any

type Observation = dict[str, object]
type Scenario = Callable[[Kit], Awaitable[Observation]]

SCENARIOS: dict[str, Scenario] = {}
"""Every scenario, by name, in definition order."""


@dataclass(frozen=True)
class Deliberate:
    """A documented difference: `keys` (dotted paths into the observation) differ on purpose,
    for `reason`; every other key must still match, and each listed key must still differ."""

    reason: str
    keys: tuple[str, ...]
    unordered: tuple[str, ...] = ()
    """Keys (lists) holding the same items in another order, e.g. what parallel members
    logged: compared as multisets."""


DELIBERATE: dict[str, Deliberate] = {}


def scenario(fn: Scenario) -> Scenario:
    """Register a scenario under its function name."""
    if fn.__name__ in SCENARIOS:
        raise ValueError(f"two scenarios are named {fn.__name__}")
    SCENARIOS[fn.__name__] = fn
    return fn


def deliberate(
    reason: str, *, keys: tuple[str, ...] = (), unordered: tuple[str, ...] = ()
) -> Callable[[Scenario], Scenario]:
    """Mark a scenario (registered below this decorator) as a deliberate difference."""

    def mark(fn: Scenario) -> Scenario:
        DELIBERATE[fn.__name__] = Deliberate(reason, keys, unordered)
        return fn

    return mark


_real_sleep = asyncio.sleep  # bound before any scenario patches asyncio.sleep


async def real_sleep(seconds: float) -> None:
    """Really wait: for slow steps, which must not go through the patched `asyncio.sleep`."""
    await _real_sleep(seconds)


class Kit:
    """The package under test and what differs between the two only by where it lives.

    `s` is the package module (`spakky.saga` or `spakky_saga`), `sleep_sites` the (module,
    attribute) pairs the engine takes its sleep from, patched by a recording fake while a
    scenario runs. `Data` is the saga data class every scenario uses (fields `n`, `m`, `trail`).
    """

    def __init__(
        self,
        name: str,
        s: ModuleType,
        immutable: Callable[[type[Any]], type[Any]],
        sleep_sites: tuple[tuple[object, str], ...],
    ) -> None:
        self.name = name
        self.s = s
        self.immutable = immutable
        self.sleep_sites = sleep_sites

        class Data(s.AbstractSagaData):  # type: ignore[misc,name-defined] # the base is the package under test, loaded at run time
            n: int = 0
            m: int = 0
            trail: tuple[str, ...] = ()

        self.Data: type[Any] = immutable(Data)

    def data(self, **values: object) -> Any:
        return self.Data(**values)


def fields_of(data: object) -> Observation:
    """The data's fields, except the per-run identity ones, as JSON data."""
    if not dataclasses.is_dataclass(data) or isinstance(data, type):
        return {"not saga data": describe_value(data)}
    return {
        f.name: jsonable(getattr(data, f.name))
        for f in dataclasses.fields(data)
        if f.name not in ("saga_id", "auth_context_snapshot")
    }


def jsonable(value: object) -> object:
    """Tuples as lists, enums by name, anything else not JSON by a description."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, tuple | list):
        return [jsonable(item) for item in value]
    if isinstance(value, enum.Enum):
        return value.name
    return describe_value(value)


def describe_value(value: object) -> str:
    """A type-level description: reprs carry addresses and ids that differ between runs."""
    if isinstance(value, timedelta):
        return f"timedelta({value.total_seconds()!r}s)"
    return f"<{type(value).__name__}>"


def describe_error(error: BaseException) -> Observation:
    """An exception as its type name and its class's `message` attribute (upstream's errors
    carry no text of their own; ours carry details, which are not compared)."""
    return {"type": type(error).__name__, "message": getattr(type(error), "message", None)}


def describe_result(result: Any) -> Observation:
    return {
        "type": type(result).__name__,
        "status": result.status.name,
        "status_value": result.status.value,
        "failed_step": result.failed_step,
        "error": None if result.error is None else type(result.error).__name__,
        "history": [
            [record.name, record.status.name, type(record.elapsed).__name__]
            for record in result.history
        ],
        "elapsed_type": type(result.elapsed).__name__,
        "data": fields_of(result.data),
    }


_ELAPSED = re.compile(r"elapsed=\d+ms")
_PREFIXES = ("spakky.saga", "spakky_saga")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[list[str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        name = record.name
        for prefix in _PREFIXES:
            if name == prefix or name.startswith(prefix + "."):
                name = "<package>" + name[len(prefix) :]
        message = _ELAPSED.sub("elapsed=<n>ms", record.getMessage())
        self.lines.append([record.levelname, name, message])


@contextmanager
def capture_logs() -> Iterator[list[list[str]]]:
    """Every record on the packages' loggers, as [level, logger (prefix normalised), text]."""
    capture = _Capture()
    loggers = [logging.getLogger(prefix) for prefix in _PREFIXES]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.addHandler(capture)
    try:
        yield capture.lines
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(capture)
            logger.setLevel(level)


@contextmanager
def fake_sleep(kit: Kit) -> Iterator[list[float]]:
    """Replace the engine's sleep by one that records the delay and only yields."""
    delays: list[float] = []

    async def sleep(delay: float, result: object = None) -> object:
        delays.append(delay)
        await _real_sleep(0)
        return result

    saved = [(site, attribute, getattr(site, attribute)) for site, attribute in kit.sleep_sites]
    for site, attribute, _ in saved:
        setattr(site, attribute, sleep)
    try:
        yield delays
    finally:
        for site, attribute, original in saved:
            setattr(site, attribute, original)


def named[F: Callable[..., object]](name: str, fn: F) -> F:
    """Name a step function: both packages name steps after the function."""
    fn.__name__ = name
    fn.__qualname__ = name
    return fn


class Probe:
    """Builds step, compensation and handler functions that record, in `events`, what ran
    and the data it was given, in the order it happened."""

    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        self.events: list[object] = []

    def inc(self, name: str, by: int = 1) -> Callable[[Any], Awaitable[Any]]:
        """Adds `by` to `n` and appends its name to `trail`."""

        async def action(data: Any) -> Any:
            self.events.append(["do", name, fields_of(data)])
            return dataclasses.replace(data, n=data.n + by, trail=(*data.trail, name))

        return named(name, action)

    def set_m(self, name: str, value: int) -> Callable[[Any], Awaitable[Any]]:
        async def action(data: Any) -> Any:
            self.events.append(["do", name, fields_of(data)])
            return dataclasses.replace(data, m=value)

        return named(name, action)

    def keep(self, name: str) -> Callable[[Any], Awaitable[None]]:
        """Returns None: the data stays as it was."""

        async def action(data: Any) -> None:
            self.events.append(["do", name, fields_of(data)])

        return named(name, action)

    def returns(self, name: str, value: object) -> Callable[[Any], Awaitable[object]]:
        async def action(data: Any) -> object:
            self.events.append(["do", name, fields_of(data)])
            return value

        return named(name, action)

    def fail(
        self, name: str, error: Callable[[], BaseException] = lambda: ValueError("boom")
    ) -> Callable[[Any], Awaitable[Any]]:
        async def action(data: Any) -> Any:
            self.events.append(["do", name, fields_of(data)])
            raise error()

        return named(name, action)

    def flaky(self, name: str, failures: int) -> Callable[[Any], Awaitable[Any]]:
        """Fails (ValueError) its first `failures` calls, then adds 1 to `n`."""
        calls = 0

        async def action(data: Any) -> Any:
            nonlocal calls
            calls += 1
            self.events.append(["do", name, calls])
            if calls <= failures:
                raise ValueError(f"failure {calls}")
            return dataclasses.replace(data, n=data.n + 1, trail=(*data.trail, name))

        return named(name, action)

    def slow(self, name: str, seconds: float) -> Callable[[Any], Awaitable[Any]]:
        """Really waits `seconds`, then adds 1 to `n`."""

        async def action(data: Any) -> Any:
            self.events.append(["do", name, fields_of(data)])
            await real_sleep(seconds)
            self.events.append(["done", name])
            return dataclasses.replace(data, n=data.n + 1, trail=(*data.trail, name))

        return named(name, action)

    def undo(self, name: str) -> Callable[[Any], Awaitable[None]]:
        async def compensate(data: Any) -> None:
            self.events.append(["undo", name, fields_of(data)])

        return named(name, compensate)

    def undo_fail(self, name: str) -> Callable[[Any], Awaitable[None]]:
        async def compensate(data: Any) -> None:
            self.events.append(["undo", name, fields_of(data)])
            raise RuntimeError("undo failed")

        return named(name, compensate)

    def handler(self) -> Callable[[Any], Awaitable[None]]:
        """A compensation-failure handler recording the type of what it receives."""

        async def on_failure(received: Any) -> None:
            self.events.append(["handler", type(received).__name__])

        return named("on_failure", on_failure)


async def observe_run(
    kit: Kit, probe: Probe, flow: object, data: object, **options: object
) -> Observation:
    """Run `flow` on `data` with `run_saga_flow`, observing everything."""
    with capture_logs() as logs, fake_sleep(kit) as sleeps:
        return await _observe(kit.s.run_saga_flow(flow, data, **options), probe, logs, sleeps)


async def observe_call(probe: Probe, kit: Kit, run: Awaitable[object]) -> Observation:
    """Observe an arbitrary run (`saga.execute(...)`): its result or exception, logs, sleeps."""
    with capture_logs() as logs, fake_sleep(kit) as sleeps:
        return await _observe(run, probe, logs, sleeps)


async def _observe(
    run: Awaitable[object], probe: Probe, logs: list[list[str]], sleeps: list[float]
) -> Observation:
    result: Observation | None = None
    raised: Observation | None = None
    first_event = len(probe.events)  # a probe may serve several runs
    try:
        result = describe_result(await run)
    except (Exception, asyncio.CancelledError) as error:
        raised = describe_error(error)
    return {
        "result": result,
        "raised": raised,
        "events": probe.events[first_event:],
        "logs": logs,
        "sleeps": sleeps,
    }


def attempt(build: Callable[[], object]) -> Observation:
    """Build something: what it made (type name), or the exception it raised."""
    try:
        made = build()
    except Exception as error:
        return {"raised": describe_error(error)}
    return {"made": type(made).__name__}


def ms(value: float) -> timedelta:
    return timedelta(milliseconds=value)
