"""The flows the crash tests run, shared by the child process (which dies) and the parent
(which recovers): same module, same step names, so the same fingerprint.

Every step is a `Participant` action: it appends one line to an effects file (O_APPEND, one
write, fsync: the line survives a SIGKILL right after it) with its idempotency key, exactly
what a participant that deduplicates would see. A `KillPlan` says where the child dies: inside an
action or compensation (before or after its effect is recorded), after the run returned, or
while the engine sleeps in a retry backoff (the child says so on stdout; the parent kills it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from spakky_saga import (
    AbstractSagaData,
    ExponentialBackoff,
    RecoveryPolicy,
    Retry,
    SagaEngine,
    SagaFlow,
    SagaResult,
    Transaction,
    current_step,
    parallel,
    pivot,
    saga_flow,
    step,
)

KILL_ME: Final = "KILL-ME"
"""What a child prints on stdout when it wants the parent to SIGKILL it (it then waits)."""
MIDWAY: Final = "MIDWAY"
"""What the fleet child prints once every saga has begun and many steps are done."""

type Verb = Literal["do", "undo", "fail"]
type When = Literal["before", "after"]
WHENS: Final[tuple[When, ...]] = ("before", "after")


class Order(AbstractSagaData):
    order_id: int
    stock: int = 0
    charged: int = 0
    shipped: bool = False
    notified: bool = False
    emailed: bool = False
    invoiced: bool = False
    audited: bool = False


@dataclass(frozen=True, slots=True)
class KillPlan:
    """Where the child dies.

    `at`: "do" / "undo" (inside that action or compensation of `step`, attempt `attempt`,
    `when` its effect is recorded: "before" or "after"), "end" (right after `run()` returned),
    "sleep" (the parent kills it during the retry backoff), or "none".
    """

    at: Literal["do", "undo", "end", "sleep", "none"]
    step: str = ""
    when: When = "before"
    attempt: int = 1

    def __str__(self) -> str:
        return f"{self.at}:{self.step}:{self.when}:{self.attempt}"

    @classmethod
    def parse(cls, text: str) -> KillPlan:
        at, name, when, attempt = text.split(":")
        assert at in ("do", "undo", "end", "sleep", "none"), text
        assert when in ("before", "after"), text
        return cls(at, name, when, int(attempt))  # type: ignore[arg-type] # checked above


NO_KILL: Final = KillPlan("none")


@dataclass(frozen=True, slots=True)
class Effect:
    """One line of an effects file: what a participant did, with the key it was given."""

    verb: str
    step: str
    key: str

    @property
    def attempt(self) -> str:
        """The key's last part: the attempt number, or "undo"."""
        return self.key.rsplit("/", 1)[1]


def read_effects(path: Path) -> list[Effect]:
    if not path.exists():
        return []
    return [Effect(*line.split("\t")) for line in path.read_text().splitlines() if line]


class Participant:
    """The outside world of a saga: records what it is asked to do; kills the process where
    its `KillPlan` says."""

    def __init__(
        self,
        effects: Path,
        kill: KillPlan = NO_KILL,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.effects = effects
        self.kill = kill
        self.announce = announce or _say
        self.refund_broken = False
        """The `refund` flow's refund fails while this is set (the payment API is down)."""
        self.slow = False
        """The fleet's steps wait 30 ms each (in the process that is killed)."""
        self.crashing = kill.at != "none"
        """In the child: members that should stay in doubt block instead of finishing."""
        self.done: dict[str, asyncio.Event] = {}
        self.actions_done = 0
        self.sagas_started: set[str] = set()
        self.progress = asyncio.Event()
        """Set after every action (the fleet child waits on it)."""
        self.fsync = True
        """Sync each effect to disk. A SIGKILL keeps what was written anyway (the kernel has
        it); without the fsync, which holds the event loop, many sagas' writes queue up
        together, as in a service (the shared-batch test needs that)."""

    def record(self, verb: Verb, name: str, key: str) -> None:
        fd = os.open(self.effects, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{verb}\t{name}\t{key}\n".encode())
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def act(self, verb: Literal["do", "undo"], name: str) -> None:
        """Record `verb name` with the running step's key, dying before or after if planned."""
        context = current_step()
        plan = self.kill
        hit = plan.at == verb and plan.step == name and plan.attempt == context.attempt
        if hit and plan.when == "before":
            die()
        self.record(verb, name, context.idempotency_key)
        if verb == "do":
            self.actions_done += 1
            self.sagas_started.add(str(context.saga_id))
            self.progress.set()
        if hit and plan.when == "after":
            die()

    def event(self, name: str) -> asyncio.Event:
        return self.done.setdefault(name, asyncio.Event())

    def action(
        self, name: str, change: Callable[[Order], Order] | None = None
    ) -> Callable[[Order], Awaitable[Order | None]]:
        async def act(data: Order) -> Order | None:
            self.act("do", name)
            self.event(name).set()
            return change(data) if change is not None else None

        return _named(act, name)

    def undo(self, name: str) -> Callable[[Order], Awaitable[None]]:
        async def compensate(data: Order) -> None:
            self.act("undo", name)

        return _named(compensate, f"undo_{name}")

    def transaction(
        self, name: str, change: Callable[[Order], Order] | None = None
    ) -> Transaction[Order]:
        return step(self.action(name, change), compensate=self.undo(name))

    async def sleep(self, delay: float) -> None:
        """The engine's backoff sleep: really waits; asks the parent to kill it if planned."""
        if self.kill.at == "sleep":
            self.announce(KILL_ME)
        await asyncio.sleep(delay)


def die() -> None:
    """SIGKILL this process: no finally blocks, no flushes, no atexit."""
    os.kill(os.getpid(), signal.SIGKILL)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _named[F: Callable[..., object]](function: F, name: str) -> F:
    function.__name__ = function.__qualname__ = name
    return function


def _set(field: str, value: Any) -> Callable[[Order], Order]:
    return lambda data: dataclasses.replace(data, **{field: value})


def _add(field: str, by: int) -> Callable[[Order], Order]:
    return lambda data: dataclasses.replace(data, **{field: getattr(data, field) + by})


# --- the flows ---------------------------------------------------------------------------------

LINE_STEPS: Final = ("reserve", "charge", "ship", "notify")
"""Three compensable steps, then one without a compensation."""


def line_flow(p: Participant) -> SagaFlow[Order]:
    return saga_flow(
        p.transaction("reserve", _add("stock", 1)),
        p.transaction("charge", _add("charged", 10)),
        p.transaction("ship", _set("shipped", True)),
        step(p.action("notify", _set("notified", True)), name="notify"),
    )


def backoff_flow(p: Participant) -> SagaFlow[Order]:
    """`charge` fails its first attempt; the retry waits 30 s (the child dies in the wait)."""

    async def charge(data: Order) -> Order:
        context = current_step()
        if context.attempt == 1:
            p.record("fail", "charge", context.idempotency_key)
            raise ConnectionError("payment API timed out")
        p.act("do", "charge")
        return dataclasses.replace(data, charged=data.charged + 10)

    return saga_flow(
        p.transaction("reserve", _add("stock", 1)),
        step(
            charge,
            compensate=p.undo("charge"),
            on_error=Retry(3, ExponentialBackoff(base=30.0)),
        ),
        p.transaction("ship", _set("shipped", True)),
    )


GROUP_MEMBERS: Final = ("email", "invoice", "charge", "audit")


def group_flow(p: Participant) -> SagaFlow[Order]:
    """A group of four after `reserve`. In the child, `charge` waits for `email` and `invoice`
    to commit and for `audit` to start, fails once (its retry writes the commits to the log),
    then dies in its second attempt, while `audit` is still running (in doubt, its effect not
    done)."""

    async def charge(data: Order) -> Order:
        context = current_step()
        if context.attempt == 1 and p.crashing:
            # Every sibling's attempt is in the log (audit's too: it is running) and email's
            # and invoice's actions are done: their commits go out with this failure.
            for sibling in ("email", "invoice", "audit started"):
                await p.event(sibling).wait()
            p.record("fail", "charge", context.idempotency_key)
            raise ConnectionError("payment API timed out")
        p.act("do", "charge")
        return dataclasses.replace(data, charged=data.charged + 10)

    async def audit(data: Order) -> Order:
        if p.crashing:
            p.event("audit started").set()
            await asyncio.Event().wait()  # still running when the process dies
        p.act("do", "audit")
        return dataclasses.replace(data, audited=True)

    return saga_flow(
        p.transaction("reserve", _add("stock", 1)),
        parallel(
            p.transaction("email", _set("emailed", True)),
            p.transaction("invoice", _set("invoiced", True)),
            step(
                _named(charge, "charge"),
                compensate=p.undo("charge"),
                on_error=Retry(2, ExponentialBackoff(base=0.0)),
            ),
            step(_named(audit, "audit"), compensate=p.undo("audit")),
        ),
        p.transaction("ship", _set("shipped", True)),
    )


ROLLBACK_STEPS: Final = ("a", "b", "c")


def rollback_flow(p: Participant) -> SagaFlow[Order]:
    """Three compensable steps, then `decline` fails: the child dies while compensating."""

    async def decline(data: Order) -> None:
        p.record("fail", "decline", current_step().idempotency_key)
        raise ValueError("card declined")

    return saga_flow(
        p.transaction("a"), p.transaction("b"), p.transaction("c"), _named(decline, "decline")
    )


def refund_flow(p: Participant) -> SagaFlow[Order]:
    """`decline` fails; the refund of `charge` fails too while `p.refund_broken`: the saga
    ends COMPENSATION_FAILED, for `retry_compensation()` (in which the child dies)."""

    async def decline(data: Order) -> None:
        p.record("fail", "decline", current_step().idempotency_key)
        raise ValueError("card declined")

    async def refund(data: Order) -> None:
        if p.refund_broken:
            p.record("fail", "charge", current_step().idempotency_key)
            raise ConnectionError("payment API down")
        p.act("undo", "charge")

    return saga_flow(
        p.transaction("reserve"),
        step(p.action("charge"), compensate=_named(refund, "refund")),
        _named(decline, "decline"),
    )


FLEET_STEPS: Final = ("reserve", "charge", "ship", "notify")


def fleet_flow(p: Participant) -> SagaFlow[Order]:
    """Steps that are slow in the process that dies (three 10 ms waits each), so that it is
    killed with many sagas in flight; quick where they are recovered."""

    def slow(name: str, change: Callable[[Order], Order]) -> Callable[[Order], Awaitable[Order]]:
        async def act(data: Order) -> Order:
            for _ in range(3 if p.slow else 1):
                await asyncio.sleep(0.01 if p.slow else 0)
            p.act("do", name)
            return change(data)

        return _named(act, name)

    return saga_flow(
        step(slow("reserve", _add("stock", 1)), compensate=p.undo("reserve")),
        step(slow("charge", _add("charged", 10)), compensate=p.undo("charge")),
        step(slow("ship", _set("shipped", True)), compensate=p.undo("ship")),
        step(slow("notify", _set("notified", True)), name="notify"),
    )


PIVOT_STEPS: Final = ("reserve", "charge", "ship", "notify")
"""`reserve` compensable, `charge` the pivot, then two retried steps."""


def pivot_flow(p: Participant) -> SagaFlow[Order]:
    """The point of no return: once `charge` committed, nothing is compensated."""
    retry = Retry(3, ExponentialBackoff(base=0.0))
    return saga_flow(
        p.transaction("reserve", _add("stock", 1)),
        pivot(p.transaction("charge", _add("charged", 10))),
        step(p.action("ship", _set("shipped", True)), on_error=retry),
        step(p.action("notify", _set("notified", True)), on_error=retry),
    )


FLOWS: Final[dict[str, Callable[[Participant], SagaFlow[Order]]]] = {
    "line": line_flow,
    "backoff": backoff_flow,
    "group": group_flow,
    "rollback": rollback_flow,
    "refund": refund_flow,
    "fleet_compensate": fleet_flow,
    "fleet_resume": fleet_flow,
    "pivot": pivot_flow,
}
"""Saga name -> its flow; the parent registers the same names to recover."""


def register_fleet(engine: SagaEngine, participant: Participant) -> dict[str, SagaFlow[Order]]:
    """Register the two fleet sagas on `engine` (`fleet_compensate` with the engine's policy,
    `fleet_resume` with RESUME); their flows, by name."""
    flows = {name: FLOWS[name](participant) for name in ("fleet_compensate", "fleet_resume")}
    engine.register("fleet_compensate", flows["fleet_compensate"])
    engine.register("fleet_resume", flows["fleet_resume"], recovery=RecoveryPolicy.RESUME)
    return flows


def fleet_runs(
    engine: SagaEngine, flows: dict[str, SagaFlow[Order]], count: int, seed: str
) -> list[Coroutine[Any, Any, SagaResult[Order]]]:
    """`count` fleet sagas to start at once, alternately compensating and resuming ones, with
    ids from `seed` (see `fleet_ids`)."""
    names = ["fleet_compensate", "fleet_resume"]
    return [
        engine.run(
            flows[names[index % 2]],
            Order(order_id=index, saga_id=uuid.UUID(saga_id)),
            saga_name=names[index % 2],
        )
        for index, saga_id in enumerate(fleet_ids(seed, count))
    ]


def fleet_ids(seed: str, count: int) -> list[str]:
    """The ids of the fleet sagas a child started with `seed`."""
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{seed}/{index}")) for index in range(count)]
