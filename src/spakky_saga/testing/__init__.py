"""Testing sagas: explore every failure point, and run on virtual time.

- `explore_failures(saga, data)` runs a saga once per failure point (each action failing,
  each compensation failing, optionally each step hanging until a timeout and the caller
  cancelling at each await point) and checks the saga's promises after every run; it
  returns an `ExplorationReport` to assert on and print.
- `VirtualClock` is the engine's `clock=` and `sleep=` in one object: retry backoff takes no
  time; with the `looptime` library (the `testing` extra) timeouts take none either.
- The pytest plugin (loaded automatically) provides the fixtures `saga_clock`,
  `saga_engine` and `explore_failures`.

See docs/testing.md.
"""

from spakky_saga.testing._source import SagaSource
from spakky_saga.testing.explore import (
    FailureExplorer,
    InjectedFault,
    SagaRunner,
    explore_failures,
)
from spakky_saga.testing.report import (
    Check,
    ExplorationReport,
    Scenario,
    ScenarioOutcome,
    Violation,
)
from spakky_saga.testing.virtual_time import EngineOptions, VirtualClock

__all__ = [
    "Check",
    "EngineOptions",
    "ExplorationReport",
    "FailureExplorer",
    "InjectedFault",
    "SagaRunner",
    "SagaSource",
    "Scenario",
    "ScenarioOutcome",
    "Violation",
    "VirtualClock",
    "explore_failures",
]
