"""Property-style fault injection: random flows and faults, invariants checked after each run.

- scenario.py: what a scenario is (flow shape, strategies, timeouts, faults, caller cancels,
  observers) and how one is drawn, by hypothesis or a seeded `random.Random`;
- virtual_loop.py: the event loop on virtual time that makes every run deterministic;
- harness.py: builds a scenario's flow from steps that journal what they do, and plays the
  saga's caller;
- invariants.py: the compensation promise, checked against the journal;
- test_random_faults.py: the hypothesis tests (`SPAKKY_SAGA_FAULT_EXAMPLES=5000` for a long
  run; the default is derandomized and takes seconds);
- mass.py, test_mass_faults.py: 20,000 concurrent sagas, twice, with a memory check;
- test_found_bugs.py: what the suite found, as strict xfails until fixed.
"""
