"""Testing sagas: explore every failure and crash point, and run on virtual time.

- `explore_failures(saga, data)` runs a saga once per failure point (each action failing,
  each compensation failing, optionally each step hanging until a timeout and the caller
  cancelling at each await point) and checks the saga's promises after every run; it
  returns an `ExplorationReport` to assert on and print.
- `explore_crashes(saga, data)` kills a durable engine running the saga at each of its
  writes to the store, recovers the saga with a new engine (COMPENSATE and RESUME), and
  checks the promises of recovery after each; it returns a `CrashReport`.
- `VirtualClock` is the engine's `clock=` and `sleep=` in one object: retry backoff takes no
  time; with the `looptime` library (the `testing` extra) timeouts take none either.
- The pytest plugin (loaded automatically) provides the fixtures `saga_clock`,
  `saga_engine` and `explore_failures`.

See docs/testing.md.
"""

from spakky_saga.testing._source import SagaSource
from spakky_saga.testing.crash import StoreFactory, explore_crashes
from spakky_saga.testing.explore import (
    FailureExplorer,
    InjectedFault,
    SagaRunner,
    explore_failures,
)
from spakky_saga.testing.report import (
    Check,
    CrashOutcome,
    CrashReport,
    CrashScenario,
    ExplorationReport,
    Scenario,
    ScenarioOutcome,
    Violation,
)
from spakky_saga.testing.virtual_time import EngineOptions, VirtualClock

__all__ = [
    "Check",
    "CrashOutcome",
    "CrashReport",
    "CrashScenario",
    "EngineOptions",
    "ExplorationReport",
    "FailureExplorer",
    "InjectedFault",
    "SagaRunner",
    "SagaSource",
    "Scenario",
    "ScenarioOutcome",
    "StoreFactory",
    "Violation",
    "VirtualClock",
    "explore_crashes",
    "explore_failures",
]
