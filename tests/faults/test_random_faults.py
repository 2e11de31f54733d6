"""Random flows under random faults keep the compensation promise (issue 8).

Each example is a random flow (sequential steps and parallel groups, transactions and plain
steps, Compensate / Skip / Retry with backoff, retry_on filters and broken strategy code,
step, saga and compensation timeouts) with random faults (which attempt raises, hangs,
cancels itself, turns its cancellation into an error or returns a wrong type; which group
members conflict; which compensation fails or hangs;
when the caller cancels, once or twice, including during backoff sleeps, compensations and the
failure handler), run on a virtual-time event loop so every run is deterministic and takes
no real time, on an in-memory engine and on a durable one (an in-memory store). The
invariants are in invariants.py.

The default run is derandomized (the same examples on every machine, under 30 s);
`SPAKKY_SAGA_FAULT_EXAMPLES=5000` runs that many examples per test.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings

from tests.faults.harness import new_data, run_scenario
from tests.faults.invariants import check, normalized
from tests.faults.scenario import Scenario, scenarios

EXAMPLES = int(os.environ.get("SPAKKY_SAGA_FAULT_EXAMPLES", "600"))

FAULTS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FAULTS
@given(scenarios())
def test_random_faults_never_break_the_compensation_promise(scenario: Scenario) -> None:
    trace = run_scenario(scenario, new_data(), observers=False)

    check(scenario, trace)


@FAULTS
@given(scenarios())
def test_durable_runs_keep_the_promise_and_leave_the_outcome_in_their_store(
    scenario: Scenario,
) -> None:
    trace = run_scenario(scenario, new_data(), observers=False, durable=True)

    check(scenario, trace)  # with a durable trace, also: stored status, data, lease released


@FAULTS
@given(scenarios())
def test_raising_listeners_log_handlers_and_filters_change_nothing(scenario: Scenario) -> None:
    data = new_data()
    quiet = run_scenario(scenario, data, observers=False)

    loud = run_scenario(scenario, data, observers=True)

    check(scenario, loud)
    assert normalized(loud) == normalized(quiet)
    # Each raising observer is reported once: the engine's log listener (its handler and
    # filter raise) and the run's own listener; both, as soon as the run started a step.
    started = any(entry.kind == "start" for entry in loud.journal)
    assert len(loud.listener_warnings) == 2 if started else len(loud.listener_warnings) <= 2
